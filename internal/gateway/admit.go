package gateway

import (
	"errors"
	"strconv"
	"time"

	"github.com/spry-dev/spry/internal/auth"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/route"
	"github.com/spry-dev/spry/internal/transport"
)

// The admission path. Every protocol ends here: an adapter (HTTP/1.1 in
// conn.go, HTTP/2 and gRPC, MQTT, CloudEvents, stored async invocations,
// hops from other nodes) turns what it received into a Request and calls
// Gateway.Admit, or Begin and Admission.Send when the body arrives in
// pieces the adapter pushes. The path is, in order:
//
//	route lookup (404) → method check (405) → length check (413)
//	→ an entry of the app's in-flight table (429) → a pool buffer (503)
//	→ request metadata into the buffer header (431)
//	→ the body into the buffer (Body.ReadBody, or the adapter's pushes)
//	→ the deadline armed → the descriptor to the first step
//	   (no ready instance: retried in the background until the deadline, 503)
//	→ one Reply to the request's Replier: the chain's reply, 504 past the
//	   deadline, 502 when an instance died holding it
//
// A refused request gets an *Error (status and message) back from Admit or
// Begin and nothing of it is left in the gateway; an admitted one gets
// exactly one call of its Replier, and holds its entry (and buffer) until
// the Replier calls Reply.Done. Nothing on this path allocates.

// Body is where a request's body comes from: a socket (HTTP/1.1), a
// message already in memory (an MQTT payload, a stored record), anything
// that can write the body into the pool buffer it is given.
type Body interface {
	// ReadBody writes the whole body into dst, a pool buffer, and returns
	// its length. A body longer than dst is ErrTooLarge (413); any other
	// *Error is passed to the adapter as Admit's result (ErrSilent when
	// the client went away and gets no answer).
	ReadBody(dst []byte) (int, *Error)
}

// StreamBody is a Body that can also be read in parts: a body of unknown
// length (chunked) that grows from one buffer into the pool's large-extent
// region as it arrives, or a large one the pool holds in several extents.
// The HTTP/1.1 adapter's bodies are; an adapter whose bodies are not gets
// one contiguous room for a body of known length, and one buffer for one
// of unknown length.
type StreamBody interface {
	Body
	// ReadPart reads the next bytes of the body into dst (at most
	// len(dst), at least 1 unless the body ended) and reports how many,
	// and whether the body ended with them. Errors are ReadBody's.
	ReadPart(dst []byte) (n int, done bool, err *Error)
}

// Headers gives the admission path (and hooks on it) the request's header
// fields. Names are ASCII case-insensitive.
type Headers interface {
	// Header returns the value of field name, or nil.
	Header(name string) []byte
	// NumHeaders and HeaderAt walk every field, in the order received.
	NumHeaders() int
	HeaderAt(i int) (name, value []byte)
}

// Replier answers admitted requests. Reply is called exactly once per
// admitted request: with the chain's reply on the app's receive thread,
// with a 504 (or 503) from a timer's goroutine, with a 502 from the
// daemon's. It must not block: write what the peer takes now and finish
// the rest elsewhere. Whenever the reply is written (or given up), the
// Replier calls r.Done, once: until then the reply's buffer and the
// request's table entry stay taken.
type Replier interface {
	Reply(r Reply)
}

