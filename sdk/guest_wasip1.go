package sdk

// The SDK built for WebAssembly (GOOS=wasip1, -buildmode=c-shared): the same
// Handler, Request and Response, run by a node's sandbox host instead of a
// process of its own. The host calls spry_init once, which runs the
// program's main (where sdk.Serve registers the handler and returns), and
// spry_handle per request, with the request in a frame of this module's
// memory (internal/runtime/wasm/abi).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/runtime/wasm/abi"
)

// EnvSecrets names the directory of the app's secrets; a wasm function
// is given none, so Secret finds nothing.
const EnvSecrets = "SPRY_SECRETS"

// guest is the module's one frame and handler.
var guest struct {
	h     Handler
	mem   []byte // the allocation the frame and windows live in, kept alive
	frame []byte // abi.FrameSize bytes
	in    []byte // the input window
	out   []byte // the output window
	req   Request
	res   Response
	// hdr holds a copy of the request's metadata, so that the pool's own
	// readers (headers, event attributes) parse it as in a process.
	hdr pool.BufHeader
}

// Serve registers h as the function's handler. In a wasm build it returns
// at once: the sandbox host calls the handler, and main should return
// after Serve (code after it runs once, at the instance's initialisation).
func Serve(h Handler) { guest.h = h }

// Run is Serve; in a wasm build it returns nil at once.
func Run(h Handler) error {
	guest.h = h
	return nil
}

//go:linkname mainMain main.main
func mainMain()

// spryInit allocates the frame and two windows of window bytes, page
// aligned, runs the program's main, and returns the frame's address, or 0
// when main registered no handler.
//
//go:wasmexport spry_init
func spryInit(window uint32) uint32 {
	if window == 0 || window > 1<<30 {
		return 0
	}
	win := (int(window) + abi.PageSize - 1) &^ (abi.PageSize - 1)
	guest.mem = make([]byte, abi.FrameSize+2*win+abi.PageSize)
	base := int((abi.PageSize - uintptr(unsafe.Pointer(&guest.mem[0]))%abi.PageSize) % abi.PageSize)
	guest.frame = guest.mem[base : base+abi.FrameSize : base+abi.FrameSize]
	guest.in = guest.mem[base+abi.FrameSize : base+abi.FrameSize+int(window) : base+abi.FrameSize+int(window)]
	o := base + abi.FrameSize + win
	guest.out = guest.mem[o : o+int(window) : o+int(window)]
	mainMain()
	if guest.h == nil {
		return 0
	}
	f := guest.frame
	le.PutUint32(f[abi.OffMagic:], abi.Magic)
	le.PutUint32(f[abi.OffFrameSize:], abi.FrameSize)
	le.PutUint32(f[abi.OffIn:], addr(guest.in))
	le.PutUint32(f[abi.OffOut:], addr(guest.out))
	le.PutUint32(f[abi.OffWindow:], window)
	return addr(guest.frame)
}

// spryHandle runs the handler on the request in the frame and writes the
// response into it.
//
//go:wasmexport spry_handle
func spryHandle() uint32 {
	guest.hdr.SetRawMeta(meta())
	guest.req = Request{h: &guest.hdr}
	guest.res = Response{outCtype: abi.NoContentType}
	guest.res.off, guest.res.n = guest.req.span()
	guest.res.finish(call(guest.h, &guest.req, &guest.res))
	return 0
}

var le = binary.LittleEndian

func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(&b[0]))) }

// call runs the handler, turning a panic into an error.
func call(h Handler, req *Request, res *Response) (err error) {
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(os.Stderr, "panic in handler: %v\n%s", v, debug.Stack())
			err = fmt.Errorf("function panicked: %v", v)
		}
	}()
	return h(req, res)
}

// Request is the input of one step. Its payload and metadata are views into
// the module's memory, valid only until the handler returns (copy what you
// keep).
type Request struct {
	h *pool.BufHeader // the metadata, copied into this module
}

// span returns the payload's offset and length in the input window,
// clamped to it.
func (r *Request) span() (off, n int) {
	f := guest.frame
	off = int(le.Uint32(f[abi.OffPayloadOff:]))
	n = int(le.Uint32(f[abi.OffPayloadLen:]))
	off = min(off, len(guest.in))
	n = min(n, len(guest.in)-off)
	return off, n
}

// Payload returns the request body as this step received it: the client's
// body at the first step, the previous step's output after that.
func (r *Request) Payload() []byte {
	off, n := r.span()
	return guest.in[off : off+n : off+n]
}

// meta returns the request's metadata, as the host copied it.
func meta() []byte {
	n := min(int(le.Uint16(guest.frame[abi.OffMetaLen:])), abi.MaxMeta)
	return guest.frame[abi.OffMeta : abi.OffMeta+n]
}

