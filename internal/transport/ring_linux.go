package transport

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"golang.org/x/sys/unix"
)

// The poll and adaptive transports: every endpoint owns a ring (ring.go)
// in the app's pool. Sending is a push into the destination's ring, from
// any process that maps the pool; receiving pops from one's own ring.
//
// A poll receiver never sleeps. An adaptive receiver spins for at most its
// budget, then sleeps on the futex word in its ring's header. The budget
// is learnt (see learn): spinning pays only when the next descriptor comes
// within the spin, and on a machine with fewer cores than busy receivers a
// spin that cannot pay takes the core from the very sender it waits for.
// Both kinds of receiver step aside (sched_yield) now and then while they
// spin, for whatever else is runnable on their core.
//
// The sleep protocol (an event count):
//
//	receiver                         sender
//	w = wake                         slot.seq = pos+1   (publish)
//	sleep = 1                        if sleep == 1:
//	look at the ring again               wake++
//	futex_wait(&wake, w)                 futex_wake(&wake)
//	sleep = 0
//
// No lost wake-up: both sides store, then load, with sequentially
// consistent atomics (Go's sync/atomic), so in the single order of those
// operations at least one side sees the other's store: either the
// receiver's second look finds the descriptor and it does not sleep, or
// the sender sees sleep == 1 and bumps wake, after which futex_wait
// returns at once (wake != w) or is woken. Only the receiver clears sleep,
// so a sender that stops for good between its publish and its wake (killed,
// or descheduled) does not keep the others from waking the receiver: every
// sender that finds sleep == 1 wakes it. The descriptor of a sender killed
// there waits for the next sender, or for the daemon, which kicks every
// ring of the app when one of its processes dies (Remove).

// Futex operations (include/uapi/linux/futex.h). The futex word is in a
// MAP_SHARED mapping used by several processes: plain operations, not
// FUTEX_PRIVATE_FLAG ones, so the kernel keys them by the page.
const (
	futexWaitOp = 0
	futexWakeOp = 1
)

func futexWait(w *atomic.Uint32, val uint32, timeout int64) {
	var ts *unix.Timespec
	if timeout > 0 {
		t := unix.NsecToTimespec(timeout)
		ts = &t
	}
	syscall.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWaitOp, uintptr(val), uintptr(unsafe.Pointer(ts)), 0, 0)
}

// kick wakes ring i's consumer, whether or not it announced sleep.
func (v *ringView) kick(i uint32) {
	h := v.hdr(i)
	h.wake.Add(1)
	futexWake(&h.wake)
}

func futexWake(w *atomic.Uint32) {
	syscall.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWakeOp, 1, 0, 0, 0)
}

func osyield() { syscall.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }

type ringFabric struct {
	name string
	o    Options
	v    ringView
	mu   sync.Mutex
	ends map[uint16]uint32    // id → ring
	own  map[uint16]*ringConn // the daemon's own endpoints (Open), by id
	free freeList
}

func ringViewOf(p *pool.Pool) (ringView, error) {
	tab, err := newTable(p, RingBytes(2))
	if err != nil {
		return ringView{}, err
	}
	c := ringCap(p.Layout().RingBytes)
	return ringView{tab: tab, cap: c, mask: c - 1}, nil
}

func newRingFabric(name string, o Options) (*ringFabric, error) {
	v, err := ringViewOf(o.Pool)
	if err != nil {
		return nil, err
	}
	if o.Spin == 0 {
		o.Spin = DefaultSpin
	}
	return &ringFabric{name: name, o: o, v: v, ends: map[uint16]uint32{}, own: map[uint16]*ringConn{}, free: newFreeList(v.tab.n)}, nil
}

func (f *ringFabric) Name() string { return f.name }

