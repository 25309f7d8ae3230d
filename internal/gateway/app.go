package gateway

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// App is the gateway's side of one app: its pool, its descriptor endpoint,
// and the table of its requests in flight.
//
// A request in flight holds one entry of the table from admission until its
// last buffer is back. The entry is found from the request id in a buffer
// header: the low idBits are the entry's index, the rest a sequence number
// that makes every use of an entry distinct.
type App struct {
	name       string
	maxBody    uint64 // limits.maxBody
	pool       *pool.Pool
	conn       transport.Conn
	id         uint16
	pend       []pending
	free       chan uint32 // indexes of free entries
	seq        atomic.Uint64
	rot        atomic.Uint32
	ctl        func(desc.Desc)
	noInstance func(fn uint16)
	ready      atomic.Pointer[chan struct{}] // closed when an instance becomes ready (InstanceReady)
	remote     atomic.Uint32                 // the endpoint standing for other nodes' instances (SetRemote)
	stats      AppStats
	// bg counts the app's goroutines that use the pool outside an
	// adapter's own (awaits of an instance, the ends of partial writes):
	// Close waits for them, so the pool is never unmapped under them.
	bg      sync.WaitGroup
	closing atomic.Bool
	gate    atomic.Pointer[chan struct{}] // while Quiesce holds every entry: closed when it gives them back
	held    []uint32                      // the entries Quiesce holds (the daemon's sweep only)
	jmu     sync.Mutex
	jfree   []*joins // join tables of requests that ended, for reuse
	// waker is called once, by the next admission, when the daemon armed
	// it (WakeOnAdmit: its watcher sleeps while the app is idle).
	waker atomic.Pointer[func()]
}

// idBits is the width of the entry index in a request id: enough for the
// largest pool, whose buffers bound the requests in flight.
const idBits = 20

const idMask = 1<<idBits - 1

// Entry states, in the low two bits of pending.word; the sequence number of
// the request that holds the entry is in the bits above.
const (
	stFree      = iota // not in use
	stWaiting          // out in its chain; the Replier waits for the reply
	stDone             // the reply (or a failure) was handed to the Replier
	stAbandoned        // answered by the gateway (deadline); the buffer is still out
)

// pending is one entry of the in-flight table.
//
// word changes only by compare-and-swap against (seq, state) of the request
// that holds the entry, so a completion for an older use of the same entry
// can never succeed (no ABA: seq never repeats). The other fields are
// written by the admitting goroutine before publish stores stWaiting, and
// read by the completer after its compare-and-swap from stWaiting succeeds,
// which orders them.
type pending struct {
	word     atomic.Uint64
	deadline atomic.Int64 // the request's deadline (mono ns), for the timer
	queued   atomic.Bool  // no instance has taken it yet (App.await retries)
	rep      Replier      // answers the request
	tag      uint64       // Request.Tag, handed back with the reply
	ch       *Chain       // its chain, for the response's counters
	began    int64        // when it arrived (mono ns)
	timer    *time.Timer  // fires at the deadline (App.expire)
	idx      uint32       // the entry's index
	jmu      sync.Mutex   // guards joins
	joins    *joins       // the request's joins collecting their inputs (graph.go)
	// foreign is the number of join frames the request came with from
	// another node (Request.Continue): it is a branch of that node's
	// fan-out, and answered when the branch ends (App.join).
	foreign atomic.Uint32
	_       [36]byte // entries in use by different threads share no cache line
}

// AppStats are an app's gateway counters.
type AppStats struct {
	Requests  atomic.Uint64 // requests admitted to a chain
	Replies   atomic.Uint64 // answered from a chain's reply
	Failed    atomic.Uint64 // answered 502 because an instance died
	Timeouts  atomic.Uint64 // answered 504
	Rejected  atomic.Uint64 // refused 429/503 by flow control
	Stale     atomic.Uint64 // replies for requests already answered (freed)
	Abandoned atomic.Uint64 // buffers freed after their request timed out
	Forged    atomic.Uint64 // descriptors whose buffer was not in transit to the gateway (dropped unread)
	RecvErrs  atomic.Uint64 // receive errors the reply loop outlived
	BadStatus atomic.Uint64 // replies whose status was no final HTTP status (answered 502)
	// LateInputs are join inputs dropped: late (the join ran already),
	// duplicate (its branch had arrived), or of a request answered.
	LateInputs atomic.Uint64
	// Transits and TransitNs measure the hops inside chains from the
	// buffers' hop stamps: from one step's end to the next step's start
	// (the descriptor's way between the instances, with any wait for the
	// next one), over the answered requests' steps in a line.
	Transits  atomic.Uint64
	TransitNs atomic.Uint64
}

