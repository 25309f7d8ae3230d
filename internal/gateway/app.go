package gateway

import (
	"errors"
	"fmt"
	"runtime"
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
	pool       *pool.Pool
	conn       transport.Conn
	id         uint16
	pend       []pending
	free       chan uint32 // indexes of free entries
	seq        atomic.Uint64
	rot        atomic.Uint32
	ctl        func(desc.Desc)
	noInstance func(fn uint16)
	stats      AppStats
	// bg counts the app's goroutines that use the pool outside a
	// connection's own (redispatches, the ends of partial writes): Close
	// waits for them, so the pool is never unmapped under them.
	bg      sync.WaitGroup
	closing atomic.Bool
	gate    atomic.Bool // Quiesce holds every entry: admissions wait a moment
	held    []uint32    // the entries Quiesce holds (the daemon's sweep only)
}

// idBits is the width of the entry index in a request id: enough for the
// largest pool, whose buffers bound the requests in flight.
const idBits = 20

const idMask = 1<<idBits - 1

// Entry states, in the low two bits of pending.word; the sequence number of
// the request that holds the entry is in the bits above.
const (
	stFree      = iota // not in use
	stWaiting          // a connection waits for the reply
	stDone             // the reply (or a failure) was handed to the connection
	stAbandoned        // the connection gave up (timeout); the buffer is still out
)

// pending is one entry of the in-flight table.
//
// word changes only by compare-and-swap against (seq, state) of the request
// that holds the entry, so a completion for an older use of the same entry
// can never succeed (no ABA: seq never repeats). The other fields are
// written by the connection before publish stores stWaiting, and read by
// the completer after its compare-and-swap from stWaiting succeeds, which
// orders them.
type pending struct {
	word  atomic.Uint64
	c     *conn  // the connection that answers the request
	ch    *Chain // its chain, for the response's counters
	began int64  // when its head arrived (mono ns)
	dl    int64  // its deadline (mono ns)
	head  bool   // a HEAD request: the response has no body
	close bool   // the client asked to close after the response
	buf   uint32 // the reply buffer, set by the completer
	_     [16]byte
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
}

// AppConfig configures an App.
type AppConfig struct {
	Name     string
	Pool     *pool.Pool
	Conn     transport.Conn // the gateway's endpoint in the app's fabric
	Inflight int            // requests in flight at once (<= buffers)
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
	a := &App{
		name: c.Name, pool: c.Pool, conn: c.Conn, id: c.Conn.ID(), ctl: c.Control, noInstance: c.NoInstance,
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
		a.free <- uint32(i)
	}
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

// Inflight returns the number of table entries in use: requests waiting
// for a reply plus timed-out requests whose buffer is not back yet.
func (a *App) Inflight() int { return len(a.pend) - len(a.free) }

// Run receives the app's descriptors until the endpoint is closed: replies
// complete their requests, control messages go to AppConfig.Control. It
// locks its goroutine to an OS thread that sleeps in the kernel. A receive
// error other than the endpoint's closing does not end it: every reply of
// the app comes through here.
func (a *App) Run() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var batch [transport.MaxBatch]desc.Desc
	pause := time.Millisecond
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
		for _, d := range batch[:n] {
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
			a.complete(d.Buf)
		}
	}
}

// Quiesce runs fn while the app has no request in flight and admits none
// (new requests wait up to 10 ms), and reports whether it could: then no
// buffer of the app may legitimately be held by anyone. The daemon repairs
// the pool's free list under it.
func (a *App) Quiesce(fn func()) bool {
	if a.Inflight() != 0 {
		return false
	}
	a.gate.Store(true)
	defer a.gate.Store(false)
	got := 0
	defer func() {
		for ; got > 0; got-- {
			a.free <- a.held[got-1]
		}
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

// Close makes the app's background work end and waits for it: after it
// returns nothing of the app's gateway touches the pool except the
// connections' own goroutines (stopped by the server's shutdown) and Run
// (ended by closing the endpoint).
func (a *App) Close() {
	a.closing.Store(true)
	a.bg.Wait()
}

// acquire takes a free entry for a new request, or reports false when the
// app is at its in-flight bound. The entry is not completable until
// publish.
func (a *App) acquire() (idx uint32, reqID uint64, ok bool) {
	select {
	case idx = <-a.free:
	default:
		if !a.gate.Load() {
			return 0, 0, false
		}
		// The daemon holds the table for a repair (Quiesce): wait for it.
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case idx = <-a.free:
			t.Stop()
		case <-t.C:
			return 0, 0, false
		}
	}
	seq := a.seq.Add(1)
	return idx, seq<<idBits | uint64(idx), true
}

// publish makes entry idx completable by request reqID, to be answered on
// connection c. Call it before the request's buffer leaves the gateway.
func (a *App) publish(idx uint32, reqID uint64, c *conn, ch *Chain, began, deadline int64, head, close bool) {
	e := &a.pend[idx]
	e.c, e.ch, e.began, e.dl, e.head, e.close = c, ch, began, deadline, head, close
	// The store of stWaiting under the request's seq orders the fields
	// above before a completer's compare-and-swap.
	e.word.Store(reqID>>idBits<<2 | stWaiting)
}

// release returns an entry whose request is finished.
func (a *App) release(idx uint32, reqID uint64) {
	e := &a.pend[idx]
	e.c = nil
	e.word.Store(reqID>>idBits<<2 | stFree)
	a.free <- idx
}

// complete hands buffer buf, which came back from the app's chain, to the
// request it belongs to, or frees it when that request is already
// answered. The gateway must hold buf.
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
	if e.word.CompareAndSwap(seq<<2|stWaiting, seq<<2|stDone) {
		crash.Point("gateway.completed")
		e.buf = buf
		if e.dl != 0 && mono.Now() > e.dl {
			// Past the deadline the answer is 504, whoever completes
			// the request: the timer (expire) or this late reply.
			a.stats.Timeouts.Add(1)
			n := copy(a.pool.Buffer(buf), e.ch.timeoutMsg)
			h.SetData(0, uint32(n))
			h.SetContentTypeString("text/plain; charset=utf-8")
			h.SetStatus(504)
		}
		// Answer the client from here: no thread switch before the
		// response goes out.
		e.c.reply(a, idx, reqID, e)
		return
	}
	a.pool.Free(buf, a.id)
	if e.word.CompareAndSwap(seq<<2|stAbandoned, seq<<2|stFree) {
		a.stats.Abandoned.Add(1)
		e.c = nil
		a.free <- idx
		return
	}
	a.stats.Stale.Add(1)
}