// make gives id a quiet, emptied ring.
func (f *ringFabric) make(id uint16) (uint32, error) {
	if id == 0 {
		return 0, fmt.Errorf("transport: %s: instance id 0 is reserved", f.name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ends[id]; ok {
		return 0, fmt.Errorf("transport: %s: endpoint %d exists", f.name, id)
	}
	// A ring with a reservation still in flight (a producer between its
	// CAS and its publish, or one that died there) is passed over and
	// retried later.
	i, ok := f.free.take(f.v.quiet)
	if !ok {
		return 0, fmt.Errorf("transport: %s: no free ring among %d (raise the pool's Endpoints)", f.name, f.v.tab.n)
	}
	f.v.reset(i, id)
	f.ends[id] = i
	return i, nil
}

func (f *ringFabric) Add(id uint16) (Handoff, error) {
	i, err := f.make(id)
	if err != nil {
		return Handoff{}, err
	}
	return Handoff{Env: []string{
		EnvTransport + "=" + f.name,
		EnvEndpoint + "=" + strconv.Itoa(int(i)),
		EnvSpin + "=" + strconv.FormatInt(int64(f.o.Spin), 10),
	}}, nil
}

func (f *ringFabric) Open(id uint16) (Conn, error) {
	i, err := f.make(id)
	if err != nil {
		return nil, err
	}
	c, err := newRingConn(f.name, id, i, f.o.Pool, f.o.Spin)
	if err != nil {
		return nil, err
	}
	c.heal = true
	f.mu.Lock()
	f.own[id] = c
	f.mu.Unlock()
	return c, nil
}

func (f *ringFabric) Remove(id uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.ends[id]
	if !ok {
		return nil
	}
	delete(f.ends, id)
	if c := f.own[id]; c != nil {
		c.removed.Store(true) // it must not take the ring back
		delete(f.own, id)
	}
	f.v.disown(i)
	// The endpoint's process is gone: no claim of it will ever be
	// published, so pass over them in every ring of the app, and wake
	// every receiver (one may sleep behind a descriptor whose sender died
	// before its wake-up, or on this ring, which it finds disowned).
	for k := range f.v.tab.n {
		f.v.skipDead(k, id)
		f.v.kick(k)
	}
	f.free.put(i)
	return nil
}

// Repair gives every ring back to its endpoint, and takes every ring no
// endpoint has from whoever it names (see Repairer). A ring whose
// positions are then garbage is rebuilt by its receiver (the gateway's) or
// makes its instance stop (see unstick).
func (f *ringFabric) Repair() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.free.disown(f.v.tab)
	for id, i := range f.ends {
		h := f.v.hdr(i)
		if t := h.tail.Load(); ownerOf(t) != id {
			h.tail.CompareAndSwap(t, uint64(id)<<ownerShift|t&lowMask)
			f.v.kick(i)
		}
	}
}

func (f *ringFabric) Close() error { return removeAll(&f.mu, f.ends, f.Remove) }

// ringConn is one endpoint of the poll or adaptive transport.
type ringConn struct {
	v        ringView
	id       uint16
	ring     uint32
	adaptive bool
	heal     bool // the daemon's own endpoint: rebuild a scribbled ring rather than fail
	removed  atomic.Bool
	spin     int64 // ns
	closed   atomic.Bool
	// users counts calls in progress (closedBit once Close began), so
	// Close can return only when nothing touches the pool any more.
	users atomic.Int64

	// Receiver state, touched only by the goroutine in Recv.
	head    uint64
	foreign uint64
	budget  int64         // adaptive: how long the receiver spins now, 0..spin ns
	sleeps  atomic.Uint64 // times the receiver went to sleep (tests, metrics)
	holeAt  uint64        // position of the hole the receiver waits at
	holeT   int64         // since when (mono ns); 0: no hole
	skipped atomic.Uint64 // holes passed over
	rebuilt atomic.Uint64 // times the ring was rebuilt (heal)
}

func newRingConn(name string, id uint16, ring uint32, p *pool.Pool, spin time.Duration) (*ringConn, error) {
	v, err := ringViewOf(p)
	if err != nil {
		return nil, err
	}
	if ring >= v.tab.n {
		return nil, fmt.Errorf("transport: %s: ring %d out of range (%d)", name, ring, v.tab.n)
	}
	h := v.hdr(ring)
	if o := ownerOf(h.tail.Load()); o != id {
		return nil, fmt.Errorf("transport: %s: ring %d belongs to %d, not %d", name, ring, o, id)
	}
	return &ringConn{v: v, id: id, ring: ring, adaptive: name == "adaptive", spin: int64(spin), budget: int64(spin), head: h.head.Load()}, nil
}

func attachRing(name string, id uint16, ring uint32, p *pool.Pool, spin time.Duration) (Conn, error) {
	return newRingConn(name, id, ring, p, spin)
}

func (c *ringConn) ID() uint16 { return c.id }

func (c *ringConn) acquire() bool {
	if c.users.Add(1)&closedBit != 0 {
		c.users.Add(-1)
		return false
	}
	return true
}

func (c *ringConn) release() { c.users.Add(-1) }

// SendBatch sends ds one by one (see Conn).
func (c *ringConn) SendBatch(ds []desc.Desc) (int, error) { return sendEach(c, ds) }

func (c *ringConn) Send(d desc.Desc) error {
	if !c.acquire() {
		return ErrClosed
	}
	defer c.release()
	for fresh := false; ; fresh = true {
		i, ok := c.v.tab.find(d.Dst, fresh)
		if !ok {
			return ErrGone
		}
		err := c.v.push(i, &d, c.id)
		if err == nil {
			crash.Point("ring.published")
			// Ordering: this load follows the publish in push; see the
			// protocol at the top of the file. A poll receiver never
			// sets sleep, so for poll this reads a line nobody writes.
			if h := c.v.hdr(i); h.sleep.Load() != 0 {
				h.wake.Add(1)
				futexWake(&h.wake)
			}
			return nil
		}
		if err != errMoved {
			return err
		}
		if fresh {
			return ErrGone
		}
	}
}

// Errors a ring receiver returns.
var errDisowned = fmt.Errorf("%w: endpoint removed", ErrClosed)

// spinCheck is how many empty polls pass between the receiver's slower
// checks (its ring still its own, the clock for adaptive's spin budget).
const spinCheck = 64

func (c *ringConn) Recv(ds []desc.Desc) (int, error) {
	if !c.acquire() {
		return 0, ErrClosed
	}
	defer c.release()
	if len(ds) == 0 {
		return 0, nil
	}
	h := c.v.hdr(c.ring)
	var since, woke int64 // first empty look, end of a sleep (adaptive)
	for i := 1; ; i++ {
		if n := c.v.pop(c.ring, &c.head, c.id, ds, &c.foreign); n > 0 {
			if woke != 0 {
				c.learn(woke - since)
			}
			return n, nil
		}
		if c.closed.Load() {
			return 0, ErrClosed
		}
		// No PAUSE between polls: under a hypervisor with pause-loop
		// exiting (KVM's default, Firecracker here) a PAUSE-heavy loop
		// gets the vCPU descheduled. A two-thread ping-pong on a shared
		// word measured ~15 µs per round trip with one PAUSE per poll
		// against ~0.5 µs without.
		if i%spinCheck != 0 {
			continue
		}
		if ownerOf(h.tail.Load()) != c.id && !c.healed() {
			return 0, errDisowned
		}
		now := mono.Now()
		if err := c.unstick(now); err != nil {
			return 0, err
		}
		if i%(64*spinCheck) == 0 {
			osyield()
		}
		if !c.adaptive {
			continue // busy polling is the point of poll
		}
		if since == 0 {
			since = now
			continue
		}
		if now-since < c.budget {
			continue
		}
		if n, err := c.sleep(h, ds); n > 0 || err != nil {
			return n, err
		}
		// Woken: by a sender, whose descriptor the next look finds and
		// learns from (not by Close or Remove, which end the call). A
		// wake-up with nothing to take sleeps again at the next check.
		woke = mono.Now()
	}
}

// Bounds of an adaptive receiver's spin budget: a budget that shrinks
// below minBudget is 0 (sleep at once), one that grows starts again there.
const minBudget = 2 * time.Microsecond

// learn adapts the spin budget to gap, the time from the receiver's first
// empty look to its wake-up by the descriptor it then took: a gap within
// the most it may spin (Options.Spin) means spinning would have saved the
// sleep and the wake-up, so the budget doubles toward that bound; a longer
// gap means any spin was CPU thrown away, so it halves toward 0. A receiver under steady
// load thus spins as poll does, and one whose descriptors come further
// apart than the bound (a lightly loaded chain, or one starved of its core
// by the other receivers' spinning) sleeps at once, as skmsg does. The gap
// includes the wake-up's own latency, so it errs toward sleeping. (A spin
// that ends in a descriptor leaves the budget as it is.)
func (c *ringConn) learn(gap int64) {
	if gap <= c.spin {
		c.budget = min(c.spin, max(2*c.budget, int64(minBudget)))
	} else if c.budget /= 2; c.budget < int64(minBudget) {
		c.budget = 0
	}
}

// errScribbled: an instance's ring holds words no Spry process writes. The
// instance stops (its supervisor starts a new one, with a fresh ring).
var errScribbled = errors.New("transport: ring corrupted by a process of the app")

// healed reports whether the receiver, finding its ring disowned, took it
// back: only the daemon's own endpoints do (the daemon alone removes
// them, after Close; an instance's ring that changed hands was removed).
func (c *ringConn) healed() bool {
	if !c.heal || c.closed.Load() || c.removed.Load() {
		return false
	}
	c.v.rebuild(c.ring, c.id, c.head)
	c.rebuilt.Add(1)
	return true
}

// unstick looks at what keeps the receiver waiting: a hole it has waited
// at long enough is skipped (see ring.go); a ring whose words make no
// sense is rebuilt (the daemon's endpoints) or reported (an instance's).
func (c *ringConn) unstick(now int64) error {
	seq, wait, sane, ok := c.v.hole(c.ring, c.head)
	if !ok {
		c.holeT = 0
		return nil
	}
	if c.holeT == 0 || c.holeAt != c.head {
		c.holeAt, c.holeT = c.head, now
		return nil
	}
	if now-c.holeT < wait {
		return nil
	}
	c.holeT = 0
	if sane && wait > 0 {
		if c.v.skip(c.ring, c.head, seq) {
			c.skipped.Add(1)
		}
		return nil
	}
	if !c.heal {
		return errScribbled
	}
	c.v.rebuild(c.ring, c.id, c.head)
	c.rebuilt.Add(1)
	return nil
}

// sleep announces that the receiver sleeps, looks at the ring once more,
// and waits on the futex until a sender (or Close, or Remove, or the
// daemon) wakes it. With a hole ahead it sleeps only as long as the hole
// may stay before it is skipped.
func (c *ringConn) sleep(h *ringHdr, ds []desc.Desc) (int, error) {
	w := h.wake.Load()
	h.sleep.Store(1)
	if n := c.v.pop(c.ring, &c.head, c.id, ds, &c.foreign); n > 0 {
		h.sleep.Store(0)
		return n, nil
	}
	if c.closed.Load() {
		h.sleep.Store(0)
		return 0, ErrClosed
	}
	if ownerOf(h.tail.Load()) != c.id && !c.healed() {
		h.sleep.Store(0)
		return 0, errDisowned
	}
	timeout := int64(0)
	if _, wait, _, hole := c.v.hole(c.ring, c.head); hole {
		timeout = max(wait, holeUnclaimed)
	}
	c.sleeps.Add(1)
	crash.Point("ring.sleeping")
	futexWait(&h.wake, w, timeout)
	h.sleep.Store(0)
	if timeout > 0 {
		if err := c.unstick(mono.Now()); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

// Close wakes a receiver, makes later calls return ErrClosed, and returns
// once no call touches the pool any more (the caller may unmap it next).
// The ring stays the endpoint's until the daemon removes it.
func (c *ringConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.users.Add(closedBit)
	// Ordering: closed is stored before wake is bumped; a receiver reads
	// wake before it loads closed, so it either sees closed or sleeps on a
	// stale wake and returns at once (the same argument as for senders).
	c.v.kick(c.ring)
	waitUsers(&c.users, closeWait)
	return nil
}
