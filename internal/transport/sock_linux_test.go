package transport

import (
	"errors"
	"testing"

	"github.com/spry-dev/spry/internal/desc"
	"golang.org/x/sys/unix"
)

// Close marks a socket closed before it shuts it down: whoever the
// shutdown wakes must see the mark (the gateway's loop once read an empty,
// shut-down socket not yet marked closed and never looked again).
func TestSockCloseMarksBeforeShutdown(t *testing.T) {
	for _, held := range []bool{false, true} {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[1])
		s := &sockFD{fd: fds[0]}
		if held && !s.acquire() {
			t.Fatal("acquire of an open socket failed")
		}
		var calls int
		var markedFirst bool
		var shutErr error
		shutdown = func(fd, how int) error {
			calls++
			markedFirst = s.closed()
			shutErr = unix.Shutdown(fd, how)
			return shutErr
		}
		s.close()
		s.close() // a second close does nothing
		shutdown = unix.Shutdown
		if calls != 1 || !markedFirst || shutErr != nil {
			t.Fatalf("held=%v: %d shutdowns, marked before: %v, shutdown: %v", held, calls, markedFirst, shutErr)
		}
		if held {
			// A user still holds it: the fd stays open until released.
			if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0); err != nil {
				t.Fatalf("fd closed under its user: %v", err)
			}
			s.release()
		}
		if s.acquire() {
			t.Fatal("acquire after close succeeded")
		}
		if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0); err == nil {
			t.Fatal("fd still open after close and the last release")
		}
	}
}

// testCloseWakesPoller: a loop watching a Poller's socket (edge-triggered,
// as the gateway's and the peer endpoint's loops do) is woken by Close and
// the receive it then makes returns ErrClosed at once, every time.
func testCloseWakesPoller(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	for i := range 50 {
		c, err := f.Open(5)
		if err != nil {
			t.Fatal(err)
		}
		pl, ok := c.(Poller)
		if !ok {
			c.Close()
			t.Skip("not a Poller")
		}
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.FcntlInt(uintptr(pl.FD()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			t.Fatal(err)
		}
		var ds [4]desc.Desc
		if n, err := pl.TryRecv(ds[:]); n != 0 || err != nil {
			t.Fatalf("TryRecv of an open, empty endpoint: %d, %v", n, err)
		}
		go c.Close()
		evs := make([]unix.EpollEvent, 1)
		for {
			n, err := unix.EpollWait(ep, evs, 5000)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if n != 1 {
				t.Fatalf("round %d: Close raised no readiness in 5 s (%d, %v)", i, n, err)
			}
			break
		}
		if n, err := pl.TryRecv(ds[:]); !errors.Is(err, ErrClosed) {
			t.Fatalf("round %d: TryRecv at the readiness Close raised: %d, %v, want ErrClosed", i, n, err)
		}
		unix.Close(fd)
		unix.Close(ep)
		if err := f.Remove(5); err != nil {
			t.Fatal(err)
		}
	}
}
