//go:build !wasip1

package sdk

import (
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
)

// Request is the input of one step. Its payload and metadata are views into
// the app's shared-memory pool: nothing was copied to give them to you, and
// they are valid only until the handler returns (copy what you keep).
type Request struct {
	s     *instance // nil outside a node (Invoke, Runner)
	p     *pool.Pool
	buf   uint32
	h     *pool.BufHeader
	hop   int
	steps int
	// What the step holds besides its input, freed when it ends: the
	// answers of its calls, a gathered copy of a payload in pieces.
	held     []uint32
	calls    []callRef
	gathered []byte
}

func (r *Request) reset(s *instance, buf uint32, node uint8) {
	held, calls := r.held[:0], r.calls[:0]
	*r = Request{s: s, p: s.p, buf: buf, h: s.p.Header(buf), hop: int(node), held: held, calls: calls}
	r.steps = r.p.Steps(r.h.Chain())
}

// end frees what the step held: its calls' answers (and the calls it did
// not wait for: their answers are dropped when they come).
func (r *Request) end() {
	for _, c := range r.calls {
		r.s.calls.abandon(c)
	}
	for _, b := range r.held {
		r.p.Free(b, r.self())
	}
	r.held, r.calls, r.gathered = r.held[:0], r.calls[:0], nil
}

func (r *Request) self() uint16 {
	if r.s != nil {
		return r.s.id
	}
	return runnerSelf
}

// Payload returns the request body as this step received it: the client's
// body at the first step, the previous step's output after that. It is one
// contiguous slice of the pool, however large. A body the pool had to
// store in several pieces (only when its free space was fragmented, see
// Segments) is gathered into one the first time you ask: use Segments to
// avoid that copy. A join's own payload is empty: its inputs are Input(i).
func (r *Request) Payload() []byte {
	if r.p.Pieces(r.buf) == 1 {
		return r.p.Data(r.buf)
	}
	if r.gathered == nil {
		r.gathered = r.gather(r.buf)
	}
	return r.gathered
}

// gather copies the pieces of buffer buf's payload into a fresh extent the
// step holds until it ends, and returns it (nil when the pool has no room).
func (r *Request) gather(buf uint32) []byte {
	p := r.p
	g, ok := p.Alloc(r.self())
	if !ok {
		return nil
	}
	if p.Reserve(g, p.Size(buf), false) != nil {
		p.Free(g, r.self())
		return nil
	}
	r.held = append(r.held, g)
	out := p.Data(g)
	n := 0
	for i := range p.Pieces(buf) {
		n += copy(out[n:], p.Piece(buf, i))
	}
	return out
}

// Len returns the length of the payload.
func (r *Request) Len() int { return int(r.p.Size(r.buf)) }

// Segments returns the payload's contiguous pieces, in order, without
// copying: one for a payload that is one slice of the pool (nearly
// always), several for a large one the pool holds in several extents.
//
//	for seg := range req.Segments() { h.Write(seg) }
func (r *Request) Segments() iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for i := range r.p.Pieces(r.buf) {
			if !yield(r.p.Piece(r.buf, i)) {
				return
			}
		}
	}
}

// NumSegments and Segment are Segments without an iterator.
func (r *Request) NumSegments() int { return r.p.Pieces(r.buf) }

// Segment returns the i-th piece of the payload (see Segments).
func (r *Request) Segment(i int) []byte { return r.p.Piece(r.buf, i) }

// Method returns the HTTP method of the client's request.
func (r *Request) Method() string { m, _, _ := r.h.Request(); return view(m) }

// Path returns the request path (not unescaped). On a route that ends in
// /* it is the rest of the path that the * matched, from its slash
// ("/css/site.css" for /static/css/site.css on /static/*; "/" when
// nothing is left), as a file server mounted there wants it; FullPath is
// the whole path.
func (r *Request) Path() string {
	if rest := r.h.Param("*"); rest != nil {
		if len(rest) == 0 {
			return "/"
		}
		return view(rest)
	}
	_, p, _ := r.h.Request()
	return view(p)
}

// FullPath returns the whole request path, as the client sent it (not
// unescaped).
func (r *Request) FullPath() string { _, p, _ := r.h.Request(); return view(p) }

