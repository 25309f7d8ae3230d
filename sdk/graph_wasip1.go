//go:build wasip1

package sdk

import (
	"context"
	"iter"
)

// In a wasm guest a step is one step of a line of steps over a payload of
// up to one pool buffer: the graph's fan-outs, joins, choices and calls,
// and payloads in the pool's large-extent region, are the native SDK's
// (spry.yaml refuses wasm: functions in a graph; a call from a guest
// fails 501). These keep handlers written for them compiling here.

// MaxCallDepth is how deeply calls nest.
const MaxCallDepth = 32

// errNoCalls is what a call from a guest returns.
var errNoCalls = &Error{Status: 501, Msg: "spry: calls are not available in wasm functions"}

// Len returns the payload's length.
func (r *Request) Len() int { return len(r.Payload()) }

// Segments yields the payload: one segment in a guest.
func (r *Request) Segments() iter.Seq[[]byte] {
	return func(yield func([]byte) bool) { yield(r.Payload()) }
}

// NumSegments returns 1: a guest's payload is one segment.
func (r *Request) NumSegments() int { return 1 }

// Segment returns the payload (i == 0).
func (r *Request) Segment(i int) []byte {
	if i != 0 {
		return nil
	}
	return r.Payload()
}

// Step returns "" in a guest.
func (r *Request) Step() string { return "" }

// IsJoin reports false: a guest never joins.
func (r *Request) IsJoin() bool { return false }

// NumInputs returns 0 in a guest.
func (r *Request) NumInputs() int { return 0 }

// Arrived returns 0 in a guest.
func (r *Request) Arrived() int { return 0 }

// Input returns a missing input in a guest.
func (r *Request) Input(i int) Input { return Input{} }

// Input is one input of a join (never in a guest).
type Input struct{}

// Arrived reports false.
func (in Input) Arrived() bool { return false }

// Payload returns nil.
func (in Input) Payload() []byte { return nil }

// Status returns 0.
func (in Input) Status() int { return 0 }

// Err returns nil.
func (in Input) Err() error { return nil }

// ContentType returns "".
func (in Input) ContentType() string { return "" }

// Step returns "".
func (in Input) Step() string { return "" }

// Call fails with 501 in a guest.
func (r *Request) Call(ctx context.Context, fn string, payload []byte) ([]byte, error) {
	return nil, errNoCalls
}

// Go returns a call that fails with 501 in a guest.
func (r *Request) Go(ctx context.Context, fn string, payload []byte) Future { return Future{} }

// Future is a call started with Go.
type Future struct{}

// Wait fails with 501 in a guest.
func (f Future) Wait() ([]byte, error) { return nil, errNoCalls }

// Alloc returns room for an output of n bytes in the output window, when
// it fits.
func (w *Response) Alloc(n int) ([]byte, error) {
	if n < 0 || n > len(guest.out) {
		return nil, ErrTooLarge
	}
	w.fresh, w.w = true, n
	return guest.out[:n], nil
}

// Next fails the step in a guest, which runs in a line of steps only.
func (w *Response) Next(step string) {
	w.err = &Error{Status: 502, Msg: "spry: res.Next: a wasm function runs in a line of steps, with no choice of the next"}
}
