//go:build !wasip1

package sdk

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
)

// Runner runs handlers outside a node, many times, on one private
// shared-memory pool that it reuses: for tests that call a handler in a
// loop, and for adapters that serve a Spry handler over another protocol
// (the benchmark's HTTP and gRPC baselines). The handler sees the same
// Request and Response as in a chain; only the input has to be copied into
// the runner's pool first, which is the copy such an adapter pays per hop.
//
// A Runner is safe for concurrent use: each Call holds its own buffers, and
// Begin blocks while Calls calls are in progress.
//
//	r, err := sdk.NewRunner(sdk.RunnerOptions{BufferSize: 64 << 10, Calls: 16})
//	c := r.Begin()
//	n, _ := io.ReadFull(body, c.Input()[:size]) // the body, straight into the pool
//	c.SetRequest("POST", "/hello", "")
//	out := c.Run(h, n, 0, 1)                    // hop 0 of a 1-step chain
//	w.Write(out.Body)                           // valid until End
//	c.End()
type Runner struct {
	p     *pool.Pool
	inst  *instance // the runner's stand-in for an instance: no transport, no calls
	calls []Call
	free  chan *Call
}

// RunnerOptions size a Runner.
type RunnerOptions struct {
	// BufferSize is the size of a call's buffers (default 64 KiB).
	BufferSize int
	// MaxPayload, when larger than BufferSize, is the largest input or
	// output of one call: the runner's pool gets a large-extent region
	// (committed only as it is used) and Call.InputN gives room for it.
	MaxPayload int
	// Calls is the number of calls that may be in progress at once
	// (default 1).
	Calls int
}

// runnerSelf is the endpoint id a Runner's buffers are owned by.
const runnerSelf = 1

// NewRunner makes a Runner with its own pool.
func NewRunner(o RunnerOptions) (*Runner, error) {
	if o.BufferSize <= 0 {
		o.BufferSize = 64 << 10
	}
	if o.Calls <= 0 {
		o.Calls = 1
	}
	size := uint32(pool.MinBufferSize)
	for int(size) < o.BufferSize {
		size *= 2
	}
	if size > pool.MaxBufferSize {
		return nil, fmt.Errorf("sdk: runner buffer of %d bytes is larger than the largest pool buffer", o.BufferSize)
	}
	// Two buffers per call: the input, and a fresh output from Write;
	// as many large payloads, in the extent region, for a few calls at
	// once (more wait for room: Call.InputN).
	var chunks uint32
	if o.MaxPayload > int(size) {
		per := (uint64(o.MaxPayload) + pool.ChunkSize - 1) / pool.ChunkSize
		chunks = uint32(min(per*uint64(2*min(o.Calls, 8)), pool.MaxChunks))
	}
	p, err := pool.Create("runner", pool.Layout{Buffers: uint32(2*o.Calls + 2), BufferSize: size, Functions: 1, Chains: 1, Slots: 1, Chunks: chunks})
	if err != nil {
		return nil, err
	}
	p.SetFunction(0, 0, 1)
	p.SetChain(0, []uint16{0})
	r := &Runner{p: p, inst: &instance{p: p, id: runnerSelf, conc: 1}, calls: make([]Call, o.Calls), free: make(chan *Call, o.Calls)}
	r.inst.calls.init(r.inst)
	for i := range r.calls {
		r.calls[i].r = r
		r.free <- &r.calls[i]
	}
	return r, nil
}

// Close releases the runner's pool. No call may be in progress.
func (r *Runner) Close() error { return r.p.Close() }

// BufferSize returns the largest input or output of one call.
func (r *Runner) BufferSize() int { return int(r.p.BufferSize()) }

// Call is one run of a handler on a Runner: Begin it, put the input in
// Input and the request metadata with SetRequest and AddHeader, Run it,
// use the Output, and End it. A Call allocates nothing.
type Call struct {
	r    *Runner
	in   uint32
	out  uint32 // the buffer Run's output is in
	ran  bool
	meta pool.Meta
	req  Request
	res  Response
}

// Begin starts a call with an empty input buffer, waiting while every call
// of the runner is in progress.
func (r *Runner) Begin() *Call {
	c := <-r.free
	buf, ok := r.p.Alloc(runnerSelf)
	if !ok {
		// Cannot happen: every call holds at most two buffers.
		panic("sdk: runner pool exhausted")
	}
	c.in, c.out, c.ran = buf, buf, false
	h := r.p.Header(buf)
	h.SetTimes(mono.Now(), 0)
	c.meta = h.WriteMeta()
	c.meta.Request(nil, nil, nil)
	return c
}

