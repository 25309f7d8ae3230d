// Package sdkhook gives Spry's own builtins (the federated-learning app in
// internal/fl) two things the Go SDK keeps to itself: the pool under a
// handler with the instance's endpoint id, and a buffer of the handler's
// own (a token of a buffer it keeps) as the step's output. The SDK sets
// both when it starts; the package is internal, so no function outside
// this module can reach them.
package sdkhook

import "github.com/spry-dev/spry/internal/pool"

var (
	// Pool returns the pool a handler's request (an *sdk.Request) lies
	// in, the endpoint id of the instance running it, and the request's
	// buffer.
	Pool func(req any) (p *pool.Pool, self uint16, buf uint32)
	// SetOutput makes buf, which the instance holds, the output of the
	// step whose response (an *sdk.Response) this is, with the request's
	// metadata: it is sent on (or answered) in place of the input, and the
	// input is freed. A fresh output the handler made before is freed.
	SetOutput func(res any, buf uint32)
	// Keeper returns a function that counts, by delta, the state the
	// instance running req holds between requests (buffers it keeps: a
	// stateful aggregator's jobs) in its slot's Keeps counter. While it
	// keeps something, the daemon's sweep does not take its buffers for
	// lost and the control plane does not scale it to zero; a drain (a
	// shutdown, a reload) stops it without waiting for them. Outside a
	// node it does nothing.
	Keeper func(req any) func(delta int)
	// Demand returns a function that asks the control plane, in the slot's
	// Demand word (pool.SlotStats.Demand), for n instances of function fn
	// of the app (n 0: nothing asked). The node believes it only of
	// builtins that keep state. Outside a node it does nothing.
	Demand func(req any) func(fn uint16, n int)
)
