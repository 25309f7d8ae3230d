package baseline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spry-dev/spry/internal/builtin"
	"github.com/spry-dev/spry/sdk"
)

// Headers that carry a chain's state between the steps (HTTP protocols).
const (
	hdrChain  = "X-Bench-Chain"
	hdrHop    = "X-Bench-Hop"
	hdrMethod = "X-Bench-Method"
	fnPrefix  = "/_fn/" // knative: /_fn/NAME/<path> routes through the broker to NAME
)

// fnServer is one function instance.
type fnServer struct {
	c       *Config
	h       sdk.Handler
	run     *sdk.Runner
	byRoute map[string]*ChainInfo
	byName  map[string]*ChainInfo
	fwd     forwarder
}

// meta is the request metadata that travels with every hop.
type meta struct {
	chain   *ChainInfo
	hop     int
	method  string
	path    string
	query   string
	headers [][2]string
}

// reply is a next step's answer, in a buffer the forwarder owns until
// release.
type reply struct {
	status int
	ctype  string
	body   []byte
	buf    *[]byte
}

// forwarder sends a step's output to the next step and returns its answer.
type forwarder interface {
	forward(ctx context.Context, next string, m *meta, ctype []byte, body []byte) (*reply, error)
}

// bufPool holds reply buffers: a relayed answer is read into one and
// written out again, many times a second per process; pooling them keeps the
// garbage collector out of the comparison. Pointers to slices, so Put does
// not allocate.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func releaseReply(r *reply) {
	if r != nil && r.buf != nil {
		*r.buf = (*r.buf)[:0]
		bufPool.Put(r.buf)
	}
}

func runFn(ctx context.Context, c *Config) error {
	b, ok := builtin.Lookup(c.Builtin)
	if !ok {
		return fmt.Errorf("bench-proc: no builtin %q", c.Builtin)
	}
	if c.Calls <= 0 {
		c.Calls = 256
	}
	r, err := sdk.NewRunner(sdk.RunnerOptions{BufferSize: c.BufferSize, MaxPayload: c.MaxPayload, Calls: c.Calls})
	if err != nil {
		return err
	}
	defer r.Close()
	s := &fnServer{c: c, h: b.Handler, run: r, byRoute: map[string]*ChainInfo{}, byName: map[string]*ChainInfo{}}
	for i := range c.Chains {
		ch := &c.Chains[i]
		s.byName[ch.Name] = ch
		if len(ch.Steps) > 0 && ch.Steps[0] == c.Function {
			s.byRoute[ch.Route] = ch
		}
	}
	switch c.Proto {
	case ProtoHTTP:
		s.fwd = newHTTPForwarder(func(next string) string {
			return "http://" + pick(c.Next[next], &rr)
		}, "")
	case ProtoKnative:
		s.fwd = newHTTPForwarder(func(string) string { return "http://" + c.Broker }, fnPrefix)
	case ProtoGRPC:
		g, err := newGRPCForwarder(c.Next)
		if err != nil {
			return err
		}
		defer g.close()
		s.fwd = g
	default:
		return fmt.Errorf("bench-proc: unknown protocol %q", c.Proto)
	}
	errc := make(chan error, 2)
	n := 0
	if c.HTTP != "" {
		n++
		go func() { errc <- serveHTTP(ctx, c.HTTP, s) }()
	}
	if c.GRPC != "" {
		n++
		go func() { errc <- serveGRPC(ctx, c.GRPC, s) }()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
			break
		}
	}
	return first
}

var rr atomic.Uint32

// pick returns one of addrs, in turn.
func pick(addrs []string, n *atomic.Uint32) string {
	if len(addrs) == 0 {
		return "127.0.0.1:1"
	}
	return addrs[int(n.Add(1))%len(addrs)]
}

