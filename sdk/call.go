//go:build !wasip1

package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// Calls.
//
// A handler calls another function of its app with Request.Call (or starts
// several with Go and waits for each with Future.Wait): the payload goes
// into a buffer of the pool, and a descriptor to the called function's
// least-loaded instance, as a chain's hop would (not through the gateway).
// That instance runs its handler on it and sends the output back to the
// caller's endpoint; the caller's receive loop hands it to the waiting
// call. The answer is a view of the pool, valid until the caller's handler
// returns.
//
// A handler waiting for a call keeps its instance serving: with
// concurrency 1 its thread receives meanwhile (the answer, and requests,
// which it runs nested on top of the waiting handler); with more, a worker
// waiting for a call runs other requests that arrive. So calls that go
// round in a cycle (A calls B, which calls A) are served, and an instance
// whose every handler waits does not stop the node. concurrency bounds the
// handlers that run, not those that wait. Every call carries its request's
// deadline (or the context's, when earlier): past it, Wait returns a 504
// and the answer, if it comes, is dropped. Calls nest at most MaxCallDepth
// deep (a cycle that never ends is a 508).

// MaxCallDepth is how deeply calls nest.
const MaxCallDepth = 32

// Call states.
const (
	callFree uint32 = iota
	callWaiting
	callDone
	callAbandoned
)

const (
	tagBits  = 12
	maxCalls = 1 << tagBits // calls in flight per instance
	maxNest  = 16           // requests run nested on a waiting handler's thread
)

// callEntry is one call in flight, reused.
type callEntry struct {
	seq   atomic.Uint32
	state atomic.Uint32
	buf   atomic.Uint32 // the answer, once done
	fn    uint16
	ch    chan struct{} // signalled when done
	timer *time.Timer   // a worker's wait for the deadline
	wake  *time.Timer   // wakes the receive thread at the deadline (concurrency 1)
}

// callTable is an instance's calls in flight.
type callTable struct {
	s    *instance
	mu   sync.Mutex
	free []uint16
	n    int // entries made
	e    [maxCalls]atomic.Pointer[callEntry]
	seq  atomic.Uint32
}

// callRef names one use of a call entry.
type callRef struct{ idx, seq uint32 }

func (t *callTable) init(s *instance) { t.s = s }