// Param returns the value of the route's parameter name ({name} in the
// chain's route), as it appears in the path (not unescaped), or "" when the
// route has no such parameter.
func (r *Request) Param(name string) string { return view(r.h.Param(name)) }

// Query returns the raw query string, without the '?'.
func (r *Request) Query() string { _, _, q := r.h.Request(); return view(q) }

// Header returns a request header the chain forwards (see `headers:` in
// spry.yaml), or "".
func (r *Request) Header(name string) string { return view(r.h.Header(name)) }

// NumHeaders returns how many request headers the chain forwards with this
// request (those of `headers:` in spry.yaml that the client sent).
func (r *Request) NumHeaders() int { return r.h.NumHeaders() }

// HeaderAt returns the i-th forwarded header (0 <= i < NumHeaders), as the
// client spelled its name.
func (r *Request) HeaderAt(i int) (name, value string) {
	n, v := r.h.HeaderAt(i)
	return view(n), view(v)
}

// ContentType returns the content type of the payload.
func (r *Request) ContentType() string { return view(r.h.ContentType()) }

// ID returns the request's id, unique on this node while it runs.
func (r *Request) ID() uint64 { return r.h.ReqID() }

// Hop returns which step of the chain this is: its index among the
// chain's steps (a line's steps are 0, 1, 2, …); -1 in a call.
func (r *Request) Hop() int {
	if r.hop == pool.CallNode {
		return -1
	}
	return r.hop
}

// Steps returns the number of steps in the chain.
func (r *Request) Steps() int { return r.steps }

// Step returns the name of this step in its chain ("" in a call).
func (r *Request) Step() string {
	v, ok := r.p.NodeAt(r.h.Chain(), r.hop)
	if !ok {
		return ""
	}
	return view(v.Name())
}

