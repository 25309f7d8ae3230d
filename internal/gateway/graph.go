package gateway

import (
	"errors"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/graph"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// The gateway's part in graphs. Steps route their own outputs (the SDK:
// direct function routing); the gateway
//
//   - collects a join's inputs: each branch of a fan-out sends its output
//     here once the branch ends (desc.FlagJoin). The request's in-flight
//     entry keeps them until the join runs — once its quorum succeeded, or
//     every branch ended, or its wait passed since the fan-out — then one
//     buffer of pool.KindJoin lists them and goes to the join step's
//     least-loaded instance; inputs that arrive later are freed;
//   - routes an output a step hands it (desc.FlagRoute: an SDK that leaves
//     graph routing to the gateway), and what the daemon takes back from a
//     process that died (Salvage), the same way the SDK would (package
//     graph).

// joinState is one join of a request while it collects its inputs.
type joinState struct {
	used    bool
	fired   bool
	node    uint8
	width   int
	of      int
	quorum  int
	arrived int
	ok      int
	wait    int64 // when it runs with what arrived (mono ns; 0: no wait)
	in      [pool.MaxNext]pool.Ref
}

// joins are a request's joins, by ordinal.
type joins [pool.MaxJoins]joinState

// getJoins takes a joins table for a request.
func (a *App) getJoins() *joins {
	a.jmu.Lock()
	defer a.jmu.Unlock()
	if n := len(a.jfree); n > 0 {
		j := a.jfree[n-1]
		a.jfree = a.jfree[:n-1]
		return j
	}
	return new(joins)
}

// putJoins frees what a request's joins still hold and returns the table.
func (a *App) putJoins(js *joins) {
	for i := range js {
		j := &js[i]
		if j.used && !j.fired {
			for _, r := range j.in[:j.width] {
				if r != (pool.Ref{}) {
					a.pool.Free(r.Idx, a.id)
				}
			}
		}
		*j = joinState{}
	}
	a.jmu.Lock()
	a.jfree = append(a.jfree, js)
	a.jmu.Unlock()
}

// join takes buffer buf, which the gateway holds, as an input of join node
// of its request.
func (a *App) join(buf uint32, node uint8) {
	p := a.pool
	h := p.Header(buf)
	if a.branchEnds(h) {
		a.complete(buf)
		return
	}
	top, inBranch := h.TopFrame()
	v, ok := p.NodeAt(h.Chain(), int(node))
	if !inBranch || !ok || !v.IsJoin() || top.Join != node || top.Width == 0 || top.Width > pool.MaxNext ||
		top.Slot >= top.Width || top.Of == 0 || top.Of > top.Width {
		// Not an input any fan-out sent (a process of the app wrote it):
		// its request fails rather than run a join on it.
		h.ClearFrames()
		a.fail(buf, 502, "spry: a join input that no fan-out sent")
		return
	}
	reqID := h.ReqID()
	idx := uint32(reqID & idMask)
	if reqID == 0 || idx >= uint32(len(a.pend)) {
		a.stats.Stale.Add(1)
		p.Free(buf, a.id)
		return
	}
	e := &a.pend[idx]
	seq := reqID >> idBits
	e.jmu.Lock()
	if w := e.word.Load(); w != seq<<2|stWaiting {
		e.jmu.Unlock()
		a.late(buf, seq, e)
		return
	}
	if e.joins == nil {
		e.joins = a.getJoins()
	}
	j := &e.joins[v.Ordinal()]
	if !j.used {
		*j = joinState{used: true, node: node, width: int(top.Width), of: int(top.Of), quorum: v.Quorum()}
		if w := v.Wait(); w > 0 {
			j.wait = top.At + int64(w)
			if j.wait < e.deadline.Load() {
				e.timer.Reset(time.Duration(j.wait - mono.Now()))
			}
		}
	}
	if j.fired || j.node != node || int(top.Slot) >= j.width || j.in[top.Slot] != (pool.Ref{}) {
		// Late (the join ran), or a second input for the same branch.
		e.jmu.Unlock()
		a.stats.LateInputs.Add(1)
		p.Free(buf, a.id)
		return
	}
	j.in[top.Slot] = pool.Ref{Idx: buf, Gen: h.Gen()}
	j.arrived++
	if inputOK(h) {
		j.ok++
	}
	var f firing
	fire := j.arrived >= j.of || (j.quorum > 0 && j.ok >= j.quorum)
	if fire {
		f = a.fire(j, buf)
	}
	e.jmu.Unlock()
	if fire {
		a.ran(&f)
	}
}

// branchEnds reports whether h, headed for a join, is the end of a
// branch of another node's fan-out (the request came with that many
// frames, Request.Continue): then it is the request's answer, which goes
// back to that node's join.
func (a *App) branchEnds(h *pool.BufHeader) bool {
	idx := h.ReqID() & idMask
	if idx >= uint64(len(a.pend)) {
		return false
	}
	f := a.pend[idx].foreign.Load()
	return f > 0 && uint32(h.Depth()) <= f
}

// firing is a join that runs: its buffer, or, when the pool had none, its
// inputs (to fail the request with).
type firing struct {
	r     uint32
	ok    bool
	node  uint8
	in    [pool.MaxNext]pool.Ref
	width int
}

// inputOK reports whether a branch's output is a success.
func inputOK(h *pool.BufHeader) bool { s := h.Status(); return s == 0 || s < 400 }

// late handles buffer buf of a request that is answered already (seq is
// its use of entry e): freed, and when the request timed out, the entry is
// free again with it (see complete).
func (a *App) late(buf uint32, seq uint64, e *pending) {
	a.stats.LateInputs.Add(1)
	a.pool.Free(buf, a.id)
	if e.word.CompareAndSwap(seq<<2|stAbandoned, seq<<2|stFree) {
		a.stats.Abandoned.Add(1)
		a.recycle(e)
		a.free <- uint32(e.idx)
	}
}

// fire makes join j's buffer: a fresh one that lists the inputs that
// arrived (they become its), with the request's identity from input from,
// popped out of the fan-out. e.jmu is held.
func (a *App) fire(j *joinState, from uint32) firing {
	p := a.pool
	j.fired = true
	f := firing{node: j.node}
	r, ok := p.Alloc(a.id)
	if !ok {
		f.in, f.width = j.in, j.width
		j.in = [pool.MaxNext]pool.Ref{}
		return f
	}
	rh := p.Header(r)
	rh.CopyMeta(p.Header(from))
	rh.PopFrame()
	rh.SetStatus(0)
	rh.SetFlags(0)
	rh.SetChosen(0)
	rh.SetContentType(nil)
	rh.SetData(0, 0)
	for _, in := range j.in[:j.width] {
		if in != (pool.Ref{}) {
			rh.MergeTimes(p.Header(in.Idx))
		}
	}
	p.SetInputs(r, a.id, j.in[:j.width], pool.JoinInfo{Of: j.of, Arrived: j.arrived, OK: j.ok})
	j.in = [pool.MaxNext]pool.Ref{}
	f.r, f.ok = r, true
	return f
}

// ran sends a join's buffer to the join step, or, when the pool had no
// buffer for it, fails the request with its first input (503).
func (a *App) ran(f *firing) {
	if f.ok {
		a.dispatch(f.r, f.node)
		return
	}
	first := true
	for _, in := range f.in[:f.width] {
		switch {
		case in == (pool.Ref{}):
		case first:
			first = false
			a.pool.Header(in.Idx).ClearFrames()
			a.stats.Rejected.Add(1)
			a.fail(in.Idx, 503, "spry: no free pool buffer to run the join; retry later")
		default:
			a.pool.Free(in.Idx, a.id)
		}
	}
}

// expireJoins runs the joins of entry e whose wait passed, and returns
// when the next one does (0: none).
func (a *App) expireJoins(e *pending, now int64) int64 {
	var next int64
	var fired [pool.MaxJoins]firing
	n := 0
	e.jmu.Lock()
	if js := e.joins; js != nil {
		for i := range js {
			j := &js[i]
			if !j.used || j.fired || j.wait == 0 {
				continue
			}
			if now >= j.wait {
				for _, in := range j.in[:j.width] {
					if in != (pool.Ref{}) {
						fired[n] = a.fire(j, in.Idx)
						n++
						break
					}
				}
				continue
			}
			if next == 0 || j.wait < next {
				next = j.wait
			}
		}
	}
	e.jmu.Unlock()
	for i := range fired[:n] {
		a.ran(&fired[i])
	}
	return next
}

// recycle gives back entry e's joins when its request ends.
func (a *App) recycle(e *pending) {
	e.jmu.Lock()
	js := e.joins
	e.joins = nil
	e.jmu.Unlock()
	if js != nil {
		a.putJoins(js)
	}
}

// dispatch sends buffer b, which the gateway holds, to node's function
// (in the background while no instance can take it).
func (a *App) dispatch(b uint32, node uint8) {
	h := a.pool.Header(b)
	fn, ok := a.pool.Step(h.Chain(), int(node))
	if !ok {
		a.fail(b, 502, "spry: "+graph.ErrBadGraph.Error())
		return
	}
	h.SetPlace(node, pool.PhaseQueued)
	h.SetSent(mono.Now())
	a.send(desc.Desc{Buf: b, Chain: h.Chain(), Hop: node}, fn)
}

// send forwards d (its buffer the gateway's) to function fn's least-loaded
// instance, or keeps trying in the background.
func (a *App) send(d desc.Desc, fn uint16) {
	err := transport.Forward(a.pool, a.conn, fn, d, a.rot.Add(1))
	if err == nil || errors.Is(err, transport.ErrLost) {
		return
	}
	if errors.Is(err, transport.ErrNoInstance) {
		a.noInstance(fn)
	}
	reqID := a.pool.Header(d.Buf).ReqID()
	if reqID == 0 || reqID&idMask >= uint64(len(a.pend)) {
		a.stats.Stale.Add(1) // a header a process of the app wrote over
		a.pool.Free(d.Buf, a.id)
		return
	}
	a.bg.Add(1)
	go a.await(fn, d, uint32(reqID&idMask), reqID, 0)
}

// route sends on buffer buf, which the gateway holds and whose step is
// done, where its chain's graph sends it.
func (a *App) route(buf uint32) {
	p := a.pool
	h := p.Header(buf)
	h.SetPlace(h.Node(), pool.PhaseDone)
	r, err := graph.Next(p, buf)
	if err != nil {
		a.fail(buf, 502, "spry: "+err.Error())
		return
	}
	switch r.Kind {
	case graph.Reply:
		a.complete(buf)
	case graph.Join:
		h.SetPlace(r.Node, pool.PhaseQueued)
		a.join(buf, r.Node)
	case graph.Return:
		a.returnTo(buf, r.Dst)
	case graph.Forward:
		a.dispatch(buf, r.Node)
	case graph.FanOut:
		var bs [pool.MaxNext]graph.Branch
		branches, err := graph.Split(p, a.id, buf, r, mono.Now(), &bs)
		if err != nil {
			a.fail(buf, 503, "spry: no free pool buffer for the branches of a fan-out")
			return
		}
		for _, b := range branches {
			if b.Join {
				a.join(b.Buf, b.Node)
			} else {
				a.dispatch(b.Buf, b.Node)
			}
		}
	}
}

// returnTo sends a call's answer, which the gateway holds, to its caller;
// an answer whose caller is gone is freed.
func (a *App) returnTo(buf uint32, caller uint16) {
	if caller == a.id {
		a.complete(buf) // a call another node made (Request.Call): the answer is the reply
		return
	}
	d := desc.Desc{Dst: caller, Buf: buf, Chain: a.pool.Header(buf).Chain(), Hop: pool.CallNode, Flags: desc.FlagReturn}
	for wait := 20 * time.Microsecond; wait < time.Second; wait *= 2 {
		err := transport.Pass(a.pool, a.conn, d)
		switch {
		case err == nil || errors.Is(err, transport.ErrLost):
			return
		case errors.Is(err, transport.ErrFull):
			time.Sleep(wait)
			continue
		}
		break
	}
	a.pool.Free(buf, a.id)
}

// fail ends buffer buf's part of its request (the gateway holds it) with
// status and msg: a branch's join gets it as a failed input, a call's
// caller as a failed answer, otherwise the client.
func (a *App) fail(buf uint32, status uint16, msg string) {
	p := a.pool
	p.Clear(buf, a.id) // its payload may be shared: the message goes in its own
	h := p.Header(buf)
	n := copy(p.Buffer(buf), msg)
	h.SetData(0, uint32(n))
	h.SetReplyContentType("text/plain; charset=utf-8")
	h.SetStatus(status)
	h.SetFlags(h.Flags() | pool.FlagStop)
	h.SetChosen(0)
	a.stats.Failed.Add(1)
	h.SetPlace(h.Node(), pool.PhaseDone)
	r, err := graph.Next(p, buf)
	switch {
	case err != nil || r.Kind == graph.Reply:
		a.complete(buf)
	case r.Kind == graph.Join:
		h.SetPlace(r.Node, pool.PhaseQueued)
		a.join(buf, r.Node)
	case r.Kind == graph.Return:
		a.returnTo(buf, r.Dst)
	default:
		a.complete(buf)
	}
}

// Salvage handles the buffers the daemon took back (pool.Reclaim, Seize:
// it holds them as pool.OwnerDaemon) from an endpoint that is gone, so
// that each request goes on or is answered, and none is lost:
//
//   - a buffer half shared (its fan-out died publishing it) is shared
//     fully, one whose readers are all gone freed; a token its fan-out
//     never published is freed (its fan-out's output, taken back too,
//     fans out again);
//   - one sent to a step that had not run it goes to another instance of
//     that step (or, a call, of the called function);
//   - one a handler was running on fails with 502 and msg (running it
//     again could repeat its effects): its join gets a failed input, its
//     caller a failed answer, or the client the 502;
//   - a step's output goes on where the graph sends it.
//
// Tokens go first: whether a token is real depends on its shared buffer,
// which may be among the others and fan out again.
func (a *App) Salvage(bufs []uint32, msg string) {
	p := a.pool
	for pass := 0; pass < 2; pass++ {
		for _, b := range bufs {
			if _, token := p.Reads(b); token != (pass == 0) {
				continue
			}
			a.salvage(b, msg)
		}
	}
}

func (a *App) salvage(b uint32, msg string) {
	p := a.pool
	switch {
	case p.Shared(b):
		p.CompleteShare(b, pool.OwnerDaemon)
		return
	case p.Unshared(b):
		p.Free(b, pool.OwnerDaemon)
		return
	case !p.TokenLive(b):
		p.Free(b, pool.OwnerDaemon)
		return
	}
	if !p.Move(b, pool.OwnerDaemon, a.id) {
		return
	}
	h := p.Header(b)
	if h.ReqID() == 0 {
		a.stats.Stale.Add(1)
		p.Free(b, a.id)
		return
	}
	switch h.Phase() {
	case pool.PhaseQueued:
		if h.Node() == pool.CallNode {
			if c := h.Call(); c.Caller != 0 {
				a.send(desc.Desc{Buf: b, Chain: h.Chain(), Hop: pool.CallNode, Flags: desc.FlagCall}, c.Callee)
				return
			}
		}
		if _, ok := p.NodeAt(h.Chain(), int(h.Node())); ok {
			a.dispatch(b, h.Node())
			return
		}
		a.fail(b, 502, msg)
	case pool.PhaseRunning:
		a.fail(b, 502, msg)
	default:
		a.route(b)
	}
}
