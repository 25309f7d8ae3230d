// Package loopback makes the connected loopback TCP socket pairs Spry puts
// into its sockmap: one end is an endpoint, registered by its local port,
// the other keeps the connection open. It depends on nothing but the
// system call package, so function instances can link what uses it
// without linking the eBPF loader.
package loopback

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Pair returns a connected pair of IPv4 TCP sockets on 127.0.0.1:
// a, bound to a port of its own (the kernel picks it, exclusively), and
// its peer b. Both are blocking and close-on-exec. a is the one to
// register; b must stay open as long as a is used, or a reads EOF.
func Pair() (a, b int, err error) {
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, -1, err
	}
	defer unix.Close(l)
	if err := unix.Bind(l, lo); err != nil {
		return -1, -1, err
	}
	if err := unix.Listen(l, 1); err != nil {
		return -1, -1, err
	}
	la, err := unix.Getsockname(l)
	if err != nil {
		return -1, -1, err
	}
	a, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	// An explicit bind makes a's port exclusive (connect alone may share
	// an ephemeral port between connections to different peers), so the
	// port identifies a among registered sockets.
	if err := unix.Bind(a, lo); err != nil {
		unix.Close(a)
		return -1, -1, err
	}
	if err := unix.Connect(a, la); err != nil {
		unix.Close(a)
		return -1, -1, err
	}
	aa, err := unix.Getsockname(a)
	if err != nil {
		unix.Close(a)
		return -1, -1, err
	}
	want := aa.(*unix.SockaddrInet4).Port
	// Loopback connect completes the handshake before returning, so our
	// connection waits in the accept queue. Anyone on the host may
	// connect to the listener meanwhile: take ours, close theirs.
	for range 64 {
		c, ra, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(a)
			return -1, -1, fmt.Errorf("accept own connection: %w", err)
		}
		if r, ok := ra.(*unix.SockaddrInet4); ok && r.Port == want {
			return a, c, nil
		}
		unix.Close(c)
	}
	unix.Close(a)
	return -1, -1, errors.New("accept own connection: too many strangers")
}
