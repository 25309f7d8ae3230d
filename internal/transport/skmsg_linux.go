package transport

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/internal/bpf/loopback"
	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
	"golang.org/x/sys/unix"
)

// The skmsg transport: every endpoint is the registered end of a loopback
// TCP connection in the node's sockmap (internal/bpf); the daemon keeps
// the other end open. A descriptor is one 16-byte write (or a batch for
// one destination, one write of k × 16 bytes), which the kernel program
// moves onto the destination socket's receive queue without touching TCP;
// the receiver sleeps in a blocking read(2) on a locked thread and takes
// whatever whole descriptors are queued, up to MaxBatch, in one read.
//
// The kernel queue has no bound of its own (it grows until the node's TCP
// memory limit), so the endpoint table entry counts descriptors in
// flight: a sender reserves one per descriptor in the destination's
// entry before it writes, the receiver gives them back after it reads.

// Errors on the skmsg data path.
var (
	errRemoved = fmt.Errorf("%w: endpoint removed, or the daemon is gone", ErrClosed)
	errBroken  = fmt.Errorf("%w: socket no longer in the sockmap (daemon gone?)", ErrClosed)
)

type skmsgFabric struct {
	o    Options
	sm   Sockmap
	p    *pool.Pool
	tab  *table
	mu   sync.Mutex
	ends map[uint16]skmsgEnd
	free freeList
}

type skmsgEnd struct {
	ep   uint32 // endpoint table entry
	peer int    // the daemon's end of the connection
}

func newSkmsgFabric(o Options) (*skmsgFabric, error) {
	if o.BPF == nil {
		return nil, errors.New("transport: skmsg needs Options.BPF (the node's *bpf.Sockmap)")
	}
	if o.AppID == 0 {
		return nil, errors.New("transport: skmsg needs a non-zero Options.AppID")
	}
	tab, err := newTable(o.Pool, skmsgEntryBytes)
	if err != nil {
		return nil, err
	}
	return &skmsgFabric{o: o, sm: o.BPF, p: o.Pool, tab: tab, ends: map[uint16]skmsgEnd{}, free: newFreeList(tab.n)}, nil
}

func (f *skmsgFabric) Name() string { return "skmsg" }

// make creates id's endpoint: a connection whose first end is registered
// in the sockmap, then published in the endpoint table. Senders find it
// only after the kernel can deliver to it.
func (f *skmsgFabric) make(id uint16) (fd int, ep uint32, err error) {
	if id == 0 {
		return -1, 0, fmt.Errorf("transport: skmsg: instance id 0 is reserved")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ends[id]; ok {
		return -1, 0, fmt.Errorf("transport: skmsg: endpoint %d exists", id)
	}
	ep, ok := f.free.take(func(uint32) bool { return true })
	if !ok {
		return -1, 0, fmt.Errorf("transport: skmsg: all %d endpoint entries in use (raise the pool's Endpoints)", f.tab.n)
	}
	a, b, err := loopback.Pair()
	if err != nil {
		f.free.put(ep)
		return -1, 0, fmt.Errorf("transport: skmsg endpoint %d: %w", id, err)
	}
	if err := f.sm.Register(id, f.o.AppID, a); err != nil {
		unix.Close(a)
		unix.Close(b)
		f.free.put(ep)
		return -1, 0, fmt.Errorf("transport: skmsg endpoint %d: %w", id, err)
	}
	// Ordering: the store is sequentially consistent and follows the
	// sockmap update (a system call), so a sender that loads this owner
	// writes to a socket the kernel already delivers to.
	f.tab.word(ep).Store(uint64(id) << ownerShift)
	f.ends[id] = skmsgEnd{ep: ep, peer: b}
	return a, ep, nil
}

func (f *skmsgFabric) Add(id uint16) (Handoff, error) {
	fd, ep, err := f.make(id)
	if err != nil {
		return Handoff{}, err
	}
	return Handoff{
		Files: []*os.File{os.NewFile(uintptr(fd), "skmsg-"+strconv.Itoa(int(id)))},
		Env:   []string{EnvTransport + "=skmsg", EnvEndpoint + "=" + strconv.Itoa(int(ep))},
	}, nil
}

func (f *skmsgFabric) Open(id uint16) (Conn, error) {
	fd, ep, err := f.make(id)
	if err != nil {
		return nil, err
	}
	return newSkmsgConn(id, fd, ep, f.p)
}

func (f *skmsgFabric) Remove(id uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.ends[id]
	if !ok {
		return nil
	}
	delete(f.ends, id)
	// Senders see ErrGone from here on; the kernel refuses what is
	// already on its way once the socket is out of the sockmap; the
	// endpoint's reader gets end-of-file when the peer closes.
	f.tab.word(e.ep).Store(0)
	err := f.sm.Unregister(id)
	unix.Close(e.peer)
	f.free.put(e.ep)
	if err != nil {
		return fmt.Errorf("transport: skmsg remove endpoint %d: %w", id, err)
	}
	return nil
}

// Repair gives every entry back to its endpoint, with no reservation, and
// takes every entry no endpoint has from whoever it names (see Repairer).
func (f *skmsgFabric) Repair() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.free.disown(f.tab)
	for id, e := range f.ends {
		w := f.tab.word(e.ep)
		if v := w.Load(); ownerOf(v) != id || v&lowMask > Depth {
			w.CompareAndSwap(v, uint64(id)<<ownerShift)
		}
	}
}