// Request is one request as an adapter hands it to the admission path.
// The adapter owns it and may reuse it once Admit (or Begin) returned: the
// path keeps only Reply and Tag.
type Request struct {
	// Chain, when set, is the chain to run (a trigger or a hop from
	// another node knows it); otherwise Path selects it and the method is
	// checked.
	Chain *Chain
	// Method, Path and Query go into the buffer header for the functions.
	Method, Path, Query []byte
	// ContentType of the body (nil when none).
	ContentType []byte
	// Length of the body when known before it is read, else -1. A known
	// length larger than the app's limits.maxBody is refused before
	// anything is taken (413); one larger than a pool buffer gets its room
	// in the pool's large-extent region, or a 503 at once when there is
	// none.
	Length int64
	// Headers looks up the fields the chain forwards (nil: none).
	Headers Headers
	// Body writes the body for Admit (nil: an empty body). Begin ignores
	// it: its caller writes the body itself.
	Body Body
	// Began is when the request arrived (mono ns; 0: now): the chain's
	// deadline counts from it, and so does the latency.
	Began int64
	// Deadline, when not 0, is a client's own deadline (mono ns): the
	// earlier of it and the chain's applies.
	Deadline int64
	// Hop is the step the request starts at (0: the first; a hop from
	// another node continues its chain).
	Hop uint8
	// Local keeps the request on this node's own instances of its first
	// step: a request another node handed over (internal/cluster/peer)
	// never goes on to a third node through the endpoint that stands for
	// the other nodes' instances (App.SetRemote).
	Local bool
	// Continue, when set, writes the buffer header of a chain continued
	// from another node (its metadata and the earlier hops' times, as that
	// node held them, and the join frames of the fan-outs it is a branch
	// of there) in place of Method, Path, Query and Headers. A request
	// that is a branch of another node's fan-out is answered when the
	// branch ends (its output, which that node's join takes), not when
	// the chain does.
	Continue Continuation
	// Call, when set, makes the request a call (req.Call) of function
	// Call.Callee, Call.Depth calls deep, from another node: the callee's
	// answer is the reply (Hop must be pool.CallNode).
	Call *pool.CallFrame
	// Inputs, when set, makes the request a join's, continued from
	// another node (Hop is the join): its inputs are read after the body
	// (which is the join's own, empty, payload).
	Inputs Inputs
	// Reply receives the answer; Tag comes back with it (for example, a
	// stream id, so one Replier can serve many requests at once).
	Reply Replier
	Tag   uint64

	// Out, after a refusal: the chain the request was routed to (nil for
	// none), for the adapter's Allow header (Chain.Allow).
	Routed *Chain

	// The route's parameters, as matched (reused: no allocation).
	params route.Params
	pvals  [route.MaxParams][]byte
	// later, when set (by an event loop), takes the request's descriptor
	// instead of Send sending it: the loop sends its round's descriptors
	// together at the round's end.
	later *sendQueue
}

// Continuation is the header of a chain continued from another node.
type Continuation interface {
	// WriteHeader writes the request's metadata and its earlier hops'
	// times into h, a fresh buffer's header, and reports false when they
	// do not fit (431).
	WriteHeader(h *pool.BufHeader) bool
}

// Inputs are the inputs of a join continued from another node.
type Inputs interface {
	// ReadInputs writes the join's inputs into buffers of p it allocates
	// for holder, listed in in (by the fan-out's successor; Ref{} where
	// none arrived), and returns the join's counts. On an error it frees
	// what it allocated.
	ReadInputs(p *pool.Pool, holder uint16, in []pool.Ref) (pool.JoinInfo, *Error)
}

// Errors of the admission path, with the statuses they answer with.
// Message renders them with their details.
var (
	ErrNoRoute      = &Error{Status: 404, Msg: "no chain serves "}
	ErrMethod       = &Error{Status: 405, Msg: " is not allowed on "}
	ErrInflight     = &Error{Status: 429, Msg: " is at its in-flight limit; retry later", Retry: true}
	ErrNoBuffer     = &Error{Status: 503, Msg: " has no free pool buffer; retry later", Retry: true}
	ErrNoInstance   = &Error{Status: 503, Msg: " could take the request", Retry: true}
	ErrDeadline     = &Error{Status: 504, Msg: " did not answer in time"}
	ErrTooLarge     = &Error{Status: 413, Msg: "request body larger than limits.maxBody", Close: true}
	ErrNoRoom       = &Error{Status: 503, Msg: " has no room in its pool for the request body; retry later", Retry: true, Close: true}
	ErrMetaTooLarge = &Error{Status: 431, Msg: "request line and forwarded headers do not fit the request metadata"}
	// ErrSilent: the request ends without an answer (the client is gone).
	ErrSilent = &Error{Close: true}
	// ErrShutdown: the node stopped before the chain answered (App.Abort).
	ErrShutdown = &Error{Status: 503, Msg: "the node is shutting down", Retry: true}
)