// get takes a free entry, marked waiting.
func (t *callTable) get() (*callEntry, callRef, bool) {
	t.mu.Lock()
	var idx uint16
	switch {
	case len(t.free) > 0:
		idx = t.free[len(t.free)-1]
		t.free = t.free[:len(t.free)-1]
	case t.n < maxCalls:
		idx = uint16(t.n)
		t.n++
		s := t.s
		e := &callEntry{ch: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
		e.timer.Stop()
		e.wake = time.AfterFunc(time.Hour, func() {
			s.c.Send(desc.Desc{Dst: s.id, Src: s.id, Buf: desc.CtlWake, Flags: desc.FlagControl})
		})
		e.wake.Stop()
		t.e[idx].Store(e)
	default:
		t.mu.Unlock()
		return nil, callRef{}, false
	}
	t.mu.Unlock()
	e := t.e[idx].Load()
	seq := t.seq.Add(1) & (1<<(32-tagBits) - 1)
	e.seq.Store(seq)
	select { // a signal left from the entry's last use
	case <-e.ch:
	default:
	}
	e.state.Store(callWaiting)
	return e, callRef{uint32(idx), seq}, true
}

func (t *callTable) entry(c callRef) *callEntry {
	e := t.e[c.idx%maxCalls].Load()
	if e == nil || e.seq.Load() != c.seq {
		return nil
	}
	return e
}

// put frees an entry.
func (t *callTable) put(c callRef) {
	e := t.entry(c)
	if e == nil {
		return
	}
	e.timer.Stop()
	e.wake.Stop()
	e.seq.Store(0)
	e.state.Store(callFree)
	t.mu.Lock()
	t.free = append(t.free, uint16(c.idx))
	t.mu.Unlock()
}

// complete hands answer buf (accepted) to its call, on the receive thread;
// an answer nobody waits for any more is freed.
func (t *callTable) complete(buf uint32) {
	p := t.s.p
	tag := p.Header(buf).Call().Tag
	c := callRef{tag % maxCalls, tag >> tagBits}
	if e := t.entry(c); e != nil && e.state.Load() == callWaiting {
		e.buf.Store(buf)
		if e.state.CompareAndSwap(callWaiting, callDone) {
			select {
			case e.ch <- struct{}{}:
			default:
			}
			return
		}
	}
	p.Free(buf, t.s.id)
}

// abandon drops call c of a handler that ended without waiting for it:
// its answer, if it came, is freed; if it comes, it will be.
func (t *callTable) abandon(c callRef) {
	e := t.entry(c)
	if e == nil {
		return
	}
	if !e.state.CompareAndSwap(callWaiting, callAbandoned) && e.state.Load() == callDone {
		t.s.p.Free(e.buf.Load(), t.s.id)
	}
	t.put(c)
}

// abandonAll wakes every waiting call with no answer (the instance stops).
func (t *callTable) abandonAll() {
	for i := range t.n {
		if e := t.e[i].Load(); e != nil && e.state.CompareAndSwap(callWaiting, callAbandoned) {
			select {
			case e.ch <- struct{}{}:
			default:
			}
		}
	}
}

// Future is a call started with Go: Wait returns its answer.
type Future struct {
	r   *Request
	c   callRef
	fn  string
	err error
}

// Call calls function fn of this app with payload and returns its answer
// (a view of the pool, valid until this handler returns). The called
// function runs its handler on the payload as a step would, and its output
// is the answer; if it fails (an error, a status of 400 or more, its
// instance dying) the error is an *Error with its status and message.
// ctx can set an earlier deadline than the request's; the request's
// deadline bounds the call in any case.
func (r *Request) Call(ctx context.Context, fn string, payload []byte) ([]byte, error) {
	f := r.Go(ctx, fn, payload)
	return f.Wait()
}

// Go starts a call of function fn with payload, as Call does, and returns
// at once: start several, then Wait for each. Calls a handler starts and
// does not wait for are dropped when it returns.
func (r *Request) Go(ctx context.Context, fn string, payload []byte) Future {
	f := Future{r: r, fn: fn}
	s := r.s
	if s == nil || s.c == nil {
		f.err = &Error{Status: 502, Msg: "sdk: calls need a node (Invoke and Runner run one handler alone)"}
		return f
	}
	p := s.p
	fi, ok := p.FunctionByName(fn)
	if !ok {
		f.err = &Error{Status: 502, Msg: fmt.Sprintf("sdk: call to %q: no function of that name in this app", fn)}
		return f
	}
	depth := int(r.h.Call().Depth) + 1
	if depth > MaxCallDepth {
		f.err = &Error{Status: 508, Msg: fmt.Sprintf("sdk: call to %s nested %d deep: a cycle of calls that does not end?", fn, depth)}
		return f
	}
	if err := ctx.Err(); err != nil {
		f.err = &Error{Status: 504, Msg: "sdk: call to " + fn + ": " + err.Error()}
		return f
	}
	deadline := r.h.Deadline()
	if dl, ok := ctx.Deadline(); ok {
		if d := mono.Now() + int64(time.Until(dl)); deadline == 0 || d < deadline {
			deadline = d
		}
	}
	e, c, ok := s.calls.get()
	if !ok {
		f.err = &Error{Status: 503, Msg: "sdk: too many calls in flight in this instance"}
		return f
	}
	f.c = c
	e.fn = fi
	buf, ok := p.Alloc(s.id)
	if !ok {
		s.calls.put(c)
		f.err = ErrPoolExhausted
		return f
	}
	h := p.Header(buf)
	h.CopyMeta(r.h)
	h.SetStatus(0)
	h.SetFlags(0)
	h.SetChosen(0)
	h.ClearFrames()
	h.SetCall(pool.CallFrame{Caller: s.id, Callee: fi, Depth: uint8(depth), Tag: c.idx | c.seq<<tagBits})
	h.SetTimes(h.Ingress(), deadline)
	if err := putPayload(p, buf, payload); err != nil {
		p.Free(buf, s.id)
		s.calls.put(c)
		f.err = err
		return f
	}
	h.SetPlace(pool.CallNode, pool.PhaseQueued)
	h.SetSent(mono.Now())
	r.calls = append(r.calls, c)
	d := desc.Desc{Buf: buf, Chain: h.Chain(), Hop: pool.CallNode, Flags: desc.FlagCall}
	asked := false
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		err := transport.Forward(p, s.c, fi, d, s.rot.Add(1))
		if err == nil || errors.Is(err, transport.ErrLost) {
			return f // sent, or the daemon answers it (its instance died)
		}
		if errors.Is(err, transport.ErrNoInstance) && !asked {
			asked = true
			s.c.Send(desc.Desc{Dst: p.Gateway(), Src: s.id, Buf: desc.CtlNoInstance, Chain: fi, Flags: desc.FlagControl})
		}
		if mono.Now() > deadline || s.stop.Load() {
			p.Free(buf, s.id)
			f.err = &Error{Status: 503, Msg: "sdk: no instance of " + fn + " could take the call"}
			return f
		}
		time.Sleep(wait)
	}
}

