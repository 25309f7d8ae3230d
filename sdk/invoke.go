package sdk

import (
	"fmt"
	"strings"

	"github.com/spry-dev/spry/internal/mono"
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
// path with an optional query ("/hello?x=1").
func Invoke(h Handler, method, target string, body []byte) (*Result, error) {
	size := uint32(64 << 10)
	for int(size) < len(body) {
		size *= 2
	}
	if size > pool.MaxBufferSize {
		return nil, fmt.Errorf("sdk: body of %d bytes is larger than the largest buffer", len(body))
	}
	p, err := pool.Create("invoke", pool.Layout{Buffers: 4, BufferSize: size, Functions: 1, Chains: 1, Slots: 1})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	p.SetFunction(0, 0, 1)
	p.SetChain(0, []uint16{0})
	const self = 1
	buf, _ := p.Alloc(self)
	hdr := p.Header(buf)
	path, query, _ := strings.Cut(target, "?")
	m := hdr.WriteMeta()
	if !m.Request([]byte(method), []byte(path), []byte(query)) {
		return nil, fmt.Errorf("sdk: request metadata too large")
	}
	hdr.SetData(0, uint32(copy(p.Buffer(buf), body)))
	hdr.SetTimes(mono.Now(), 0)

	var req Request
	var res Response
	req.reset(p, buf, 0)
	res.reset(p, self, buf)
	hdr.HopStart(0, mono.Now())
	out, stop := res.finish(call(h, &req, &res))
	oh := p.Header(out)
	r := &Result{
		Status:      int(oh.Status()),
		ContentType: string(oh.ContentType()),
		Body:        append([]byte(nil), p.Data(out)...),
		Stop:        stop,
	}
	if r.Status == 0 {
		r.Status = 200
	}
	return r, nil
}