func (f *skmsgFabric) Close() error { return removeAll(&f.mu, f.ends, f.Remove) }

// skmsgConn is one endpoint.
type skmsgConn struct {
	s    sockFD
	id   uint16
	tab  *table
	self *atomic.Uint64 // own entry's word
	r    streamReader
}

func newSkmsgConn(id uint16, fd int, ep uint32, p *pool.Pool) (*skmsgConn, error) {
	tab, err := newTable(p, skmsgEntryBytes)
	if err != nil {
		return nil, err
	}
	if ep >= tab.n {
		return nil, fmt.Errorf("transport: skmsg endpoint entry %d out of range (%d)", ep, tab.n)
	}
	if o := ownerOf(tab.word(ep).Load()); o != id {
		return nil, fmt.Errorf("transport: skmsg endpoint entry %d belongs to %d, not %d", ep, o, id)
	}
	return &skmsgConn{s: sockFD{fd: fd}, id: id, tab: tab, self: tab.word(ep)}, nil
}

func attachSkmsg(id uint16, fd int, ep uint32, p *pool.Pool) (Conn, error) {
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || t != unix.SOCK_STREAM {
		return nil, fmt.Errorf("transport: fd %d is not a stream socket", fd)
	}
	unix.CloseOnExec(fd)
	// Recv relies on a blocking read.
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, fmt.Errorf("transport: fd %d: %w", fd, err)
	}
	return newSkmsgConn(id, fd, ep, p)
}

func (c *skmsgConn) ID() uint16 { return c.id }

// reserve takes room for k descriptors in dst's entry: all or none.
func (c *skmsgConn) reserve(dst uint16, k uint64) (*atomic.Uint64, error) {
	for fresh := false; ; fresh = true {
		i, ok := c.tab.find(dst, fresh)
		if !ok {
			return nil, ErrGone
		}
		w := c.tab.word(i)
		for {
			v := w.Load()
			if ownerOf(v) != dst {
				break // changed hands since find: look again, once
			}
			if v&lowMask+k > Depth {
				return nil, ErrFull
			}
			// Ordering: the CAS takes room only if the entry still belongs
			// to dst (Remove and the next Add rewrite the whole word). It
			// publishes nothing else: the descriptor travels through the
			// kernel, which orders it by itself.
			if w.CompareAndSwap(v, v+k) {
				return w, nil
			}
		}
		if fresh {
			return nil, ErrGone
		}
	}
}

// unreserve gives back n reservations of owner's in w, if w still
// belongs to owner, never going below zero.
func unreserve(w *atomic.Uint64, owner uint16, n uint64) {
	for {
		v := w.Load()
		if ownerOf(v) != owner || v&lowMask == 0 {
			return
		}
		nv := v - min(n, v&lowMask)
		if w.CompareAndSwap(v, nv) {
			return
		}
	}
}

func (c *skmsgConn) Send(d desc.Desc) error {
	b := d.Array()
	return c.send(d.Dst, b[:])
}

// SendBatch sends ds in messages of up to MaxBatch descriptors, each one
// write that the kernel program moves whole to the first descriptor's
// destination or refuses whole (see Conn).
func (c *skmsgConn) SendBatch(ds []desc.Desc) (int, error) {
	if len(ds) == 0 {
		return 0, nil
	}
	var b [MaxBatch * desc.Size]byte
	sent := 0
	dst := ds[0].Dst
	for sent < len(ds) {
		k := 0
		for _, d := range ds[sent:min(len(ds), sent+MaxBatch)] {
			if d.Dst != dst {
				break
			}
			d.Encode(b[k*desc.Size:])
			k++
		}
		if k == 0 {
			return sent, errMixed
		}
		if err := c.send(dst, b[:k*desc.Size]); err != nil {
			return sent, err
		}
		sent += k
	}
	return sent, nil
}