// putPayload writes payload into buffer buf's (held) payload area.
func putPayload(p *pool.Pool, buf uint32, payload []byte) error {
	if err := p.Reserve(buf, uint64(len(payload)), true); err != nil {
		return fmt.Errorf("%w: no room for a payload of %d bytes", ErrPoolExhausted, len(payload))
	}
	n := 0
	for i := range p.Pieces(buf) {
		n += copy(p.Piece(buf, i), payload[n:])
	}
	return nil
}

// Wait waits for the call's answer and returns it (see Call). Wait once.
func (f Future) Wait() ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	r := f.r
	s := r.s
	t := &s.calls
	e := t.entry(f.c)
	if e == nil {
		return nil, &Error{Status: 502, Msg: "sdk: call to " + f.fn + " waited for twice, or after its handler returned"}
	}
	deadline := r.h.Deadline()
	s.wait(e, deadline)
	if !e.state.CompareAndSwap(callWaiting, callAbandoned) && e.state.Load() == callDone {
		buf := e.buf.Load()
		r.held = append(r.held, buf)
		r.dropCall(f.c)
		t.put(f.c)
		return answer(r, buf)
	}
	r.dropCall(f.c)
	t.put(f.c)
	if s.stop.Load() {
		return nil, &Error{Status: 503, Msg: "sdk: call to " + f.fn + ": the instance is stopping"}
	}
	return nil, &Error{Status: 504, Msg: "sdk: call to " + f.fn + ": no answer before the request's deadline"}
}

func (r *Request) dropCall(c callRef) {
	for i, x := range r.calls {
		if x == c {
			r.calls = append(r.calls[:i], r.calls[i+1:]...)
			return
		}
	}
}

// answer returns a call's answer, or its failure.
func answer(r *Request, buf uint32) ([]byte, error) {
	p := r.p
	h := p.Header(buf)
	var body []byte
	if p.Pieces(buf) == 1 {
		body = p.Data(buf)
	} else {
		body = r.gather(buf)
	}
	if s := int(h.Status()); s >= 400 {
		return body, &Error{Status: s, Msg: string(body)}
	}
	return body, nil
}

// wait waits until call e is answered, or its deadline passes, serving
// meanwhile (see Calls above).
func (s *instance) wait(e *callEntry, deadline int64) {
	left := time.Duration(deadline - mono.Now())
	if deadline == 0 {
		left = time.Hour
	}
	if left <= 0 {
		return
	}
	if s.work == nil && s.onRecvThread() {
		s.waitRecv(e, deadline, left)
		return
	}
	e.timer.Reset(left)
	defer e.timer.Stop()
	work := s.work
	var w *worker
	for e.state.Load() == callWaiting {
		select {
		case <-e.ch:
		case <-e.timer.C:
			return
		case d, ok := <-work:
			if !ok {
				work = nil
				continue
			}
			// Serve while waiting: this is what keeps calls that go
			// round a cycle from waiting for each other forever.
			if w == nil {
				w = new(worker)
			}
			w.step(s, d)
		}
	}
}

// waitRecv is wait on the receive thread (concurrency 1): it receives, and
// runs what arrives nested on top of the waiting handler.
func (s *instance) waitRecv(e *callEntry, deadline int64, left time.Duration) {
	e.wake.Reset(left)
	defer e.wake.Stop()
	var batch [transport.MaxBatch]desc.Desc
	for e.state.Load() == callWaiting && mono.Now() < deadline && !s.stop.Load() {
		n, err := s.c.Recv(batch[:])
		if err != nil {
			return
		}
		for _, d := range batch[:n] {
			if !s.take(d) {
				continue
			}
			if s.nest < maxNest {
				s.run(d)
			} else {
				s.backlog = append(s.backlog, d)
			}
		}
	}
}
