//go:build !wasip1

package sdk

import (
	"fmt"
	"strings"

	"github.com/spry-dev/spry/internal/pool"
)

// Result is what one step produced, as Invoke reports it.
type Result struct {
	Status      int    // HTTP status the client would get (200 unless set)
	ContentType string // content type of the output
	Body        []byte // the output (a copy)
	Stop        bool   // the step ended the chain (error, status >= 400 or Stop)
}

// Invoke runs h once, outside of any node, the way a chain step runs it:
// on a payload in a real shared-memory pool, with the same Request and
// Response semantics. It is meant for unit tests of functions. target is a
// path with an optional query ("/hello?x=1"). To run handlers many times,
// use a Runner: Invoke makes a pool per call.
func Invoke(h Handler, method, target string, body []byte) (*Result, error) {
	size := 64 << 10
	for size < len(body) {
		size *= 2
	}
	if size > pool.MaxBufferSize {
		return nil, fmt.Errorf("sdk: body of %d bytes is larger than the largest buffer", len(body))
	}
	r, err := NewRunner(RunnerOptions{BufferSize: size, Calls: 1})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	c := r.Begin()
	defer c.End()
	path, query, _ := strings.Cut(target, "?")
	if !c.SetRequest(method, path, query) {
		return nil, fmt.Errorf("sdk: request metadata too large")
	}
	n := copy(c.Input(), body)
	out := c.Run(h, n, 0, 1)
	return &Result{
		Status:      out.Status,
		ContentType: string(out.ContentType),
		Body:        append([]byte(nil), out.Body...),
		Stop:        out.Stop,
	}, nil
}
