package bench

import (
	"fmt"
	"strconv"

	"github.com/spry-dev/spry/sdk"
)

// The synthetic chain: steps step1 … stepN, each a separate function
// running the same handler, over a payload of a chosen size. A step counts
// itself in the payload's first eight bytes (in place: the rest of the
// payload is never copied by a step), then burns the configured CPU.

// Limits of the synthetic chain.
const (
	MinPayload = 64
	MaxPayload = 256 << 20
	MaxSteps   = 10
)

func init() {
	register("chain-", map[string]struct {
		doc string
		h   sdk.Handler
	}{
		"step": {"bench: counts its hop in the payload's first 8 bytes, in place, and burns BENCH_STEP_CPU", ChainStep},
	})
}

// ChainStep increments the eight-digit decimal counter at the start of the
// payload and burns the configured CPU per step.
func ChainStep(req *sdk.Request, res *sdk.Response) error {
	p := req.Payload()
	if len(p) < 8 {
		return sdk.Errorf(400, "chain-step: payload of %d bytes, want at least 8", len(p))
	}
	n, err := strconv.Atoi(string(p[:8]))
	if err != nil {
		return sdk.Errorf(400, "chain-step: payload does not start with an 8-digit counter")
	}
	Work(current().StepCPU)
	n++
	for i := 7; i >= 0; i-- {
		p[i] = byte('0' + n%10)
		n /= 10
	}
	return nil
}

func chain(o Options) (*Workload, error) {
	steps, size := o.Steps, o.Payload
	if steps == 0 {
		steps = 2
	}
	if size == 0 {
		size = MinPayload
	}
	if steps < 1 || steps > MaxSteps {
		return nil, fmt.Errorf("bench: chain: --steps %d not in 1..%d", steps, MaxSteps)
	}
	if size < MinPayload || size > MaxPayload {
		return nil, fmt.Errorf("bench: chain: --payload %d not in %d..%d bytes", size, MinPayload, MaxPayload)
	}
	w := &Workload{
		Name: "chain",
		Doc:  fmt.Sprintf("synthetic chain: %d steps, %d-byte payload", steps, size),
		// Room for the payload, whatever the platform adds.
		BufferSize: size,
	}
	c := Chain{Name: "chain", Route: "/chain", Methods: []string{"POST"}}
	for i := 1; i <= steps; i++ {
		name := "step" + strconv.Itoa(i)
		w.Functions = append(w.Functions, Function{Name: name, Builtin: "chain-step"})
		c.Steps = append(c.Steps, name)
	}
	w.Chains = []Chain{c}
	// A few distinct payloads: counter 0, then printable filler (one
	// only when they are large: each is held in memory, with its answer).
	distinct := 4
	if size > 1<<20 {
		distinct = 1
	}
	for k := range distinct {
		body := make([]byte, size)
		copy(body, "00000000")
		for i := 8; i < size; i++ {
			body[i] = byte('a' + (i*7+k*13)%26)
		}
		w.Requests = append(w.Requests, Request{Chain: "chain", Method: "POST", Target: "/chain", Body: body})
	}
	return w, nil
}