// transits adds the hops of answered buffer h that went from a step
// straight to the next (one successor, the following node, not a join:
// a branch's end to its join's start is the wait for the other branches,
// not a hop) to the stats. Stamps older than the request are a former
// use's (a buffer's stamps are not cleared when it is allocated).
func (a *App) transits(h *pool.BufHeader) {
	n, in := h.Hops(), h.Ingress()
	var k, ns uint64
	for i := 1; i < n; i++ {
		v, ok := a.pool.NodeAt(h.Chain(), i-1)
		if !ok || v.NumNext() != 1 || int(v.Next(0)) != i {
			continue
		}
		if w, ok := a.pool.NodeAt(h.Chain(), i); !ok || w.IsJoin() {
			continue
		}
		_, end := h.HopTimes(i - 1)
		start, _ := h.HopTimes(i)
		if end == 0 || end < in || start < end {
			continue
		}
		k++
		ns += uint64(start - end)
	}
	if k > 0 {
		a.stats.Transits.Add(k)
		a.stats.TransitNs.Add(ns)
	}
}

// AppConfig configures an App.
type AppConfig struct {
	Name     string
	Pool     *pool.Pool
	Conn     transport.Conn // the gateway's endpoint in the app's fabric
	Inflight int            // requests in flight at once (<= buffers)
	// MaxBody bounds a request's body (0: one pool buffer). Larger than a
	// buffer needs the pool's large-extent region.
	MaxBody uint64
	// Control receives control descriptors from the app's instances (for
	// example, readiness). It runs on the receive thread: keep it short.
	Control func(desc.Desc)
	// NoInstance is told when a request waits for function fn because it
	// has no ready instance (it may be scaled to zero). It must not block.
	NoInstance func(fn uint16)
}

// NewApp makes the gateway side of one app. Run must be called to receive
// replies.
func NewApp(c AppConfig) (*App, error) {
	if c.Inflight < 1 || c.Inflight > idMask || uint32(c.Inflight) > c.Pool.Buffers() {
		return nil, fmt.Errorf("gateway: app %s: in-flight bound %d not in 1..%d", c.Name, c.Inflight, c.Pool.Buffers())
	}
	if c.MaxBody == 0 {
		c.MaxBody = uint64(c.Pool.BufferSize())
	}
	a := &App{
		name: c.Name, maxBody: c.MaxBody, pool: c.Pool, conn: c.Conn, id: c.Conn.ID(), ctl: c.Control, noInstance: c.NoInstance,
		pend: make([]pending, c.Inflight),
		free: make(chan uint32, c.Inflight),
	}
	if a.ctl == nil {
		a.ctl = func(desc.Desc) {}
	}
	if a.noInstance == nil {
		a.noInstance = func(uint16) {}
	}
	for i := range c.Inflight {
		a.pend[i].idx = uint32(i)
		a.pend[i].timer = time.AfterFunc(time.Hour, func() { a.expire(uint32(i)) })
		a.pend[i].timer.Stop()
		a.free <- uint32(i)
	}
	a.InstanceReady()
	c.Pool.SetGateway(a.id)
	return a, nil
}

// Name returns the app's name.
func (a *App) Name() string { return a.name }

// ID returns the endpoint id of the app's gateway.
func (a *App) ID() uint16 { return a.id }

// Pool returns the app's pool.
func (a *App) Pool() *pool.Pool { return a.pool }

// Stats returns the app's counters.
func (a *App) Stats() *AppStats { return &a.stats }

// SetRemote names the endpoint that stands, in the app's routing table,
// for the instances other nodes run (internal/cluster/peer; 0: none).
// Requests admitted with Request.Local never go to it.
func (a *App) SetRemote(id uint16) { a.remote.Store(uint32(id)) }

// Inflight returns the number of table entries in use: requests waiting
// for a reply plus timed-out requests whose buffer is not back yet.
func (a *App) Inflight() int { return len(a.pend) - len(a.free) }