// Method returns the HTTP method of the client's request.
func (r *Request) Method() string { m, _, _ := r.h.Request(); return view(m) }

// Path returns the request path (not unescaped).
func (r *Request) Path() string { _, p, _ := r.h.Request(); return view(p) }

// Query returns the raw query string, without the '?'.
func (r *Request) Query() string { _, _, q := r.h.Request(); return view(q) }

// Header returns a request header the chain forwards (see `headers:` in
// spry.yaml), or "".
func (r *Request) Header(name string) string { return view(r.h.Header(name)) }

// ContentType returns the content type of the payload.
func (r *Request) ContentType() string {
	n := min(int(guest.frame[abi.OffCtypeLen]), abi.MaxContentType)
	return view(guest.frame[abi.OffCtype : abi.OffCtype+n])
}

// ID returns the request's id, unique on this node while it runs.
func (r *Request) ID() uint64 { return le.Uint64(guest.frame[abi.OffReqID:]) }

// Hop returns which step of the chain this is, from 0.
func (r *Request) Hop() int { return int(le.Uint16(guest.frame[abi.OffHop:])) }

// Steps returns the number of steps in the chain.
func (r *Request) Steps() int { return int(le.Uint16(guest.frame[abi.OffSteps:])) }

// Remaining returns the time that was left before the chain's deadline when
// this step started (a wasm function without the clock grant cannot
// measure its own time).
func (r *Request) Remaining() time.Duration {
	return time.Duration(int64(le.Uint64(guest.frame[abi.OffRemaining:])))
}

// HopTiming returns when step hop started and ended, measured from the
// gateway's receipt of the request. The current step has no end yet (0).
func (r *Request) HopTiming(hop int) (start, end time.Duration) {
	if hop < 0 || hop >= abi.MaxHops {
		return 0, 0
	}
	o := abi.OffHopTimes + 16*hop
	return time.Duration(int64(le.Uint64(guest.frame[o:]))), time.Duration(int64(le.Uint64(guest.frame[o+8:])))
}

// view is a string over the module's memory, without copying.
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
//     call SetLen.
//   - into a fresh buffer: Write (or WriteString) appends to a new output,
//     which replaces the input when the handler returns.
type Response struct {
	off, n   int  // in-place output in the input window
	fresh    bool // Write was called
	w        int  // bytes written to the output window
	status   uint16
	stop     bool
	err      error
	outCtype byte // content type length set by SetContentType, or abi.NoContentType
}

// Buffer returns the whole room for in-place output: the input window from
// the start of the payload to its end. Write the output there and call
// SetLen.
func (w *Response) Buffer() []byte {
	off, _ := guest.req.span()
	return guest.in[off:]
}

// SetLen sets the in-place output to the first n bytes of Buffer().
func (w *Response) SetLen(n int) {
	off, _ := guest.req.span()
	if n < 0 || n > len(guest.in)-off {
		w.err = ErrTooLarge
		return
	}
	w.off, w.n = off, n
}

// Write appends p to the output, in a fresh buffer. It implements
// io.Writer.
func (w *Response) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.fresh = true
	if len(p) > len(guest.out)-w.w {
		w.err = fmt.Errorf("%w (%d bytes)", ErrTooLarge, len(guest.out))
		return 0, w.err
	}
	w.w += copy(guest.out[w.w:], p)
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

// SetContentType sets the content type of the output.
func (w *Response) SetContentType(ct string) {
	n := copy(guest.frame[abi.OffOutCtype:abi.OffOutCtype+abi.MaxContentType], ct)
	w.outCtype = byte(n)
}

// Stop ends the chain after this step: the output goes back to the client
// without running the remaining steps.
func (w *Response) Stop() { w.stop = true }

// finish writes the step's outcome into the frame's response block.
func (w *Response) finish(err error) {
	if err == nil {
		err = w.err
	}
	f := guest.frame
	var res uint32
	status := w.status
	off, n := w.off, w.n
	ctype := w.outCtype
	if err != nil {
		status = 502
		var e *Error
		if errors.As(err, &e) && e.Status >= 400 && e.Status <= 599 {
			status = uint16(e.Status)
		}
		off, n = 0, copy(guest.in, err.Error())
		ctype = byte(copy(f[abi.OffOutCtype:abi.OffOutCtype+abi.MaxContentType], "text/plain; charset=utf-8"))
		res = abi.ResStop | abi.ResError
	} else if w.fresh {
		res = abi.ResFresh
		off, n = 0, w.w
	}
	if w.stop || status >= 400 {
		res |= abi.ResStop
	}
	le.PutUint32(f[abi.OffResult:], res)
	le.PutUint32(f[abi.OffOutOff:], uint32(off))
	le.PutUint32(f[abi.OffOutLen:], uint32(n))
	le.PutUint16(f[abi.OffOutStatus:], status)
	f[abi.OffOutCtypeLen] = ctype
}