// ServeHTTP takes a hop over HTTP/1.1: from the client (the chain's first
// step, found by route) or from the previous step (X-Bench-Chain/Hop).
func (s *fnServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := meta{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery}
	if strings.HasPrefix(m.path, fnPrefix) {
		rest := m.path[len(fnPrefix):]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			m.path = rest[i:]
		}
	}
	if name := r.Header.Get(hdrChain); name != "" {
		m.chain = s.byName[name]
		m.hop, _ = strconv.Atoi(r.Header.Get(hdrHop))
		if v := r.Header.Get(hdrMethod); v != "" {
			m.method = v
		}
	} else {
		m.chain = s.byRoute[m.path]
	}
	if m.chain == nil || m.chain.fnAt(m.hop) != s.c.Function {
		http.Error(w, "bench: no chain step here for "+m.path, http.StatusNotFound)
		return
	}
	call := s.run.Begin()
	defer call.End()
	call.SetRequest(m.method, m.path, m.query)
	for _, h := range m.chain.Headers {
		if v := r.Header.Get(h); v != "" {
			call.AddHeader(h, v)
			m.headers = append(m.headers, [2]string{h, v})
		}
	}
	call.SetContentType(r.Header.Get("Content-Type"))
	// The body, from the socket into the handler's buffer.
	in := call.Input()
	if r.ContentLength > int64(len(in)) {
		in = call.InputN(int(r.ContentLength))
	}
	n := 0
	if r.ContentLength > int64(len(in)) {
		http.Error(w, "bench: body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if r.ContentLength >= 0 {
		k, err := io.ReadFull(r.Body, in[:r.ContentLength])
		if err != nil {
			http.Error(w, "bench: reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		n = k
	} else {
		for {
			k, err := r.Body.Read(in[n:])
			n += k
			if err == io.EOF {
				break
			}
			if err != nil || n == len(in) {
				http.Error(w, "bench: body unreadable or too large", http.StatusRequestEntityTooLarge)
				return
			}
		}
	}
	status, ctype, body, rep := s.step(r.Context(), call, &m, n)
	defer releaseReply(rep)
	writeAnswer(w, status, ctype, body)
}

func writeAnswer(w http.ResponseWriter, status int, ctype []byte, body []byte) {
	h := w.Header()
	if len(ctype) > 0 {
		h["Content-Type"] = []string{string(ctype)}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write(body)
}

// step runs the handler on the call's n input bytes and, unless the chain
// ends here, the rest of the chain; it returns the answer to send back.
func (s *fnServer) step(ctx context.Context, call *sdk.Call, m *meta, n int) (int, []byte, []byte, *reply) {
	out := call.Run(s.h, n, m.hop, m.chain.hops())
	last := len(m.chain.Steps) - 1
	if out.Stop || m.hop > last || m.hop == last && len(m.chain.Branches) == 0 {
		return out.Status, out.ContentType, out.Body, nil
	}
	if m.hop == last {
		return s.fanOut(ctx, m, out)
	}
	next := m.chain.Steps[m.hop+1]
	nm := *m
	nm.hop++
	rep, err := s.fwd.forward(ctx, next, &nm, out.ContentType, out.Body)
	if err != nil {
		return badGateway(next, err)
	}
	return rep.status, []byte(rep.ctype), rep.body, rep
}

func badGateway(next string, err error) (int, []byte, []byte, *reply) {
	return http.StatusBadGateway, []byte("text/plain; charset=utf-8"), []byte("bench: " + next + ": " + err.Error()), nil
}

// fanOut calls every branch with out at once, then the join with their
// answers one after another in one body, as a microservice fanning out
// with parallel calls would.
func (s *fnServer) fanOut(ctx context.Context, m *meta, out sdk.Output) (int, []byte, []byte, *reply) {
	c := m.chain
	reps := make([]*reply, len(c.Branches))
	errs := make([]error, len(c.Branches))
	var wg sync.WaitGroup
	for k, b := range c.Branches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nm := *m
			nm.hop = len(c.Steps) + k
			reps[k], errs[k] = s.fwd.forward(ctx, b, &nm, out.ContentType, out.Body)
		}()
	}
	wg.Wait()
	defer func() {
		for _, r := range reps {
			releaseReply(r)
		}
	}()
	size := 0
	for k, r := range reps {
		if errs[k] != nil {
			return badGateway(c.Branches[k], errs[k])
		}
		if r.status >= 400 {
			return r.status, []byte(r.ctype), slices.Clone(r.body), nil
		}
		size += len(r.body)
	}
	joined := make([]byte, 0, size)
	for _, r := range reps {
		joined = append(joined, r.body...)
	}
	nm := *m
	nm.hop = len(c.Steps) + len(c.Branches)
	rep, err := s.fwd.forward(ctx, c.Join, &nm, nil, joined)
	if err != nil {
		return badGateway(c.Join, err)
	}
	return rep.status, []byte(rep.ctype), rep.body, rep
}

// httpForwarder calls the next step over HTTP/1.1: directly (http) or
// through the broker (knative).
type httpForwarder struct {
	c      *http.Client
	base   func(next string) string
	prefix string // knative: the broker's /_fn/ routing prefix
}

func newHTTPForwarder(base func(string) string, prefix string) *httpForwarder {
	return &httpForwarder{c: &http.Client{Transport: transport()}, base: base, prefix: prefix}
}

var errNoAnswer = errors.New("no answer")

func (f *httpForwarder) forward(ctx context.Context, next string, m *meta, ctype, body []byte) (*reply, error) {
	u := f.base(next)
	if f.prefix != "" {
		u += f.prefix + next
	}
	u += m.path
	if m.query != "" {
		u += "?" + m.query
	}
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header[hdrChain] = []string{m.chain.Name}
	req.Header[hdrHop] = []string{strconv.Itoa(m.hop)}
	req.Header[hdrMethod] = []string{m.method}
	if len(ctype) > 0 {
		req.Header["Content-Type"] = []string{string(ctype)}
	}
	for _, h := range m.headers {
		req.Header[h[0]] = []string{h[1]}
	}
	resp, err := f.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	bp := bufPool.Get().(*[]byte)
	b := *bp
	if resp.ContentLength > int64(cap(b)) {
		b = make([]byte, 0, resp.ContentLength)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		k, err := resp.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+k]
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = b[:0]
			bufPool.Put(bp)
			return nil, err
		}
	}
	*bp = b
	return &reply{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: b, buf: bp}, nil
}