// AppendMessage appends the text the client gets for refusal e of request
// r (a trailing newline included): "spry: no chain serves /x\n".
func (r *Request) AppendMessage(dst []byte, e *Error) []byte {
	dst = append(dst, "spry: "...)
	switch e {
	case ErrNoRoute:
		dst = append(append(dst, e.Msg...), r.Path...)
	case ErrMethod:
		dst = append(append(dst, r.Method...), e.Msg...)
		if r.Routed != nil {
			dst = append(dst, r.Routed.Route...)
		}
	case ErrTooLarge:
		// Say how large, and which setting bounds it (all without
		// allocating: a refusal is on the path too).
		dst = append(dst, "request body"...)
		if r.Length >= 0 {
			dst = strconv.AppendInt(append(dst, " of "...), r.Length, 10)
			dst = append(dst, " bytes"...)
		}
		dst = append(dst, " is larger than limits.maxBody"...)
		if ch := r.Routed; ch != nil {
			dst = strconv.AppendUint(append(dst, " ("...), ch.App.maxBody, 10)
			dst = append(append(dst, " bytes) of app "...), ch.App.name...)
		}
	case ErrNoRoom:
		dst = append(dst, "app "...)
		if r.Routed != nil {
			dst = append(dst, r.Routed.App.name...)
		}
		dst = append(dst, " has no room in its pool for a request body"...)
		if r.Length >= 0 {
			dst = strconv.AppendInt(append(dst, " of "...), r.Length, 10)
			dst = append(dst, " bytes"...)
		}
		dst = append(dst, "; retry later"...)
	case ErrInflight, ErrNoBuffer:
		dst = append(dst, "app "...)
		if r.Routed != nil {
			dst = append(dst, r.Routed.App.name...)
		}
		dst = append(dst, e.Msg...)
	default:
		dst = append(dst, e.Msg...)
	}
	return append(dst, '\n')
}

// Admission is an admitted request whose body its adapter writes: Begin
// returns it, Body is the pool buffer to fill, and exactly one of Send and
// Cancel ends it.
type Admission struct {
	a         *App
	ch        *Chain
	idx       uint32
	reqID     uint64
	buf       uint32
	fn        uint16
	hop       uint8
	except    uint16 // an endpoint the first step must not go to (Request.Local)
	deadline  int64
	fill      pool.Filler // the body, when written with Room and Wrote
	filling   bool
	later     *sendQueue // Request.later
	call      bool       // Request.Call: a call of fn
	callDepth uint8
}

// Body returns the pool buffer the request's body goes into: one buffer,
// or for a body whose length Begin knew and which is larger, one
// contiguous extent of the pool that holds all of it.
func (x *Admission) Body() []byte { return x.a.pool.Room(x.buf) }

// Room returns where the next bytes of a body the adapter pushes go, when
// it may not fit Body (its length unknown, or larger than a buffer): the
// buffer grows into the pool's large-extent region as it fills. Past the
// app's limits.maxBody it is ErrTooLarge; when the pool has no room,
// ErrNoRoom. Record what was written with Wrote; Send then takes the body
// as written (its n is ignored).
func (x *Admission) Room() ([]byte, *Error) {
	if !x.filling {
		x.fill = x.a.pool.Fill(x.buf, x.a.maxBody)
		x.filling = true
	}
	b, err := x.fill.Room()
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, pool.ErrPayloadTooLarge):
		return nil, ErrTooLarge
	}
	return nil, ErrNoRoom
}

// Wrote records that the first n bytes of the last Room hold body.
func (x *Admission) Wrote(n int) { x.fill.Wrote(n) }

// Written returns how many bytes of body Room and Wrote took so far.
func (x *Admission) Written() uint64 { return x.fill.Len() }

// Chain returns the request's chain.
func (x *Admission) Chain() *Chain { return x.ch }

