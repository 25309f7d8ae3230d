//go:build !wasip1

package bench

import (
	"fmt"
	"strings"

	"github.com/spry-dev/spry/sdk"
)

// Reply is a chain's answer.
type Reply struct {
	Status      int
	ContentType string
	Body        []byte
}

// RunLocal runs request req's chain in this process, step after step on r,
// with the semantics of a Spry chain: a step's output is the next step's
// input, and a step that stops (error, status >= 400, Stop) answers. It is
// the reference the benchmark checks every platform's answers against. A
// fan-out runs its branches one after another on the same input, and its
// join on the branches' outputs one after another in one payload (the join
// handlers of the workloads take that form as well as a join's inputs).
func (w *Workload) RunLocal(r *sdk.Runner, req *Request) (Reply, error) {
	c := w.Chain(req.Chain)
	if c == nil {
		return Reply{}, fmt.Errorf("bench: %s: no chain %q", w.Name, req.Chain)
	}
	path, query, _ := strings.Cut(req.Target, "?")
	nsteps := len(c.Steps)
	if c.Graph() {
		nsteps += 2
	}
	// run runs step fn at hop on in.
	run := func(fn string, hop int, in []byte, ctype string) (Reply, bool, error) {
		call := r.Begin()
		defer call.End()
		call.SetRequest(req.Method, path, query)
		for _, name := range c.Headers {
			for _, h := range req.Header {
				if strings.EqualFold(h[0], name) {
					call.AddHeader(name, h[1])
				}
			}
		}
		room := call.InputN(len(in))
		if room == nil {
			return Reply{}, false, fmt.Errorf("bench: %s: input of %d bytes at step %s does not fit the runner", w.Name, len(in), fn)
		}
		n := copy(room, in)
		call.SetContentType(ctype)
		out := call.Run(w.Handler(fn), n, hop, nsteps)
		return Reply{Status: out.Status, ContentType: string(out.ContentType), Body: append([]byte(nil), out.Body...)}, out.Stop, nil
	}
	in := req.Body
	var rep Reply
	for hop, step := range c.Steps {
		var stop bool
		var err error
		if rep, stop, err = run(step, hop, in, rep.ContentType); err != nil || stop {
			return rep, err
		}
		in = rep.Body
	}
	if !c.Graph() {
		return rep, nil
	}
	// A fan-out: every branch on the last step's output; the join on
	// their outputs, one after another (the join's handler takes them
	// so when it is not called as a join).
	var joined []byte
	for _, b := range c.Branches {
		br, stop, err := run(b, len(c.Steps), in, rep.ContentType)
		if err != nil || stop {
			return br, err
		}
		joined = append(joined, br.Body...)
	}
	rep, _, err := run(c.Join, len(c.Steps)+1, joined, "")
	return rep, err
}
