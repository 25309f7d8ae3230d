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
// the reference the benchmark checks every platform's answers against.
func (w *Workload) RunLocal(r *sdk.Runner, req *Request) (Reply, error) {
	c := w.Chain(req.Chain)
	if c == nil {
		return Reply{}, fmt.Errorf("bench: %s: no chain %q", w.Name, req.Chain)
	}
	path, query, _ := strings.Cut(req.Target, "?")
	in := req.Body
	var rep Reply
	for hop, step := range c.Steps {
		call := r.Begin()
		call.SetRequest(req.Method, path, query)
		for _, name := range c.Headers {
			for _, h := range req.Header {
				if strings.EqualFold(h[0], name) {
					call.AddHeader(name, h[1])
				}
			}
		}
		if len(in) > len(call.Input()) {
			call.End()
			return Reply{}, fmt.Errorf("bench: %s: input of %d bytes at step %s is larger than a buffer", w.Name, len(in), step)
		}
		n := copy(call.Input(), in)
		call.SetContentType(rep.ContentType)
		out := call.Run(w.Handler(step), n, hop, len(c.Steps))
		rep = Reply{Status: out.Status, ContentType: string(out.ContentType), Body: append([]byte(nil), out.Body...)}
		call.End()
		if out.Stop {
			break
		}
		in = rep.Body
	}
	return rep, nil
}