// Admit runs r through the whole admission path, body included (r.Body).
// It returns nil when the request is out in its chain: r.Reply will be
// called exactly once. Otherwise nothing of the request is left in the
// gateway and the error says why (r.AppendMessage renders it); the
// refusal is counted for the chain it was routed to, or for the gateway.
func (g *Gateway) Admit(r *Request) *Error {
	sb, stream := r.Body.(StreamBody)
	x, err := g.begin(r, stream)
	if err != nil {
		return err
	}
	n := 0
	if r.Body != nil {
		if stream && (r.Length < 0 || x.a.pool.Pieces(x.buf) > 1) {
			n, err = x.stream(sb, r.Length)
		} else {
			n, err = r.Body.ReadBody(x.Body())
		}
		if err != nil {
			x.Cancel()
			x.ch.count(err.Status, r.Began)
			return err
		}
	}
	if r.Inputs != nil {
		var in [pool.MaxNext]pool.Ref
		info, err := r.Inputs.ReadInputs(x.a.pool, x.a.id, in[:])
		if err != nil {
			x.Cancel()
			x.ch.count(err.Status, r.Began)
			return err
		}
		info.Width = min(info.Width, pool.MaxNext)
		x.a.pool.SetInputs(x.buf, x.a.id, in[:info.Width], info)
	}
	x.Send(n, r.ContentType)
	return nil
}

// stream reads a body in parts: into the extents Begin reserved for a body
// of known length, or, of unknown length, into the buffer and then the
// extents it grows into.
func (x *Admission) stream(sb StreamBody, length int64) (int, *Error) {
	p := x.a.pool
	if length >= 0 {
		left := length
		for i := range p.Pieces(x.buf) {
			piece := p.Piece(x.buf, i)
			for off := 0; off < len(piece); {
				k, done, err := sb.ReadPart(piece[off:])
				if err != nil {
					return 0, err
				}
				off += k
				left -= int64(k)
				if done && left > 0 {
					return 0, errShortBody
				}
			}
		}
		return int(length), nil
	}
	for {
		room, err := x.Room()
		if err == ErrTooLarge {
			// Full to the limit: the body is too large only if more of
			// it follows.
			var one [1]byte
			k, done, rerr := sb.ReadPart(one[:])
			if rerr != nil {
				return 0, rerr
			}
			if k != 0 || !done {
				return 0, ErrTooLarge
			}
			break
		}
		if err != nil {
			return 0, err
		}
		k, done, rerr := sb.ReadPart(room)
		if rerr != nil {
			return 0, rerr
		}
		x.Wrote(k)
		if done {
			break
		}
	}
	x.fill.Done()
	return int(x.fill.Len()), nil
}

// Begin admits r up to its body: the chain, an entry of the in-flight
// table, a pool buffer with the request's metadata in its header. The
// caller writes the body into x.Body() and then calls x.Send, or x.Cancel
// when the request ends before (a reset stream, a malformed body).
func (g *Gateway) Begin(r *Request) (x Admission, err *Error) { return g.begin(r, false) }

