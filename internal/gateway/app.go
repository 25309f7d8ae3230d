package gateway

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

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
	head  bool   // a HEAD request: the response has no body
	close bool   // the client asked to close after the response
	buf   uint32 // the reply buffer, set by the completer
	_     [24]byte
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
// locks its goroutine to an OS thread that sleeps in the kernel.
func (a *App) Run() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var batch [transport.MaxBatch]desc.Desc
	for {
		n, err := a.conn.Recv(batch[:])
		if err != nil {
			if errors.Is(err, transport.ErrClosed) {
				return nil
			}
			return fmt.Errorf("gateway: app %s: receive: %w", a.name, err)
		}
		for _, d := range batch[:n] {
			if d.Is(desc.FlagControl) {
				if d.Buf == desc.CtlNoInstance {
					a.noInstance(d.Chain)
					continue
				}
				a.ctl(d)
				continue
			}
			if !a.pool.Check(d.Buf, d.Gen, a.id) {
				a.pool.CountStale()
				continue
			}
			a.complete(d.Buf)
		}
	}
}

// acquire takes a free entry for a new request, or reports false when the
// app is at its in-flight bound. The entry is not completable until
// publish.
func (a *App) acquire() (idx uint32, reqID uint64, ok bool) {
	select {
	case idx = <-a.free:
	default:
		return 0, 0, false
	}
	seq := a.seq.Add(1)
	return idx, seq<<idBits | uint64(idx), true
}

// publish makes entry idx completable by request reqID, to be answered on
// connection c. Call it before the request's buffer leaves the gateway.
func (a *App) publish(idx uint32, reqID uint64, c *conn, ch *Chain, began int64, head, close bool) {
	e := &a.pend[idx]
	e.c, e.ch, e.began, e.head, e.close = c, ch, began, head, close
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
// answered. The gateway must own buf.
func (a *App) complete(buf uint32) {
	reqID := a.pool.Header(buf).ReqID()
	idx := uint32(reqID & idMask)
	if reqID == 0 || idx >= uint32(len(a.pend)) {
		a.stats.Stale.Add(1)
		a.pool.Free(buf)
		return
	}
	e := &a.pend[idx]
	seq := reqID >> idBits
	if e.word.CompareAndSwap(seq<<2|stWaiting, seq<<2|stDone) {
		e.buf = buf
		// Answer the client from here: no thread switch before the
		// response goes out.
		e.c.reply(a, idx, reqID, e)
		return
	}
	a.pool.Free(buf)
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

// Fail answers the request of buffer buf, which the daemon took back from a
// dead instance (pool.Reclaim), with status and msg, or frees buf when its
// request is already answered. The daemon must own buf.
func (a *App) Fail(buf uint32, status uint16, msg string) {
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
	d.Src = a.id
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
		if mono.Now()+int64(wait) >= deadline {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Millisecond)
	}
}

// Deliver answers the request of buffer buf with it, as if the chain had
// replied: the daemon calls it for a finished request it took back from a
// dead instance before that could reply. The daemon must own buf.
func (a *App) Deliver(buf uint32) { a.complete(buf) }

// Redispatch sends buffer buf, which the daemon took back from a dead
// instance before any handler ran on it, on to step hop of its chain (an
// instance of function fn), in the background. A request whose deadline
// passes first is answered 504.
func (a *App) Redispatch(buf uint32, fn uint16, hop uint8) {
	h := a.pool.Header(buf)
	h.SetOwner(a.id)
	d := desc.Desc{Buf: buf, Gen: h.Gen(), Chain: h.Chain(), Hop: hop}
	deadline := h.Deadline()
	go func() {
		if !a.dispatch(fn, d, deadline) {
			h.SetOwner(a.id) // dispatch left it with the gateway
			a.Fail(buf, 504, "spry: the request missed its deadline while its instance was replaced")
		}
	}()
}