// send writes b, whole descriptors for dst, as one message, after
// reserving room for them in dst's entry: all of them go, or none.
func (c *skmsgConn) send(dst uint16, b []byte) error {
	if !c.s.acquire() {
		return ErrClosed
	}
	defer c.s.release()
	k := uint64(len(b) / desc.Size)
	w, err := c.reserve(dst, k)
	if err != nil {
		return err
	}
	crash.Point("skmsg.reserved")
	for {
		// One sendmsg of at most MaxBatch × 16 bytes is one sk_msg and one
		// verdict: the kernel copies it whole (or fails with nothing
		// copied) and the program redirects or refuses it whole.
		m, _, errno := syscall.Syscall6(unix.SYS_SENDTO, uintptr(c.s.fd),
			uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		switch {
		case errno == 0 && int(m) == len(b):
			return nil
		case errno == 0:
			// Never seen: a short write would have split a message the
			// kernel program judges whole. Taken as full: the caller
			// cancels every transfer of the message and may send again.
			// A descriptor of it that did arrive then fails its accept
			// and is dropped unread (or was accepted first, and the
			// cancel fails: the receiver has the buffer). The
			// reservations stay; the receiver's next short read drops
			// them.
			return ErrFull
		case errno == unix.EINTR:
			continue
		}
		unreserve(w, dst, k)
		switch errno {
		case unix.EAGAIN, unix.ENOMEM, unix.ENOBUFS:
			return ErrFull
		case unix.EACCES:
			// A drop verdict, which the program only gives when its sink is
			// missing (the sockmap is closing). It sticks to the socket.
			return errBroken
		case unix.EPIPE, unix.ECONNRESET, unix.ENOTCONN:
			return errBroken
		}
		return fmt.Errorf("transport: skmsg send to %d: %w", dst, errno)
	}
}

func (c *skmsgConn) Recv(ds []desc.Desc) (int, error) { return c.recv(ds, true) }

// TryRecv takes the descriptors queued now (see Poller).
func (c *skmsgConn) TryRecv(ds []desc.Desc) (int, error) { return c.recv(ds, false) }

// FD returns the endpoint's socket (see Poller).
func (c *skmsgConn) FD() int { return c.s.fd }

func (c *skmsgConn) recv(ds []desc.Desc, wait bool) (int, error) {
	n, err := c.r.recv(&c.s, ds, wait)
	if n > 0 {
		// Ordering: the reservations go back after the read that took
		// the descriptors; a sender that sees room finds it in the kernel.
		// A read that did not fill its batch emptied the kernel queue:
		// then every reservation left is a sender's between its
		// reservation and its write, or one a sender killed there (or a
		// hostile writer of the app) leaked. Dropping them all bounds the
		// leak to one batch: the count errs low by the sends under way,
		// and unreserve never goes below zero.
		if n < min(len(ds), MaxBatch) {
			unreserve(c.self, c.id, Depth)
		} else {
			unreserve(c.self, c.id, uint64(n))
		}
	}
	return n, err
}

// Close wakes a blocked Recv and returns once no call of c touches the
// pool (the caller may unmap it next). The socket closes after the last
// user.
func (c *skmsgConn) Close() error {
	c.s.close()
	c.s.wait(closeWait)
	return nil
}

// closeWait bounds how long Close waits for calls in progress.
const closeWait = 5 * time.Second

// streamReader takes whole descriptors from a byte stream. The kernel
// program only lets messages of whole descriptors through (one, or a
// batch) and every read asks for a multiple of 16 bytes, so reads end on
// descriptor boundaries, in a batch's middle too (the kernel leaves the
// rest of a message queued); carrying a partial descriptor over to the
// next read keeps framing right even if that ever stops being true.
type streamReader struct {
	buf   [MaxBatch * desc.Size]byte
	carry int // bytes of a partial descriptor at the start of buf
}

func (r *streamReader) recv(s *sockFD, ds []desc.Desc, wait bool) (int, error) {
	want := min(len(ds), MaxBatch)
	if want == 0 {
		return 0, nil
	}
	if !s.acquire() {
		return 0, ErrClosed
	}
	defer s.release()
	for {
		var m uintptr
		var errno syscall.Errno
		if wait {
			// Blocking: the thread sleeps in the kernel until bytes
			// arrive, then takes everything queued up to the size asked
			// for.
			m, _, errno = syscall.Syscall(unix.SYS_READ, uintptr(s.fd),
				uintptr(unsafe.Pointer(&r.buf[r.carry])), uintptr(want*desc.Size-r.carry))
		} else {
			m, _, errno = syscall.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd),
				uintptr(unsafe.Pointer(&r.buf[r.carry])), uintptr(want*desc.Size-r.carry), unix.MSG_DONTWAIT, 0, 0)
		}
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN && !s.closed():
			if !wait {
				return 0, nil
			}
			// A wake-up without data: tcp_bpf returns EAGAIN for it.
			continue
		case errno != 0:
			if s.closed() {
				return 0, ErrClosed
			}
			return 0, fmt.Errorf("transport: read: %w", errno)
		case m == 0:
			if s.closed() {
				return 0, ErrClosed
			}
			return 0, errRemoved // the daemon closed the peer
		}
		total := r.carry + int(m)
		n := total / desc.Size
		for i := range n {
			ds[i], _ = desc.Decode(r.buf[i*desc.Size:])
		}
		r.carry = copy(r.buf[:], r.buf[n*desc.Size:total])
		if n > 0 || !wait {
			return n, nil
		}
	}
}