// begin is Begin; split lets a body of known length larger than a buffer
// take several extents when no run of the pool is long enough (its reader
// reads it in parts).
func (g *Gateway) begin(r *Request, split bool) (x Admission, err *Error) {
	if r.Began == 0 {
		r.Began = mono.Now()
	}
	ch := r.Chain
	r.params.N = 0
	if ch == nil {
		ch, _ = g.routes.Load().Lookup(r.Path, &r.params)
		r.Routed = ch
		if ch == nil {
			g.refused[ErrNoRoute.Status].Add(1)
			return x, ErrNoRoute
		}
		if !ch.allows(r.Method) {
			ch.count(ErrMethod.Status, r.Began)
			return x, ErrMethod
		}
		if e := ch.authorize(r); e != nil {
			return x, e
		}
	}
	r.Routed = ch
	a := ch.App
	p := a.pool
	fn := ch.First
	if r.Call != nil {
		if fn = r.Call.Callee; r.Hop != pool.CallNode || uint32(fn) >= p.Layout().Functions {
			ch.count(errBadHop.Status, r.Began)
			return x, errBadHop
		}
	} else if r.Hop > 0 {
		var ok bool
		if fn, ok = p.Step(ch.Index, int(r.Hop)); !ok {
			ch.count(errBadHop.Status, r.Began)
			return x, errBadHop
		}
	}
	if r.Length > int64(a.maxBody) {
		ch.count(ErrTooLarge.Status, r.Began)
		return x, ErrTooLarge
	}
	deadline := r.Began + int64(ch.Timeout)
	if r.Deadline != 0 && r.Deadline < deadline {
		deadline = r.Deadline
	}
	idx, reqID, ok := a.acquire(deadline)
	if !ok {
		a.stats.Rejected.Add(1)
		ch.count(ErrInflight.Status, r.Began)
		return x, ErrInflight
	}
	buf, ok := p.Alloc(a.id)
	if !ok {
		a.release(idx, reqID)
		a.stats.Rejected.Add(1)
		ch.count(ErrNoBuffer.Status, r.Began)
		return x, ErrNoBuffer
	}
	if r.Length > int64(p.BufferSize()) {
		// A large body's room is taken now, whole, or the request is
		// refused at once: never a body half written.
		if p.Reserve(buf, uint64(r.Length), split) != nil {
			p.Free(buf, a.id)
			a.release(idx, reqID)
			a.stats.Rejected.Add(1)
			ch.count(ErrNoRoom.Status, r.Began)
			return x, ErrNoRoom
		}
	}
	h := p.Header(buf)
	if r.Continue != nil {
		ok = r.Continue.WriteHeader(h)
	} else {
		ok = writeMeta(h, r, ch)
	}
	if !ok {
		p.Free(buf, a.id)
		a.release(idx, reqID)
		ch.count(ErrMetaTooLarge.Status, r.Began)
		return x, ErrMetaTooLarge
	}
	e := &a.pend[idx]
	e.rep, e.tag, e.ch, e.began = r.Reply, r.Tag, ch, r.Began
	e.queued.Store(false)
	e.foreign.Store(uint32(h.Depth())) // 0 unless Continue wrote frames
	x = Admission{a: a, ch: ch, idx: idx, reqID: reqID, buf: buf, fn: fn, hop: r.Hop, deadline: deadline, later: r.later}
	if r.Call != nil {
		x.call, x.callDepth = true, r.Call.Depth
	}
	if r.Local {
		x.except = uint16(a.remote.Load())
	}
	return x, nil
}

// writeMeta writes r's metadata into h: method, path, query, the headers
// ch forwards, the route's parameters.
func writeMeta(h *pool.BufHeader, r *Request, ch *Chain) bool {
	m := h.WriteMeta()
	ok := m.Request(r.Method, r.Path, r.Query)
	if r.Headers != nil {
		for i := 0; ok && i < len(ch.headers); i++ {
			if v := r.Headers.Header(ch.Headers[i]); v != nil {
				ok = m.Header(ch.headers[i], v)
			}
		}
	}
	if ok && r.params.N > 0 {
		for i := range r.params.N {
			s := r.params.Vals[i]
			r.pvals[i] = r.Path[s.Off : s.Off+s.N]
		}
		ok = m.Params(&r.params.Names, &r.pvals, r.params.N)
	}
	return ok
}

// authorize checks r against ch's auth: setting (counted when refused).
func (ch *Chain) authorize(r *Request) *Error {
	if ch.Auth == nil {
		return nil
	}
	var h auth.Headers = noHeaders{}
	if r.Headers != nil {
		h = r.Headers
	}
	if d := ch.Auth.Check(h, time.Now()); d != nil {
		e := authErrors[d]
		ch.count(e.Status, r.Began)
		return e
	}
	return nil
}

var errBadHop = &Error{Status: 500, Msg: "the chain has no such step"}

// authErrors are the refusals of the chains' auth checks, one per denial.
var authErrors = func() map[*auth.Denial]*Error {
	m := map[*auth.Denial]*Error{}
	for _, d := range auth.Denials {
		m[d] = &Error{Status: d.Status, Msg: d.Msg}
	}
	return m
}()

type noHeaders struct{}

func (noHeaders) Header(string) []byte { return nil }