// Run receives the app's descriptors until the endpoint is closed: replies
// complete their requests, control messages go to AppConfig.Control. When
// the transport delivers them on a socket (skmsg, uds) an event loop
// watches it, with the connections (loop_linux.go); otherwise Run locks
// its goroutine to an OS thread that sleeps in the kernel. A receive error
// other than the endpoint's closing does not end it: every reply of the
// app comes through here.
func (a *App) Run() error {
	if err, ok := a.runLoop(); ok {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var batch [transport.MaxBatch]desc.Desc
	pause := time.Millisecond
	lastSched := mono.Now()
	for {
		n, err := a.conn.Recv(batch[:])
		if err != nil {
			if errors.Is(err, transport.ErrClosed) || a.closing.Load() {
				return nil
			}
			a.stats.RecvErrs.Add(1)
			time.Sleep(pause)
			pause = min(2*pause, 100*time.Millisecond)
			continue
		}
		pause = time.Millisecond
		a.handle(batch[:n])
		// See loop.run: a thread that only makes system calls must pass
		// through the scheduler now and then.
		if now := mono.Now(); now-lastSched > schedEvery {
			lastSched = now
			runtime.Gosched()
		}
	}
}

// handle takes descriptors the app's endpoint received: replies complete
// their requests, control messages go to AppConfig.Control.
func (a *App) handle(batch []desc.Desc) {
	for _, d := range batch {
		if d.Is(desc.FlagControl) {
			if d.Buf == desc.CtlNoInstance {
				a.noInstance(d.Chain)
				continue
			}
			a.ctl(d)
			continue
		}
		// The gateway takes a reply's buffer only by completing the
		// transfer the descriptor announces: a forged one, a
		// duplicate, one naming a buffer the gateway is still
		// filling, or one whose buffer the daemon took back with its
		// dead sender, finds another word and is dropped unread.
		if !a.pool.Accept(d.Buf, d.Gen, d.Src, a.id) {
			a.pool.CountStale()
			a.stats.Forged.Add(1)
			continue
		}
		crash.Point("gateway.accepted")
		switch {
		case d.Is(desc.FlagJoin):
			a.join(d.Buf, d.Hop)
		case d.Is(desc.FlagRoute):
			a.route(d.Buf)
		default:
			a.complete(d.Buf)
		}
	}
}

// Quiesce runs fn while the app has no request in flight and admits none
// (new requests wait for its end, up to their deadline), and reports
// whether it could: then no buffer of the app may legitimately be held by
// anyone. The daemon repairs the pool's free list under it: fn must be
// short, it holds the admissions of the app (and the event loop of each).
func (a *App) Quiesce(fn func()) bool {
	if a.Inflight() != 0 {
		return false
	}
	// The gate is up before the first entry is taken: an admission that
	// finds none free then finds the gate and waits for it.
	gate := make(chan struct{})
	a.gate.Store(&gate)
	got := 0
	defer func() {
		for ; got > 0; got-- {
			a.free <- a.held[got-1]
		}
		a.gate.Store(nil)
		close(gate) // after the entries are back
	}()
	if a.held == nil {
		a.held = make([]uint32, len(a.pend))
	}
	for got < len(a.pend) {
		select {
		case a.held[got] = <-a.free:
			got++
		default:
			return false
		}
	}
	fn()
	return true
}

// Reap frees the entries of requests answered at their deadline whose
// buffer has not come back within grace after it (the daemon calls it with
// grace longer than any step may hold a buffer: its function's timeout,
// after which the instance is killed and its buffers reclaimed). Such a
// buffer was lost to a process of the app that scribbled on the pool; if
// it does come back, complete frees it as stale (the entry's sequence has
// moved on). It returns how many entries it freed.
func (a *App) Reap(grace time.Duration) int {
	now := mono.Now()
	n := 0
	for i := range a.pend {
		e := &a.pend[i]
		w := e.word.Load()
		if w&3 != stAbandoned || now < e.deadline.Load()+int64(grace) {
			continue
		}
		if e.word.CompareAndSwap(w, w&^3|stFree) {
			e.rep = nil
			a.free <- uint32(i)
			n++
		}
	}
	return n
}

// Close makes the app's background work end and waits for it: after it
// returns nothing of the app's gateway touches the pool except the
// adapters' own goroutines (stopped by the server's shutdown) and Run
// (ended by closing the endpoint).
func (a *App) Close() {
	a.closing.Store(true)
	a.bg.Wait()
}

// acquire takes a free entry for a new request, or reports false when the
// app is at its in-flight bound. While the daemon holds every entry for a
// repair (Quiesce) it waits for the repair to end, up to deadline (mono
// ns): the app is idle then, not overloaded. The entry is not completable
// until publish.
func (a *App) acquire(deadline int64) (idx uint32, reqID uint64, ok bool) {
	select {
	case idx = <-a.free:
	default:
		if idx, ok = a.awaitGate(deadline); !ok {
			return 0, 0, false
		}
	}
	seq := a.seq.Add(1)
	if a.waker.Load() != nil {
		if f := a.waker.Swap(nil); f != nil {
			(*f)()
		}
	}
	return idx, seq<<idBits | uint64(idx), true
}

// awaitGate waits for a repair holding every entry (Quiesce) to give them
// back, up to deadline, and takes one; false: no repair holds them (the
// app is at its bound), the deadline came first, or others took them all.
func (a *App) awaitGate(deadline int64) (uint32, bool) {
	for {
		g := a.gate.Load()
		if g == nil {
			return 0, false
		}
		t := time.NewTimer(time.Duration(deadline - mono.Now()))
		select {
		case idx := <-a.free:
			t.Stop()
			return idx, true
		case <-*g:
			t.Stop()
		case <-t.C:
			return 0, false
		}
		select {
		case idx := <-a.free:
			return idx, true
		default: // taken by others, or the next repair holds them
		}
	}
}

// WakeOnAdmit arms f to be called once, from the next request's admission
// (it must not block): the daemon's watcher sleeps while the app is idle
// and wakes on it. A later call replaces an armed f.
func (a *App) WakeOnAdmit(f func()) { a.waker.Store(&f) }

// publish makes entry idx completable by request reqID and arms its
// deadline. Call it before the request's buffer leaves the gateway, after
// the entry's other fields are set.
func (a *App) publish(idx uint32, reqID uint64, deadline int64) {
	e := &a.pend[idx]
	e.deadline.Store(deadline)
	// The store of stWaiting under the request's seq orders the fields
	// written before it ahead of a completer's compare-and-swap.
	e.word.Store(reqID>>idBits<<2 | stWaiting)
	// Armed after the publication: a firing now finds this request, and
	// one that is early for it (a stale firing of an earlier use of the
	// entry) re-arms (see expire). Before the buffer leaves, so no reply
	// can have stopped the timer yet.
	e.timer.Reset(time.Duration(deadline - mono.Now()))
}

// release returns an entry whose request is finished.
func (a *App) release(idx uint32, reqID uint64) {
	e := &a.pend[idx]
	e.rep = nil
	a.recycle(e)
	e.word.Store(reqID>>idBits<<2 | stFree)
	a.free <- idx
}

// complete hands buffer buf, which came back from the app's chain, to the
// request it belongs to, or frees it when that request is already
// answered. The gateway must hold buf.
//
// A reply that comes back after the request's deadline, before its timer
// fired, answers it 504 as the timer would have: whichever side completes
// the request, a client past its deadline gets 504 (a step handed a
// request past its deadline hands it back unrun; its buffer then still
// holds the client's own body).
func (a *App) complete(buf uint32) {
	h := a.pool.Header(buf)
	reqID := h.ReqID()
	idx := uint32(reqID & idMask)
	if reqID == 0 || idx >= uint32(len(a.pend)) {
		a.stats.Stale.Add(1)
		a.pool.Free(buf, a.id)
		return
	}
	e := &a.pend[idx]
	seq := reqID >> idBits
	if mono.Now() > e.deadline.Load() && e.word.CompareAndSwap(seq<<2|stWaiting, seq<<2|stAbandoned) {
		e.timer.Stop()
		a.stats.Timeouts.Add(1)
		e.ch.count(ErrDeadline.Status, e.began)
		r := Reply{a: a, ch: e.ch, err: ErrDeadline, idx: idx, reqID: reqID, status: ErrDeadline.Status, tag: e.tag}
		if e.ch.records(r.status) {
			e.ch.record(e.rep, r, e.began)
		}
		e.rep.Reply(r)
		// Abandoned, and the buffer is back: both go below.
	} else if e.word.CompareAndSwap(seq<<2|stWaiting, seq<<2|stDone) {
		crash.Point("gateway.completed")
		e.timer.Stop()
		// The status word is the app's shared memory: read once, and
		// only a final status an HTTP client can take goes out.
		status, own := int(h.Status()), false
		if status == 0 {
			status = 200
		} else if status < 200 || status > 599 {
			status, own = a.badStatus(buf, e.ch, status), true
		}
		e.ch.count(status, e.began)
		a.stats.Replies.Add(1)
		a.transits(h)
		// Answer from here: no thread switch before the response goes
		// out.
		r := Reply{a: a, ch: e.ch, idx: idx, reqID: reqID, buf: buf, status: status, tag: e.tag, own: own}
		if e.ch.records(status) {
			e.ch.record(e.rep, r, e.began)
		}
		e.rep.Reply(r)
		return
	}
	a.pool.Free(buf, a.id)
	if e.word.CompareAndSwap(seq<<2|stAbandoned, seq<<2|stFree) {
		a.stats.Abandoned.Add(1)
		e.rep = nil
		a.recycle(e)
		a.free <- idx
		return
	}
	a.stats.Stale.Add(1)
}

// badStatus turns buf, a reply of chain ch with status s, into a 502 that
// says why, and returns 502. A status outside 200..599 is no final answer
// for an HTTP client: a 1xx is an interim response, after which the client
// waits on for one that never comes; there is no status above 599. A
// function may set one by mistake, and any process of the app may write
// one into the header. The functions' response headers do not go out with
// it (see Reply.own).
func (a *App) badStatus(buf uint32, ch *Chain, s int) int {
	var m [128]byte
	b := append(append(m[:0], "spry: chain "...), ch.Name...)
	b = strconv.AppendInt(append(b, " answered with status "...), int64(s), 10)
	b = append(b, ", which is no final HTTP status (200..599)\n"...)
	a.pool.Clear(buf, a.id) // a body in extents, or shared, is not the reply
	h := a.pool.Header(buf)
	h.SetData(0, uint32(copy(a.pool.Buffer(buf), b)))
	h.SetReplyContentType("text/plain; charset=utf-8")
	h.SetStatus(502)
	a.stats.BadStatus.Add(1)
	return 502
}

// expire runs when entry idx's timer fires. A request past its deadline is
// answered by the gateway (504, or 503 when no instance ever took it); its
// entry stays taken, and its buffer out, until the chain gives the buffer
// back. A firing that is early for the request now in the entry re-arms.
func (a *App) expire(idx uint32) {
	e := &a.pend[idx]
	w := e.word.Load()
	if w&3 != stWaiting {
		return // answered, or a stale firing for an entry since freed
	}
	now := mono.Now()
	next := a.expireJoins(e, now) // joins whose wait passed run with what arrived
	if dl := e.deadline.Load(); now < dl {
		if next == 0 || next > dl {
			next = dl
		}
		e.timer.Reset(time.Duration(next - now))
		return
	}
	// Read before the compare-and-swap: once the entry is abandoned, the
	// buffer's return may free it for the next request at any moment.
	// Until then it is this request's (seq never repeats), and the load
	// of w above ordered the fields after the request's publication.
	rep, tag, ch, began, queued := e.rep, e.tag, e.ch, e.began, e.queued.Load()
	if !e.word.CompareAndSwap(w, w&^3|stAbandoned) {
		return // the reply won the race: it is being answered
	}
	err := ErrDeadline
	if queued {
		err = ErrNoInstance
		a.stats.Rejected.Add(1)
	} else {
		a.stats.Timeouts.Add(1)
	}
	ch.count(err.Status, began)
	r := Reply{a: a, ch: ch, err: err, idx: idx, reqID: w>>2<<idBits | uint64(idx), status: err.Status, tag: tag}
	if ch.records(r.status) {
		ch.record(rep, r, began)
	}
	rep.Reply(r)
}

// Abort answers every request of the app still waiting for its chain with
// 503 (ErrShutdown) now, as its deadline would later, and ends the app's
// retries: the node calls it when its time to drain is up, so that no
// client, and no connection of the gateway, waits for a chain's deadline
// after that. The buffers come back (or not) as after a deadline.
func (a *App) Abort() {
	a.closing.Store(true) // waiting for an instance ends (await)
	for i := range a.pend {
		e := &a.pend[i]
		w := e.word.Load()
		if w&3 != stWaiting {
			continue
		}
		// As in expire: read before the compare-and-swap.
		rep, tag, ch, began := e.rep, e.tag, e.ch, e.began
		if !e.word.CompareAndSwap(w, w&^3|stAbandoned) {
			continue
		}
		e.timer.Stop()
		a.stats.Rejected.Add(1)
		ch.count(ErrShutdown.Status, began)
		rep.Reply(Reply{a: a, ch: ch, err: ErrShutdown, idx: uint32(i), reqID: w>>2<<idBits | uint64(i), status: ErrShutdown.Status, tag: tag})
	}
}

// InstanceReady tells the app that an instance became ready: requests
// waiting for one try again at once.
func (a *App) InstanceReady() {
	ch := make(chan struct{})
	if old := a.ready.Swap(&ch); old != nil {
		close(*old)
	}
}

// undispatched marks entry idx's request as not yet taken by an instance.
func (a *App) undispatched(idx uint32) { a.pend[idx].queued.Store(true) }

// await sends the buffer of d, which the gateway holds, to an instance of
// function fn once one can take it, retrying with back-off: an instance
// may be starting, restarting, or coming up from zero. When the request's
// timer answers it first, the buffer is freed and the entry with it.
func (a *App) await(fn uint16, d desc.Desc, idx uint32, reqID uint64, except uint16) {
	defer a.bg.Done()
	e := &a.pend[idx]
	want := reqID>>idBits<<2 | stWaiting
	wait := 20 * time.Microsecond
	asked := mono.Now() // Send asked when it found no instance
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		// Until the back-off passes, or an instance becomes ready (a
		// cold start's end is not left to the back-off).
		ready := a.ready.Load()
		select {
		case <-t.C:
		case <-*ready:
			t.Stop()
		}
		wait = min(2*wait, 5*time.Millisecond)
		t.Reset(wait)
		if e.word.Load() != want {
			// Answered by the timer: the buffer never left.
			a.complete(d.Buf)
			return
		}
		if a.closing.Load() {
			a.fail(d.Buf, 503, "spry: the node is shutting down")
			return
		}
		err := transport.ForwardExcept(a.pool, a.conn, fn, d, a.rot.Add(1), except)
		if err == nil || errors.Is(err, transport.ErrLost) {
			e.queued.Store(false)
			return
		}
		// Ask again now and then: an instance started for this request
		// may have been stopped again before it took it.
		if now := mono.Now(); errors.Is(err, transport.ErrNoInstance) && now-asked > int64(askAgain) {
			asked = now
			a.noInstance(fn)
		}
	}
}