// Remaining returns the time left before the chain's deadline (negative when
// it passed; the gateway has then answered 504 already).
func (r *Request) Remaining() time.Duration {
	d := r.h.Deadline()
	if d == 0 {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(d - mono.Now())
}

// HopTiming returns when step hop started and ended, measured from the
// gateway's receipt of the request. The current step has no end yet (0).
func (r *Request) HopTiming(hop int) (start, end time.Duration) {
	s, e := r.h.HopTimes(hop)
	in := r.h.Ingress()
	if s != 0 {
		start = time.Duration(s - in)
	}
	if e != 0 {
		end = time.Duration(e - in)
	}
	return start, end
}

// IsJoin reports whether this step joins the branches of a fan-out: its
// inputs are Input(0) … Input(NumInputs()-1).
func (r *Request) IsJoin() bool { return r.h.Kind() == pool.KindJoin }

// NumInputs returns how many inputs a join has: one per successor of the
// fan-out, in the order spry.yaml lists them, whether or not it arrived.
func (r *Request) NumInputs() int { return r.p.Inputs(r.buf).Width }

// Arrived returns how many of a join's inputs arrived before it ran (all,
// unless the join's quorum was met or its wait passed first).
func (r *Request) Arrived() int { return r.p.Inputs(r.buf).Arrived }

// Input returns a join's i-th input: the output of the fan-out's i-th
// branch.
func (r *Request) Input(i int) Input {
	b, ok := r.p.Input(r.buf, i)
	return Input{r: r, i: i, buf: b, ok: ok}
}

// Input is one input of a join: what one branch of the fan-out produced.
// Like the payload it is a view of the pool, valid until the handler
// returns.
type Input struct {
	r   *Request
	i   int
	buf uint32
	ok  bool
}

// Arrived reports whether the branch's output arrived before the join ran
// (a missing one was not sent, is late, or was lost with its instance).
func (in Input) Arrived() bool { return in.ok }

// Payload returns the branch's output (nil when it did not arrive).
func (in Input) Payload() []byte {
	if !in.ok {
		return nil
	}
	if in.r.p.Pieces(in.buf) == 1 {
		return in.r.p.Data(in.buf)
	}
	return in.r.gather(in.buf)
}

// Status returns the status the branch ended with: 200 unless it set one
// or failed (an error is 502, or its *Error's status; a branch whose
// instance died is 502); 0 when it did not arrive.
func (in Input) Status() int {
	if !in.ok {
		return 0
	}
	if s := int(in.r.p.Header(in.buf).Status()); s >= 100 && s <= 999 {
		return s
	}
	return 200
}

// Err returns the branch's failure as an *Error (its status and message),
// or nil when it succeeded. A missing input is an *Error with status 0.
func (in Input) Err() error {
	switch s := in.Status(); {
	case s == 0:
		return &Error{Status: 0, Msg: "the branch's output did not arrive"}
	case s >= 400:
		return &Error{Status: s, Msg: string(in.Payload())}
	}
	return nil
}

// ContentType returns the content type of the branch's output.
func (in Input) ContentType() string {
	if !in.ok {
		return ""
	}
	return view(in.r.p.Header(in.buf).ContentType())
}

// Step returns the name of the branch's first step.
func (in Input) Step() string {
	r := in.r
	h := r.h
	// The fan-out is the step whose successors the join's inputs are:
	// found from the graph (the input's own frame is gone with the join).
	for n := range r.steps {
		v, ok := r.p.NodeAt(h.Chain(), n)
		if ok && v.FanOut() && int(v.JoinAt()) == r.hop && in.i < v.NumNext() {
			if s, ok := r.p.NodeAt(h.Chain(), int(v.Next(in.i))); ok {
				return view(s.Name())
			}
		}
	}
	return ""
}

// view is a string over shared memory, without copying.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Response is the output of one step. By default a step passes its input on
// unchanged; a handler changes the output in one of three ways:
//
//   - in place: modify req.Payload() directly, or write into Buffer() and
//     call SetLen. No buffer is allocated and nothing is copied.
//   - into a fresh buffer: Write (or WriteString) appends to a new buffer
//     from the pool, which replaces the input when the handler returns; it
//     grows into the pool's large-extent region as needed.
//   - into a fresh buffer of a known size: Alloc(n) returns n contiguous
//     bytes of the pool to fill (a large output written in place).
//
// In a branch of a fan-out the input is shared with the other branches:
// read it, do not change it in place (Buffer then is a fresh buffer's).
type Response struct {
	r       *Request
	p       *pool.Pool
	self    uint16
	in      uint32 // input buffer
	out     uint32 // fresh output buffer, when fresh
	fresh   bool
	fill    pool.Filler
	filling bool
	status  uint16
	stop    bool
	next    uint16 // successors chosen with Next
	err     error  // a failed Write or Next, reported when the handler returns
	// outcome is the status this step answered with (0: none of its own),
	// for the counters of client (4xx) and server (5xx) errors.
	outcome uint16
}

func (w *Response) reset(s *instance, r *Request) {
	*w = Response{r: r, p: s.p, self: s.id, in: r.buf}
}

// shared reports whether the input is another's too (a fan-out's branch):
// it is not this step's to change.
func (w *Response) shared() bool {
	_, reads := w.p.Reads(w.in)
	return reads
}

// freshOut makes the fresh output buffer, with the request's identity.
func (w *Response) freshOut() bool {
	if w.fresh {
		return true
	}
	i, ok := w.p.Alloc(w.self)
	if !ok {
		w.err = ErrPoolExhausted
		return false
	}
	w.out, w.fresh = i, true
	w.p.Header(i).CopyMeta(w.p.Header(w.in))
	return true
}

// Buffer returns the whole room for in-place output: the input's buffer
// from the start of the payload to its end (for a large payload, to the
// end of its first extent). Write the output there and call SetLen. In a
// fan-out's branch, whose input is shared, and in a join, it is a fresh
// buffer's room instead.
func (w *Response) Buffer() []byte {
	if w.fresh || w.shared() {
		if !w.freshOut() {
			return nil
		}
		return w.p.Room(w.out)
	}
	return w.p.Room(w.in)[w.p.Header(w.in).Off():]
}

// SetLen sets the in-place output to the first n bytes of Buffer().
func (w *Response) SetLen(n int) {
	b := w.in
	if w.fresh {
		b = w.out
	}
	if n < 0 || n > len(w.Buffer()) {
		w.err = ErrTooLarge
		return
	}
	h := w.p.Header(b)
	if b == w.out {
		w.filling = false
		h.SetData(0, uint32(n))
		return
	}
	h.SetData(h.Off(), uint32(n))
}

// Alloc makes the output a fresh buffer of n bytes, contiguous however
// large (in the pool's large-extent region past one buffer), and returns
// it to be filled: a large output built in place, with no copy. It
// replaces what Write wrote.
func (w *Response) Alloc(n int) ([]byte, error) {
	if n < 0 {
		return nil, ErrTooLarge
	}
	if !w.freshOut() {
		return nil, w.err
	}
	w.filling = false
	if err := w.p.Reserve(w.out, uint64(n), false); err != nil {
		return nil, w.roomErr(err, n)
	}
	return w.p.Data(w.out), nil
}

func (w *Response) roomErr(err error, n int) error {
	if w.p.ExtentBytes() == 0 || errors.Is(err, pool.ErrPayloadTooLarge) {
		return fmt.Errorf("%w (%d bytes)", ErrTooLarge, w.p.BufferSize())
	}
	return fmt.Errorf("%w: no room for an output of %d bytes or more", ErrPoolExhausted, n)
}

// Write appends p to the output, in a fresh buffer allocated at the first
// call, which grows into the pool's large-extent region as needed. It
// implements io.Writer.
func (w *Response) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if !w.freshOut() {
		return 0, w.err
	}
	if !w.filling {
		w.fill = w.p.Fill(w.out, pool.MaxPayload)
		w.filling = true
	}
	n := 0
	for n < len(p) {
		room, err := w.fill.Room()
		if err != nil {
			w.err = w.roomErr(err, int(w.fill.Len())+len(p)-n)
			return n, w.err
		}
		k := copy(room, p[n:])
		w.fill.Wrote(k)
		n += k
	}
	return n, nil
}