// SetReplier makes rep (with tag) the request's Replier in place of
// Request.Reply: an adapter that answers the client itself (an
// asynchronous invocation's 202) hands the chain's reply elsewhere.
func (x *Admission) SetReplier(rep Replier, tag uint64) {
	e := &x.a.pend[x.idx]
	e.rep, e.tag = rep, tag
}

// Cancel ends an admission whose body will not be sent: its buffer and
// entry are free again.
func (x *Admission) Cancel() {
	x.a.pend[x.idx].rep = nil
	x.a.pool.Free(x.buf, x.a.id)
	x.a.release(x.idx, x.reqID)
}

// Send sends the request, whose body is the first n bytes of x.Body(),
// into its chain. From here on the Replier answers it, perhaps before
// Send returns.
func (x *Admission) Send(n int, ctype []byte) {
	a := x.a
	h := a.pool.Header(x.buf)
	if x.filling {
		x.fill.Done()
		n = int(x.fill.Len())
	}
	h.SetData(0, uint32(n))
	h.SetContentType(ctype)
	e := &a.pend[x.idx]
	h.SetReqID(x.reqID)
	h.SetChain(x.ch.Index)
	h.SetTimes(e.began, x.deadline)
	a.stats.Requests.Add(1)
	d := desc.Desc{Buf: x.buf, Chain: x.ch.Index, Hop: x.hop}
	if x.call {
		// The callee's answer returns here (graph.Return to the
		// gateway), and is the request's reply.
		h.SetCall(pool.CallFrame{Caller: a.id, Callee: x.fn, Depth: x.callDepth})
		h.SetPlace(pool.CallNode, pool.PhaseQueued)
		d.Flags = desc.FlagCall
	}
	a.publish(x.idx, x.reqID, x.deadline)
	if q := x.later; q != nil {
		q.s = append(q.s, queuedSend{a: a, d: d, fn: x.fn, idx: x.idx, reqID: x.reqID, except: x.except})
		return
	}
	a.sendFirst(d, x.fn, x.idx, x.reqID, x.except)
}

// sendFirst sends the descriptor of request idx to an instance of its
// first step fn.
func (a *App) sendFirst(d desc.Desc, fn uint16, idx uint32, reqID uint64, except uint16) {
	err := transport.ForwardExcept(a.pool, a.conn, fn, d, a.rot.Add(1), except)
	if err == nil || errors.Is(err, transport.ErrLost) {
		// Sent, or reclaimed with its instance: either way the reply
		// (or the daemon's answer) comes back through complete.
		return
	}
	if errors.Is(err, transport.ErrNoInstance) {
		a.noInstance(fn)
		// The node may have made an instance ready meanwhile (a wasm
		// function starts in its sandbox host at its first request).
		err = transport.ForwardExcept(a.pool, a.conn, fn, d, a.rot.Add(1), except)
		if err == nil || errors.Is(err, transport.ErrLost) {
			return
		}
	}
	// No instance can take it now: one may be starting, restarting or
	// coming up from zero. Retry in the background until the deadline
	// (the timer answers then), so that the adapter is free meanwhile.
	a.undispatched(idx)
	a.bg.Add(1)
	go a.await(fn, d, idx, reqID, except)
}

// A sendQueue holds the descriptors of requests admitted but not sent yet
// (Request.later): an event loop sends those of one round together, at
// its end, so that the first step is woken once for all of them and takes
// them in one read, rather than woken (or not yet asleep) for each. The
// descriptors for one endpoint go in one message (a transport.Outbox: one
// system call for them, where the transport batches).
type sendQueue struct {
	s   []queuedSend
	ob  transport.Outbox
	app *App // whose endpoint ob sends from (nil: none yet)
	// at is, for each descriptor in ob, its entry in s and the slot whose
	// queue count it raised.
	at [transport.MaxBatch]struct {
		i    int
		slot uint32
	}
}

type queuedSend struct {
	a      *App
	d      desc.Desc
	fn     uint16
	idx    uint32
	reqID  uint64
	except uint16
}