// askAgain is how often a request waiting for an instance tells the
// daemon it still has none.
const askAgain = 250 * time.Millisecond

// Fail answers the request of buffer buf, which the daemon took back
// (pool.Reclaim or Seize: it holds it as pool.OwnerDaemon), with status and
// msg, or frees buf when its request is already answered.
func (a *App) Fail(buf uint32, status uint16, msg string) {
	if a.pool.Move(buf, pool.OwnerDaemon, a.id) {
		a.fail(buf, status, msg)
	}
}

// Deliver sends on buffer buf, a finished step's output, as its chain's
// graph does (the answer, when the chain is done): the daemon calls it for
// an output it took back (it holds buf as pool.OwnerDaemon) before it
// could be sent.
func (a *App) Deliver(buf uint32) {
	if a.pool.Move(buf, pool.OwnerDaemon, a.id) {
		a.route(buf)
	}
}

// Redispatch sends buffer buf, which the daemon took back (it holds it as
// pool.OwnerDaemon) before any handler ran on it, on to node hop of its
// chain (an instance of function fn), in the background. A request whose
// deadline passes first is answered 504 by its timer.
func (a *App) Redispatch(buf uint32, fn uint16, hop uint8) {
	if !a.pool.Move(buf, pool.OwnerDaemon, a.id) {
		return
	}
	if hop == pool.CallNode {
		a.send(desc.Desc{Buf: buf, Chain: a.pool.Header(buf).Chain(), Hop: pool.CallNode, Flags: desc.FlagCall}, fn)
		return
	}
	a.dispatch(buf, hop)
}