// WriteString is Write for a string.
func (w *Response) WriteString(s string) (int, error) {
	return w.Write(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// SetStatus sets the HTTP status the client gets. A status of 400 or more
// ends the chain here: the output goes straight back to the client. The
// client gets a 204 or 304 without a body, and a 502 in place of a status
// outside 200..599 (a 1xx is no final answer to an HTTP client).
func (w *Response) SetStatus(code int) {
	if code >= 100 && code <= 999 {
		w.status = uint16(code)
	}
}

// SetContentType sets the content type of the output. The client gets the
// content type the last step that set one chose, or
// application/octet-stream when no step did (never the request's own).
func (w *Response) SetContentType(ct string) {
	w.p.Header(w.in).SetReplyContentType(ct)
	if w.fresh {
		w.p.Header(w.out).SetReplyContentType(ct)
	}
}

// SetHeader sets a response header the client gets (Location,
// Cache-Control, Set-Cookie, Access-Control-Allow-Origin, …), replacing
// the values it had; AddHeader adds a value. Headers set by every step of
// the chain reach the client. They travel in the buffer's metadata, which
// they share with the request's (about 3 KiB in all): past that, or for
// a name or value that is not valid HTTP, the step fails (502) with the
// reason. Content-Type goes through SetContentType; the framing headers
// (Content-Length, Transfer-Encoding, Connection, Date, …) are the
// gateway's and are refused.
func (w *Response) SetHeader(name, value string) { w.header(name, value, true) }

// AddHeader adds a value to a response header (see SetHeader), as
// Set-Cookie needs.
func (w *Response) AddHeader(name, value string) { w.header(name, value, false) }

// ErrBadHeader is the failure of a SetHeader or AddHeader the gateway
// could not send.
var ErrBadHeader = errors.New("sdk: response header")

func (w *Response) header(name, value string, replace bool) {
	if w.err != nil {
		return
	}
	if why := checkHeader(name, value); why != "" {
		w.err = fmt.Errorf("%w %q: %s", ErrBadHeader, name, why)
		return
	}
	if strings.EqualFold(name, "Content-Type") {
		w.SetContentType(value)
		return
	}
	h := w.p.Header(w.in)
	if w.fresh {
		h = w.p.Header(w.out)
	}
	var err error
	if replace {
		err = h.SetRespHeader(name, value)
	} else {
		err = h.AddRespHeader(name, value)
	}
	if err != nil {
		w.err = fmt.Errorf("%w %q: the response headers do not fit the buffer's metadata (%d bytes with the request's)", ErrBadHeader, name, pool.MaxMeta)
	}
}

// checkHeader returns why name: value cannot be a response header, or "".
func checkHeader(name, value string) string {
	if name == "" {
		return "empty name"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return "not a valid header name"
		}
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
			return "the value has a control character (CR, LF, …)"
		}
	}
	for _, f := range gatewayHeaders {
		if strings.EqualFold(name, f) {
			return "the gateway sets it"
		}
	}
	return ""
}