// flush sends what q holds. Each request goes to the instance Forward
// would pick; one with none, or whose batch did not go, is sent alone
// (sendFirst: a retry, the node told, the wait for an instance).
func (q *sendQueue) flush() {
	for i := range q.s {
		e := &q.s[i]
		a := e.a
		slot, id, ep, ok := a.pool.PickRouteExcept(e.fn, a.rot.Add(1), e.except)
		if !ok {
			a.sendFirst(e.d, e.fn, e.idx, e.reqID, e.except)
			continue
		}
		if q.app != a || !q.ob.Room(ep) {
			q.send()
			if q.app != a {
				q.app = a
				q.ob.Init(a.pool, a.conn)
			}
		}
		// As in transport.ForwardExcept: the queue count goes up before
		// the send.
		st := a.pool.Stats(slot)
		st.Queue.Add(1)
		d := e.d
		d.Dst = ep
		if err := q.ob.Add(d, id); err != nil {
			// Reclaimed with its instance: the daemon's answer comes
			// back through complete.
			st.Queue.Add(-1)
			continue
		}
		at := &q.at[q.ob.Len()-1]
		at.i, at.slot = i, slot
	}
	q.send()
	q.app = nil
	for i := range q.s {
		q.s[i] = queuedSend{}
	}
	q.s = q.s[:0]
}

// send sends the batch in q.ob; a request whose descriptor did not go
// (the instance full or gone: q.ob holds its buffer again) is sent alone.
func (q *sendQueue) send() {
	n := q.ob.Len()
	if n == 0 {
		return
	}
	back, _ := q.ob.Flush()
	for _, d := range back {
		for _, at := range q.at[:n] {
			if e := &q.s[at.i]; e.d.Buf == d.Buf {
				e.a.pool.Stats(at.slot).Queue.Add(-1)
				e.a.sendFirst(e.d, e.fn, e.idx, e.reqID, e.except)
				break
			}
		}
	}
}

// Reply is the answer to an admitted request, handed to its Replier: the
// chain's reply (a pool buffer), or one the gateway made (Err() != nil).
type Reply struct {
	a      *App
	ch     *Chain
	err    *Error
	idx    uint32
	reqID  uint64
	buf    uint32
	status int
	tag    uint64
	own    bool // the gateway rewrote the chain's reply (badStatus): no function headers
}

// Status returns the HTTP status of the reply.
func (r *Reply) Status() int { return r.status }

// Tag returns the request's Request.Tag.
func (r *Reply) Tag() uint64 { return r.tag }

// Chain returns the request's chain.
func (r *Reply) Chain() *Chain { return r.ch }

// Err returns the gateway's reason when it answers itself (ErrDeadline,
// or ErrNoInstance when no instance took the request before its deadline),
// or nil for a reply from the pool (the chain's, or the daemon's 502 for a
// request whose instance died). Its Retry says whether to suggest a retry.
func (r *Reply) Err() *Error { return r.err }

// Header returns the reply buffer's header (the reply's metadata), or nil
// when the gateway made the reply.
func (r *Reply) Header() *pool.BufHeader {
	if r.err != nil {
		return nil
	}
	return r.a.pool.Header(r.buf)
}

// ContentType returns the reply's media type: the one a step chose
// (Response.SetContentType), when valid, else application/octet-stream
// (never the request's own); text/plain for the gateway's own.
func (r *Reply) ContentType() []byte {
	if r.err != nil {
		return textPlain
	}
	h := r.a.pool.Header(r.buf)
	ct := h.ContentType()
	if h.Flags()&pool.FlagContentType == 0 || len(ct) == 0 || !isFieldValue(ct) {
		return octets
	}
	return ct
}

// Len returns the length of the reply's body: its pieces' (each clamped
// to the memory it may lie in, whatever its header says).
func (r *Reply) Len() int {
	if r.err != nil {
		return len(r.Body())
	}
	n := 0
	for i := range r.Pieces() {
		n += len(r.a.pool.Piece(r.buf, i))
	}
	return n
}

// Pieces returns how many contiguous pieces the reply's body has: 1, or
// more for a large body the pool holds in several extents (see Piece); 0
// for a 204 or 304 (Bodyless).
func (r *Reply) Pieces() int {
	if r.err != nil {
		return 1
	}
	if Bodyless(r.status) {
		return 0
	}
	return r.a.pool.Pieces(r.buf)
}