// abandon gives up on a request whose deadline passed. It reports false
// when the reply won the race (it is being answered).
func (a *App) abandon(idx uint32, reqID uint64) bool {
	seq := reqID >> idBits
	return a.pend[idx].word.CompareAndSwap(seq<<2|stWaiting, seq<<2|stAbandoned)
}

// Fail answers the request of buffer buf, which the daemon took back
// (pool.Reclaim or Seize: it holds it as pool.OwnerDaemon), with status and
// msg, or frees buf when its request is already answered.
func (a *App) Fail(buf uint32, status uint16, msg string) {
	if !a.pool.Move(buf, pool.OwnerDaemon, a.id) {
		return // not the daemon's (anymore): not ours to answer
	}
	a.fail(buf, status, msg)
}

// fail is Fail for a buffer the gateway holds.
func (a *App) fail(buf uint32, status uint16, msg string) {
	h := a.pool.Header(buf)
	n := copy(a.pool.Buffer(buf), msg)
	h.SetData(0, uint32(n))
	h.SetContentTypeString("text/plain; charset=utf-8")
	h.SetStatus(status)
	h.SetFlags(h.Flags() | pool.FlagStop)
	a.stats.Failed.Add(1)
	a.complete(buf)
}

// dispatch sends the buffer of d, which the gateway holds, to an instance
// of function fn. When no instance can take it now it retries until the
// deadline (mono ns): an instance may be starting, restarting, or coming
// up from zero. It reports false when the deadline passed first.
func (a *App) dispatch(fn uint16, d desc.Desc, deadline int64) bool {
	wait := 20 * time.Microsecond
	asked := false
	for {
		err := transport.Forward(a.pool, a.conn, fn, d, a.rot.Add(1))
		if err == nil || errors.Is(err, transport.ErrLost) {
			// Sent, or reclaimed with its instance: either way the reply
			// (or the daemon's answer) comes back through complete.
			return true
		}
		if errors.Is(err, transport.ErrNoInstance) && !asked {
			asked = true
			a.noInstance(fn)
		}
		if mono.Now()+int64(wait) >= deadline || a.closing.Load() {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Millisecond)
	}
}

// Deliver answers the request of buffer buf with it, as if the chain had
// replied: the daemon calls it for a finished request it took back (it
// holds buf as pool.OwnerDaemon) before that could reply.
func (a *App) Deliver(buf uint32) {
	if a.pool.Move(buf, pool.OwnerDaemon, a.id) {
		a.complete(buf)
	}
}

// Redispatch sends buffer buf, which the daemon took back (it holds it as
// pool.OwnerDaemon) before any handler ran on it, on to step hop of its
// chain (an instance of function fn), in the background. A request whose
// deadline passes first is answered 504; one still waiting when the app
// closes, 503.
func (a *App) Redispatch(buf uint32, fn uint16, hop uint8) {
	if !a.pool.Move(buf, pool.OwnerDaemon, a.id) {
		return
	}
	h := a.pool.Header(buf)
	d := desc.Desc{Buf: buf, Chain: h.Chain(), Hop: hop}
	deadline := h.Deadline()
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		if a.dispatch(fn, d, deadline) {
			return
		}
		if a.closing.Load() {
			a.fail(buf, 503, "spry: the node is shutting down")
			return
		}
		a.fail(buf, 504, "spry: the request missed its deadline while its instance was replaced")
	}()
}