// gatewayHeaders are the response headers only the gateway writes.
var gatewayHeaders = []string{"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade", "Trailer", "TE", "Date", "Proxy-Connection"}

// Stop ends the chain after this step: the output goes back to the client
// without running the remaining steps. In a branch of a fan-out it ends
// the branch: the output goes to the join.
func (w *Response) Stop() { w.stop = true }

// Next chooses the step the output goes to: one of those spry.yaml lets
// this step go to (its next: or choose:). Where the graph has choose:, the
// output goes to the chosen one (by default the first); where next: lists
// several (a fan-out), it goes to those chosen (by default all). Any other
// name ends the request with a 502 naming the step.
func (w *Response) Next(step string) {
	r := w.r
	v, ok := w.p.NodeAt(r.h.Chain(), r.hop)
	k := -1
	if ok {
		k = v.Succ(w.p, r.h.Chain(), step)
	}
	if k < 0 {
		var allowed []string
		for i := range v.NumNext() {
			if s, ok := w.p.NodeAt(r.h.Chain(), int(v.Next(i))); ok {
				allowed = append(allowed, string(s.Name()))
			}
		}
		why := "it ends the chain"
		if len(allowed) > 0 {
			why = "it goes on to " + strings.Join(allowed, ", ")
		}
		w.err = &Error{Status: 502, Msg: fmt.Sprintf("spry: step %s chose next step %q, which its chain does not allow (%s)", r.Step(), step, why)}
		return
	}
	if v.Choose() && w.next != 0 && w.next != 1<<k {
		w.err = &Error{Status: 502, Msg: fmt.Sprintf("spry: step %s chose two next steps, and its chain lets it choose one", r.Step())}
		return
	}
	w.next |= 1 << k
}

// finish settles the step's output into one buffer and returns it (the
// chain's stop, status and chosen successors in its header). It frees the
// buffer that is not passed on.
func (w *Response) finish(err error) uint32 {
	if err == nil {
		err = w.err
	}
	p := w.p
	out := w.in
	if w.fresh {
		out = w.out
		if w.filling {
			w.fill.Done()
		}
		// The input goes: a join's with its inputs, a branch's with its
		// reference to the shared payload.
		p.Free(w.in, w.self)
	} else if p.Header(w.in).Kind() == pool.KindJoin {
		p.DropInputs(w.in, w.self) // the join ran: its output is its own buffer
	}
	h := p.Header(out)
	h.SetChosen(w.next)
	if err != nil {
		status := uint16(502)
		var e *Error
		if errors.As(err, &e) && e.Status >= 400 && e.Status <= 599 {
			status = uint16(e.Status)
		} else if errors.Is(err, ErrPoolExhausted) {
			status = 503
		}
		// The message goes in the output's own buffer, whatever its
		// payload was (shared, or in extents).
		p.Clear(out, w.self)
		n := copy(p.Buffer(out), err.Error())
		h.SetData(0, uint32(n))
		h.SetReplyContentType("text/plain; charset=utf-8")
		h.SetStatus(status)
		h.SetChosen(0)
		h.SetFlags(h.Flags() | pool.FlagStop)
		w.outcome = status
		return out
	}
	if w.status != 0 {
		h.SetStatus(w.status)
		w.outcome = w.status
	}
	if w.stop || w.status >= 400 {
		h.SetFlags(h.Flags() | pool.FlagStop)
	}
	return out
}
