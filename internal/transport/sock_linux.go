package transport

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/internal/desc"
	"golang.org/x/sys/unix"
)

// sockFD guards a socket fd used with raw system calls from several
// threads: Close must not close the fd while a Send or a blocked Recv is
// still using it (the number could be reused by an unrelated open).
type sockFD struct {
	fd   int
	refs atomic.Int64 // users; closedBit once Close began
	once sync.Once
}

const closedBit = 1 << 62

func (s *sockFD) acquire() bool {
	if s.refs.Add(1)&closedBit != 0 {
		s.release()
		return false
	}
	return true
}

func (s *sockFD) release() {
	if s.refs.Add(-1) == closedBit {
		s.once.Do(func() { unix.Close(s.fd) })
	}
}

// close marks the socket closed, then shuts it down, which wakes blocked
// receivers (a blocked recvmmsg returns an empty message) and makes the
// socket readable to whoever watches it; the fd closes once the last user
// is gone. The order is the Poller contract: the shutdown comes after the
// mark, so a receive woken by it always sees ErrClosed. (Shut down first,
// a watcher woken in between read an empty socket that was not closed
// yet, and with edge-triggered readiness never heard of it again.)
func (s *sockFD) close() {
	for {
		r := s.refs.Load()
		if r&closedBit != 0 {
			return
		}
		// Marked and held in one step: the fd stays open for the
		// shutdown even if no call uses it.
		if s.refs.CompareAndSwap(r, r+closedBit+1) {
			break
		}
	}
	shutdown(s.fd, unix.SHUT_RDWR)
	s.release()
}

// shutdown is unix.Shutdown (a test checks what close has done by then).
var shutdown = unix.Shutdown

func (s *sockFD) closed() bool { return s.refs.Load()&closedBit != 0 }

// wait returns once no call uses the socket any more (after close), or
// after limit. Endpoints whose calls also touch the pool wait in Close, so
// their caller may unmap the pool as soon as Close returns. close wakes a
// blocked Recv, so the wait is short.
func (s *sockFD) wait(limit time.Duration) {
	waitUsers(&s.refs, limit)
}

func waitUsers(refs *atomic.Int64, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for refs.Load()&^closedBit != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Microsecond)
	}
}

// mmsghdr is struct mmsghdr from <sys/socket.h>.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// batchReader receives up to MaxBatch descriptors with one recvmmsg.
type batchReader struct {
	bufs [MaxBatch][desc.Size]byte
	iov  [MaxBatch]unix.Iovec
	msgs [MaxBatch]mmsghdr
}

func (r *batchReader) init() {
	for i := range r.msgs {
		r.iov[i].Base = &r.bufs[i][0]
		r.iov[i].SetLen(desc.Size)
		r.msgs[i].hdr.Iov = &r.iov[i]
		r.msgs[i].hdr.SetIovlen(1)
	}
}

// recv blocks for at least one datagram and decodes what arrived. Messages
// that are not exactly one descriptor are skipped and counted in bad.
func (r *batchReader) recv(s *sockFD, ds []desc.Desc, wait bool) (n, bad int, err error) {
	all := min(len(ds), MaxBatch)
	if all == 0 {
		return 0, 0, nil
	}
	if !s.acquire() {
		return 0, 0, ErrClosed
	}
	defer s.release()
	want := all
	for {
		// Blocking: this goroutine's thread sleeps in the kernel until a
		// datagram arrives (MSG_WAITFORONE then takes what else is queued).
		flags := uintptr(unix.MSG_WAITFORONE)
		if !wait {
			flags = unix.MSG_DONTWAIT
		}
		m, _, errno := syscall.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd),
			uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(want), flags, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if n > 0 && errno != 0 {
			return n, bad, nil // what the first batch held; the error comes again
		}
		if errno == unix.EAGAIN && !wait && !s.closed() {
			return 0, bad, nil
		}
		if errno != 0 {
			if s.closed() {
				return 0, bad, ErrClosed
			}
			return 0, bad, errno
		}
		for i := 0; i < int(m); i++ {
			if r.msgs[i].n != desc.Size {
				bad++
				continue
			}
			ds[n], _ = desc.Decode(r.bufs[i][:])
			n++
		}
		if !wait && int(m) == want && n < all {
			// Malformed datagrams took room in a full batch: more may be
			// queued, and a non-blocking receive that returns fewer than
			// asked must have taken all (Poller).
			want = all - n
			continue
		}
		if n > 0 {
			return n, bad, nil
		}
		if s.closed() {
			return 0, bad, ErrClosed
		}
		if !wait && m == 0 {
			return 0, bad, nil
		}
		// Only malformed datagrams: look for the next.
	}
}