// Piece returns piece i of the reply's body (slices of the pool, valid
// until Done); Body is piece 0.
func (r *Reply) Piece(i int) []byte {
	if r.err != nil {
		if i == 0 {
			return r.Body()
		}
		return nil
	}
	if Bodyless(r.status) {
		return nil
	}
	return r.a.pool.Piece(r.buf, i)
}

// NextHeader returns the first response header the chain's functions set
// at or after position pos (0 to start) and the position after it, or ok
// false when there is none. Headers that are not valid HTTP, and those only
// the gateway writes (framing, Date), are skipped.
func (r *Reply) NextHeader(pos int) (name, value []byte, next int, ok bool) {
	if r.err != nil || r.own {
		return nil, nil, 0, false
	}
	h := r.a.pool.Header(r.buf)
	for {
		name, value, pos, ok = h.NextRespHeader(pos)
		if !ok || isToken(name) && isFieldValue(value) && !gatewayField(name) {
			return name, value, pos, ok
		}
	}
}

// AppendHeaders appends the chain's response headers as HTTP/1.1 fields
// ("Name: value\r\n" each). Each is checked in the copy, not in the pool:
// a process of the app may write the header meanwhile, and a CR LF written
// between a check in place and the copy would end the response head early
// (a client would then read the body up to a close that never comes).
func (r *Reply) AppendHeaders(dst []byte) []byte {
	if r.err != nil || r.own {
		return dst
	}
	h := r.a.pool.Header(r.buf)
	for name, value, pos, ok := h.NextRespHeader(0); ok; name, value, pos, ok = h.NextRespHeader(pos) {
		k := len(dst)
		dst = append(append(dst, name...), ": "...)
		v := len(dst)
		dst = append(dst, value...)
		if n := dst[k : k+len(name)]; !isToken(n) || gatewayField(n) || !isFieldValue(dst[v:]) {
			dst = dst[:k]
			continue
		}
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// AppendContentType appends the reply's media type (see ContentType),
// checked in the copy (see AppendHeaders).
func (r *Reply) AppendContentType(dst []byte) []byte {
	k := len(dst)
	dst = append(dst, r.ContentType()...)
	if !isFieldValue(dst[k:]) {
		dst = append(dst[:k], octets...)
	}
	return dst
}

// gatewayField reports whether name is a field only the gateway writes.
func gatewayField(name []byte) bool {
	for _, f := range gatewayFields {
		if pool.EqualFold(name, f) {
			return true
		}
	}
	return false
}

var gatewayFields = []string{"content-type", "content-length", "transfer-encoding", "connection", "keep-alive",
	"upgrade", "trailer", "te", "date", "proxy-connection"}

// Body returns the reply's body: a slice of the pool buffer, valid until
// Done, or the gateway's message. A body in several pieces is its first
// (see Pieces). A 204 or 304 has none (Bodyless), whatever the buffer
// holds.
func (r *Reply) Body() []byte {
	if r.err != nil {
		switch r.err {
		case ErrNoInstance:
			return r.ch.noInstanceMsg
		case ErrShutdown:
			return shutdownMsg
		}
		return r.ch.timeoutMsg
	}
	if Bodyless(r.status) {
		return nil
	}
	return r.a.pool.Data(r.buf)
}

var shutdownMsg = []byte("spry: " + ErrShutdown.Msg + "\n")

// Bodyless reports whether a response with status s has no body, nor a
// Content-Length (RFC 9110 6.4.1, 8.6: 204 and 304; the gateway never
// answers 1xx).
func Bodyless(s int) bool { return s == 204 || s == 304 }

// Done tells the gateway the reply is written (or given up): its buffer
// and the request's entry are free again. Call it exactly once.
func (r *Reply) Done() {
	if r.err != nil {
		return // the entry waits for the buffer (see App.complete)
	}
	r.a.pool.Free(r.buf, r.a.id)
	r.a.release(r.idx, r.reqID)
}
