package load

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// rawConn is a blocking TCP socket used with plain read(2) and write(2)
// from a goroutine locked to its thread: the thread sleeps in the kernel
// and is woken by the answer itself, without Go's netpoller in between
// (which costs a wake-up hop per request), so the load generator takes as
// little CPU from the system under test as it can.
type rawConn struct{ fd int }

func dial(addr string, timeout time.Duration) (conn, error) {
	ta, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil || ta.IP.To4() == nil {
		return dialNet(addr, timeout)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	sa := &unix.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	tv := unix.NsecToTimeval(int64(timeout))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := connect(fd, sa, timeout); err != nil {
		unix.Close(fd)
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return &rawConn{fd: fd}, nil
}

// connect connects fd, a blocking socket, to sa. A signal (the Go
// runtime's preemption signal, for one) can interrupt a blocking connect;
// the kernel then goes on connecting in the background, and calling
// connect again would fail with EALREADY. So an interrupted (or, with
// SO_SNDTIMEO, timed-out) connect waits for the socket to become writable
// and takes the outcome from SO_ERROR.
func connect(fd int, sa unix.Sockaddr, timeout time.Duration) error {
	err := unix.Connect(fd, sa)
	if err != unix.EINTR && err != unix.EINPROGRESS {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return err
		}
		if soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
			return err
		} else if soerr != 0 {
			return unix.Errno(soerr)
		}
		return nil
	}
}

func (c *rawConn) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(c.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		return n, nil
	}
}

func (c *rawConn) Write(b []byte) (int, error) {
	total := 0
	for total < len(b) {
		n, err := unix.Write(c.fd, b[total:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

func (c *rawConn) setTimeout(d time.Duration) {
	tv := unix.NsecToTimeval(int64(d))
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}

func (c *rawConn) Close() error { return unix.Close(c.fd) }