// Input returns the whole input buffer: write (or read) the request body
// into it and pass its length to Run.
func (c *Call) Input() []byte { return c.r.p.Buffer(c.in) }

// InputN returns room for an input of n bytes, contiguous however large
// (up to RunnerOptions.MaxPayload), or nil when the runner's pool has none
// now.
func (c *Call) InputN(n int) []byte {
	if n <= len(c.Input()) {
		return c.Input()[:n]
	}
	if c.r.p.Reserve(c.in, uint64(n), false) != nil {
		return nil
	}
	return c.r.p.Data(c.in)
}

// SetRequest records the request's method, path and query (without '?').
// It resets the headers added so far and reports false when the metadata
// does not fit.
func (c *Call) SetRequest(method, path, query string) bool {
	c.meta = c.r.p.Header(c.in).WriteMeta()
	return c.meta.Request(bytesOf(method), bytesOf(path), bytesOf(query))
}

// AddHeader records a request header the handler may read. Headers must be
// added after SetRequest; it reports false when the metadata is full.
func (c *Call) AddHeader(name, value string) bool {
	return c.meta.Header(bytesOf(name), bytesOf(value))
}

// AddAttr adds an attribute of the invocation after the headers: a
// CloudEvent's context attribute (id, source, type, specversion, …) or
// Spry's (spry.activation, spry.cause, spry.trigger, spry.topic), as the
// gateway writes them for Request.Event, ActivationID, Cause, Trigger and
// Topic. It reports false when the metadata is full.
func (c *Call) AddAttr(name, value string) bool {
	return c.r.p.Header(c.in).AppendAttr([]byte(name), []byte(value))
}

// SetContentType sets the content type of the input.
func (c *Call) SetContentType(ct string) { c.r.p.Header(c.in).SetContentTypeString(ct) }

// SetDeadline sets the deadline Request.Remaining counts down to.
func (c *Call) SetDeadline(t time.Time) {
	h := c.r.p.Header(c.in)
	h.SetTimes(h.Ingress(), mono.Now()+int64(time.Until(t)))
}

// Output is what a handler produced.
type Output struct {
	Status      int    // the status the client gets (200 unless set)
	ContentType []byte // the output's content type (a view, valid until End)
	Body        []byte // the output (a view into the pool, valid until End)
	Stop        bool   // the step ended the chain (error, status >= 400, Stop)
}

// Run runs h on the first n bytes of Input, as step hop of a chain of
// steps, and returns its output. Run may be called once per call.
func (c *Call) Run(h Handler, n, hop, steps int) Output {
	if c.ran {
		panic("sdk: Call.Run called twice")
	}
	c.ran = true
	p := c.r.p
	hdr := p.Header(c.in)
	if n < 0 || n > len(p.Room(c.in)) {
		n = 0
	}
	hdr.SetData(0, uint32(n))
	c.req.reset(c.r.inst, c.in, uint8(hop))
	c.req.steps = steps
	c.res.reset(c.r.inst, &c.req)
	hdr.HopStart(hop, mono.Now())
	out := c.res.finish(call(h, &c.req, &c.res))
	stop := p.Header(out).Flags()&pool.FlagStop != 0
	c.out = out
	oh := p.Header(out)
	oh.HopEnd(hop, mono.Now())
	body := p.Data(out)
	if p.Pieces(out) > 1 {
		// An output the pool holds in pieces (its extents were
		// fragmented): one slice, as the adapters want it.
		body = nil
		for i := range p.Pieces(out) {
			body = append(body, p.Piece(out, i)...)
		}
	}
	o := Output{Status: int(oh.Status()), ContentType: oh.ContentType(), Body: body, Stop: stop}
	if o.Status == 0 {
		o.Status = 200
	}
	return o
}

// End finishes the call: its buffers go back to the runner and the call
// must not be used again.
func (c *Call) End() {
	c.req.end()
	c.r.p.Free(c.out, runnerSelf)
	c.req, c.res = Request{}, Response{}
	c.r.free <- c
}

// bytesOf views s as bytes, without copying (the pool copies it).
func bytesOf(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
