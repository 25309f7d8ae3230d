//go:build !wasip1

package sdk

import (
	"errors"
	"fmt"
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
	p     *pool.Pool
	buf   uint32
	h     *pool.BufHeader
	hop   int
	steps int
}

func (r *Request) reset(p *pool.Pool, buf uint32, hop int) {
	r.p, r.buf, r.h, r.hop = p, buf, p.Header(buf), hop
	r.steps = p.Steps(r.h.Chain())
}

// Payload returns the request body as this step received it: the client's
// body at the first step, the previous step's output after that.
func (r *Request) Payload() []byte { return r.p.Data(r.buf) }

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

// Hop returns which step of the chain this is, from 0.
func (r *Request) Hop() int { return r.hop }

// Steps returns the number of steps in the chain.
func (r *Request) Steps() int { return r.steps }

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

// view is a string over shared memory, without copying.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Response is the output of one step. By default a step passes its input on
// unchanged; a handler changes the output in one of two ways:
//
//   - in place: modify req.Payload() directly, or write into Buffer() and
//     call SetLen. No buffer is allocated and nothing is copied.
//   - into a fresh buffer: Write (or WriteString) appends to a new buffer
//     from the pool, which replaces the input when the handler returns.
type Response struct {
	p      *pool.Pool
	self   uint16
	in     uint32 // input buffer
	out    uint32 // fresh output buffer, when fresh
	fresh  bool
	n      int // bytes written to the fresh buffer
	status uint16
	stop   bool
	err    error // a failed Write, reported when the handler returns
	// outcome is the status this step answered with (0: none of its own),
	// for the counters of client (4xx) and server (5xx) errors.
	outcome uint16
}

func (w *Response) reset(p *pool.Pool, self uint16, in uint32) {
	*w = Response{p: p, self: self, in: in}
}

// Buffer returns the whole room for in-place output: the input buffer from
// the start of the payload to its end. Write the output there and call
// SetLen.
func (w *Response) Buffer() []byte {
	return w.p.Buffer(w.in)[w.p.Header(w.in).Off():]
}

// SetLen sets the in-place output to the first n bytes of Buffer().
func (w *Response) SetLen(n int) {
	h := w.p.Header(w.in)
	if n < 0 || n > len(w.Buffer()) {
		w.err = ErrTooLarge
		return
	}
	h.SetData(h.Off(), uint32(n))
}

// Write appends p to the output, in a fresh buffer allocated at the first
// call. It implements io.Writer.
func (w *Response) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if !w.fresh {
		i, ok := w.p.Alloc(w.self)
		if !ok {
			w.err = ErrPoolExhausted
			return 0, w.err
		}
		w.out, w.fresh = i, true
		w.p.Header(i).CopyMeta(w.p.Header(w.in))
	}
	buf := w.p.Buffer(w.out)
	if len(p) > len(buf)-w.n {
		w.err = fmt.Errorf("%w (%d bytes)", ErrTooLarge, len(buf))
		return 0, w.err
	}
	w.n += copy(buf[w.n:], p)
	return len(p), nil
}

// WriteString is Write for a string.
func (w *Response) WriteString(s string) (int, error) {
	return w.Write(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// SetStatus sets the HTTP status the client gets. A status of 400 or more
// ends the chain here: the output goes straight back to the client.
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
// they share with the request's (about 1.5 KiB in all): past that, or for
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
// without running the remaining steps.
func (w *Response) Stop() { w.stop = true }

// finish settles the step's output into one buffer and returns it, with
// whether the chain stops here. It frees the buffer that is not passed on.
func (w *Response) finish(err error) (buf uint32, stop bool) {
	if err == nil {
		err = w.err
	}
	out := w.in
	if w.fresh {
		oh := w.p.Header(w.out)
		oh.SetData(0, uint32(w.n))
		oh.SetContentType(w.p.Header(w.in).ContentType())
		if err != nil {
			// The error message goes in the input buffer; drop the output.
			w.p.Free(w.out, w.self)
		} else {
			w.p.Free(w.in, w.self)
			out = w.out
		}
	}
	h := w.p.Header(out)
	if err != nil {
		status := uint16(502)
		var e *Error
		if errors.As(err, &e) && e.Status >= 400 && e.Status <= 599 {
			status = uint16(e.Status)
		} else if errors.Is(err, ErrPoolExhausted) {
			status = 503
		}
		msg := err.Error()
		b := w.p.Buffer(out)
		n := copy(b, msg)
		h.SetData(0, uint32(n))
		h.SetReplyContentType("text/plain; charset=utf-8")
		h.SetStatus(status)
		h.SetFlags(h.Flags() | pool.FlagStop)
		w.outcome = status
		return out, true
	}
	if w.status != 0 {
		h.SetStatus(w.status)
		w.outcome = w.status
	}
	if w.stop || w.status >= 400 {
		h.SetFlags(h.Flags() | pool.FlagStop)
		return out, true
	}
	return out, h.Flags()&pool.FlagStop != 0
}
