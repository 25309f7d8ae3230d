package gateway

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/auth"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// rig is a gateway in front of one app whose chain has one step, played by
// the test: an endpoint that echoes each request back to the gateway, or
// hands it to the test to answer when hold is set.
type rig struct {
	t    testing.TB
	p    *pool.Pool
	app  *App
	g    *Gateway
	addr string
	inst transport.Conn
	held chan desc.Desc
	hold bool
}

const (
	gwID   = 1
	instID = 2
)

func newRig(t testing.TB, buffers uint32, inflight int, timeout time.Duration, hold bool) *rig {
	t.Helper()
	return newRigWith(t, rigOpts{buffers: buffers, inflight: inflight, timeout: timeout, hold: hold})
}

// rigOpts are newRig's arguments, and more.
type rigOpts struct {
	buffers    uint32
	bufferSize uint32 // default 4096
	inflight   int
	timeout    time.Duration
	hold       bool
	route      string // default /c
	tls        *tls.Config
	auth       *auth.Checker
	others     []string    // more routes in the table (of no app: never matched)
	graph      []pool.Node // the chain's graph (default: one step); every node runs the rig's function
	chunks     uint32      // the pool's large-extent region
	maxBody    uint64
	header     time.Duration      // the gateway's HeaderTimeout (default its own)
	recorder   func(Reply, int64) // the chain's Recorder
	sends      *sendCounter       // counts the gateway endpoint's sends
}

// sendCounter counts what an endpoint sends, and how; the endpoint stays
// a transport.Poller (an event loop receives on it).
type sendCounter struct {
	transport.Conn
	poller           transport.Poller
	singles, batched atomic.Int64
	batches, largest atomic.Int64
}

func (c *sendCounter) Send(d desc.Desc) error {
	c.singles.Add(1)
	return c.Conn.Send(d)
}

func (c *sendCounter) SendBatch(ds []desc.Desc) (int, error) {
	c.batches.Add(1)
	c.batched.Add(int64(len(ds)))
	if int64(len(ds)) > c.largest.Load() {
		c.largest.Store(int64(len(ds)))
	}
	return c.Conn.SendBatch(ds)
}

func (c *sendCounter) FD() int                             { return c.poller.FD() }
func (c *sendCounter) TryRecv(ds []desc.Desc) (int, error) { return c.poller.TryRecv(ds) }

func newRigWith(t testing.TB, o rigOpts) *rig {
	t.Helper()
	buffers, inflight, timeout, hold := o.buffers, o.inflight, o.timeout, o.hold
	if o.bufferSize == 0 {
		o.bufferSize = 4096
	}
	if o.route == "" {
		o.route = "/c"
	}
	p, err := pool.Create("gwtest", pool.Layout{Buffers: buffers, BufferSize: o.bufferSize, Functions: 1, Chains: 1, Slots: 1, Chunks: o.chunks})
	if err != nil {
		t.Fatal(err)
	}
	p.SetFunction(0, 0, 1)
	if o.graph != nil {
		if err := p.SetGraph(0, o.graph); err != nil {
			t.Fatal(err)
		}
	} else {
		p.SetChain(0, []uint16{0})
	}
	f, err := transport.New("uds", transport.Options{App: "gwtest", Dir: t.TempDir(), UID: -1})
	if err != nil {
		t.Fatal(err)
	}
	gwc, err := f.Open(gwID)
	if err != nil {
		t.Fatal(err)
	}
	if c := o.sends; c != nil {
		c.Conn, c.poller = gwc, gwc.(transport.Poller)
		gwc = c
	}
	app, err := NewApp(AppConfig{Name: "gwtest", Pool: p, Conn: gwc, Inflight: inflight, MaxBody: o.maxBody})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan struct{})
	go func() { app.Run(); close(runDone) }()
	inst, err := f.Open(instID)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, p: p, app: app, inst: inst, held: make(chan desc.Desc, 64), hold: hold}
	instDone := make(chan struct{})
	go r.instance(instDone)
	p.StartSlot(0, instID, 1)
	p.SetSlotState(0, pool.SlotReady)

	chains := []*Chain{{
		Name: "c", Route: o.route, App: app, Index: 0, First: 0, FirstName: "fn",
		Methods: []string{"POST"}, Timeout: timeout, Auth: o.auth, Recorder: o.recorder,
	}}
	for i, rt := range o.others {
		chains = append(chains, &Chain{Name: "o" + strconv.Itoa(i), Route: rt, App: app, Methods: []string{"POST"}, Timeout: timeout})
	}
	r.g, err = New(Config{Chains: chains, TLS: o.tls, HeaderTimeout: o.header})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	go r.g.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.g.Shutdown(ctx)
		inst.Close()
		<-instDone
		gwc.Close()
		<-runDone
		f.Close()
		p.Close()
	})
	return r
}

// instance plays the chain's one step on a locked thread.
func (r *rig) instance(done chan struct{}) {
	defer close(done)
	runtime.LockOSThread()
	var ds [transport.MaxBatch]desc.Desc
	for {
		n, err := r.inst.Recv(ds[:])
		if err != nil {
			return
		}
		for _, d := range ds[:n] {
			r.p.Stats(0).Queue.Add(-1)
			if !r.p.Accept(d.Buf, d.Gen, d.Src, instID) {
				continue
			}
			if r.hold {
				r.held <- d
				continue
			}
			r.reply(d)
		}
	}
}

// take returns the next request the held step received, or fails the test
// when none comes within 10 s (a test that waits for one the gateway never
// sent must fail, not hang until the test binary's timeout).
func (r *rig) take(t *testing.T) desc.Desc {
	t.Helper()
	select {
	case d := <-r.held:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the step within 10s")
		return desc.Desc{}
	}
}

// reply sends d's buffer back to the gateway as the chain's answer.
func (r *rig) reply(d desc.Desc) {
	transport.Pass(r.p, r.inst, desc.Desc{Dst: gwID, Buf: d.Buf, Flags: desc.FlagReply})
}

// do sends one request with a fresh connection and returns the response.
func (r *rig) do(method, body string) (*http.Response, string) {
	r.t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.addr+"/c", strings.NewReader(body))
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (r *rig) waitFree(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.p.FreeBuffers() != want || r.app.Inflight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d buffers free, %d in flight; want %d and 0", r.p.FreeBuffers(), r.app.Inflight(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEcho(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, false)
	resp, body := r.do("POST", "hello")
	if resp.StatusCode != 200 || body != "hello" || resp.Header.Get("Date") == "" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = r.do("GET", "")
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: %d %q Allow=%q", resp.StatusCode, body, resp.Header.Get("Allow"))
	}
	r.waitFree(t, 8)
}

// Expect: 100-continue gets its interim response before the client sends
// the body.
func TestExpectContinue(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, false)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("interim response %q", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "abc")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "abc" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
}

func TestPoolExhausted(t *testing.T) {
	r := newRig(t, 4, 4, 5*time.Second, false)
	var taken []uint32
	for {
		i, ok := r.p.Alloc(99)
		if !ok {
			break
		}
		taken = append(taken, i)
	}
	resp, body := r.do("POST", "x")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "no free pool buffer") {
		t.Fatalf("with the pool empty: %d %q Retry-After=%q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	for _, i := range taken {
		r.p.Free(i, 99)
	}
	if resp, body := r.do("POST", "x"); resp.StatusCode != 200 || body != "x" {
		t.Fatalf("after: %d %q", resp.StatusCode, body)
	}
	r.waitFree(t, 4)
}

func TestInflightBound(t *testing.T) {
	r := newRig(t, 8, 1, 5*time.Second, true)
	first := make(chan int, 1)
	go func() {
		resp, _ := r.do("POST", "first")
		first <- resp.StatusCode
	}()
	d := r.take(t)
	resp, body := r.do("POST", "second")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the bound: %d %q", resp.StatusCode, body)
	}
	r.reply(d)
	if s := <-first; s != 200 {
		t.Fatalf("first: %d", s)
	}
	r.waitFree(t, 8)
}

// A reply after the deadline: the client got 504 already; the buffer stays
// out until the step gives it back, and is freed then.
func TestTimeoutThenLateReply(t *testing.T) {
	r := newRig(t, 8, 4, 100*time.Millisecond, true)
	resp, body := r.do("POST", "slow")
	if resp.StatusCode != 504 {
		t.Fatalf("got %d %q, want 504", resp.StatusCode, body)
	}
	d := r.take(t)
	if r.p.FreeBuffers() != 7 || r.app.Inflight() != 1 {
		t.Fatalf("before the late reply: %d free, %d in flight", r.p.FreeBuffers(), r.app.Inflight())
	}
	r.reply(d)
	r.waitFree(t, 8)
	if r.app.Stats().Abandoned.Load() != 1 || r.app.Stats().Timeouts.Load() != 1 {
		t.Fatalf("abandoned %d, timeouts %d", r.app.Stats().Abandoned.Load(), r.app.Stats().Timeouts.Load())
	}
}

// The daemon reclaims a dead instance's buffers; Fail answers 502.
func TestFailOnReclaim(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, true)
	got := make(chan string, 1)
	go func() {
		resp, body := r.do("POST", "doomed")
		got <- strconv.Itoa(resp.StatusCode) + " " + body
	}()
	r.take(t)
	n := r.p.Reclaim(instID, func(buf uint32) { r.app.Fail(buf, 502, "instance died") })
	if n != 1 {
		t.Fatalf("reclaimed %d buffers", n)
	}
	if g := <-got; g != "502 instance died" {
		t.Fatalf("got %q", g)
	}
	r.waitFree(t, 8)
}

// With no ready instance the request waits for one until the deadline,
// then gets 503.
func TestNoInstance(t *testing.T) {
	r := newRig(t, 8, 4, 150*time.Millisecond, false)
	r.p.SetSlotState(0, pool.SlotStarting)
	resp, body := r.do("POST", "x")
	if resp.StatusCode != 503 || !strings.Contains(body, "no instance of function fn") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	r.waitFree(t, 8)
	// An instance that becomes ready while a request waits serves it.
	r = newRig(t, 8, 4, 5*time.Second, false)
	r.p.SetSlotState(0, pool.SlotStarting)
	go func() { time.Sleep(30 * time.Millisecond); r.p.SetSlotState(0, pool.SlotReady) }()
	if resp, body := r.do("POST", "late"); resp.StatusCode != 200 || body != "late" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

// keepAlive drives requests over one raw keep-alive connection without
// allocating on the client side, so allocation counts are the gateway's.
type keepAlive struct {
	c    net.Conn
	req  []byte
	resp []byte
}

func newKeepAlive(tb testing.TB, addr, body string) *keepAlive {
	return newKeepAliveTo(tb, addr, "/c", "", body)
}

// newKeepAliveTo is newKeepAlive for a request to path with extra header
// lines hdr ("Name: value\r\n" each).
func newKeepAliveTo(tb testing.TB, addr, path, hdr, body string) *keepAlive {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	k := &keepAlive{c: c, req: []byte("POST " + path + " HTTP/1.1\r\nHost: x\r\n" + hdr + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)}
	// The first response tells how long they all are (the Date field has
	// a fixed width).
	c.Write(k.req)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		tb.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != body || br.Buffered() != 0 {
		tb.Fatalf("first response %d %q", resp.StatusCode, b)
	}
	var head strings.Builder
	resp.Header.Write(&head)
	n := len("HTTP/1.1 200 OK\r\n") + head.Len() + 2 + len(body)
	k.resp = make([]byte, n)
	return k
}

func (k *keepAlive) roundTrip(tb testing.TB) {
	if _, err := k.c.Write(k.req); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(k.c, k.resp); err != nil {
		tb.Fatal(err)
	}
}

// Serving a request allocates nothing: parse, admission, body into the
// pool, dispatch, reply, response.
func TestRequestZeroAllocs(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, false)
	k := newKeepAlive(t, r.addr, "zero allocations")
	for range 100 {
		k.roundTrip(t) // warm up timers, caches
	}
	if a := testing.AllocsPerRun(2000, func() { k.roundTrip(t) }); a != 0 {
		t.Fatalf("%v allocations per request, want 0", a)
	}
	if !strings.HasSuffix(string(k.resp), "zero allocations") {
		t.Fatalf("response %q", k.resp)
	}
}

// BenchmarkRequest: one request through the gateway and a one-step chain
// (an echo endpoint on the uds transport) and back, over keep-alive. The
// sub-benchmarks add what a route may ask for: a route with a parameter in
// a table of patterns, an API key, a (cached) HS256 token, a recorder of
// failures. Compare them with exact, in one run.
func BenchmarkRequest(b *testing.B) {
	secret := []byte("a benchmark secret of 32 bytes or more")
	keys, _ := auth.New(auth.Config{APIKeys: []string{"k1", "k2"}})
	jwt, _ := auth.New(auth.Config{JWT: &auth.JWT{Secret: secret}})
	others := []string{"/users/{id}/files/*", "/static/*", "/a/{x}/b/{y}", "/hello", "/healthz"}
	for _, c := range []struct {
		name, route, path, hdr string
		auth                   *auth.Checker
		recorder               func(Reply, int64)
	}{
		{"exact", "/c", "/c", "", nil, nil},
		{"param", "/users/{id}", "/users/42", "", nil, nil},
		{"apikey", "/c", "/c", "X-API-Key: k2\r\n", keys, nil},
		{"jwt", "/c", "/c", "Authorization: Bearer " + hs256(secret) + "\r\n", jwt, nil},
		// The chain records failures (record: failures, the default): a
		// successful request pays one comparison. Compare with exact.
		{"recorder", "/c", "/c", "", nil, func(Reply, int64) {}},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := newRigWith(b, rigOpts{buffers: 64, inflight: 16, timeout: 5 * time.Second, route: c.route, auth: c.auth, others: others, recorder: c.recorder})
			k := newKeepAliveTo(b, r.addr, c.path, c.hdr, strings.Repeat("x", 64))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				k.roundTrip(b)
			}
		})
	}
}

// hs256 makes a token valid for an hour.
func hs256(secret []byte) string {
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(`{"alg":"HS256"}`)) + "." + enc.EncodeToString([]byte(`{"exp":`+strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)+`}`))
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(m.Sum(nil))
}

// A request to a route with parameters, with an API key or a token, costs
// no allocation either.
func TestRoutedAuthorizedZeroAllocs(t *testing.T) {
	keys, _ := auth.New(auth.Config{APIKeys: []string{"k1"}})
	r := newRigWith(t, rigOpts{buffers: 8, inflight: 4, timeout: 5 * time.Second, route: "/users/{id}/files/*", auth: keys,
		others: []string{"/static/*", "/users/{id}"}})
	k := newKeepAliveTo(t, r.addr, "/users/7/files/a/b", "X-API-Key: k1\r\n", "zero allocations")
	for range 100 {
		k.roundTrip(t)
	}
	if a := testing.AllocsPerRun(2000, func() { k.roundTrip(t) }); a != 0 {
		t.Fatalf("%v allocations per request, want 0", a)
	}
}

// FuzzConn feeds arbitrary bytes to a connection of a gateway in front of
// an echo chain: the gateway never panics or hangs, everything it writes
// is a well-formed HTTP response, and every buffer comes back.
func FuzzConn(f *testing.F) {
	f.Add([]byte("POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcPOST /c HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nTrailer: t\r\n\r\n"))
	f.Add([]byte("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"))
	f.Add([]byte("POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 9999\r\n\r\n"))
	f.Add([]byte("GET /nope HTTP/1.0\r\n\r\n"))
	f.Add([]byte("POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"))
	r := newRigWith(f, rigOpts{buffers: 16, inflight: 8, timeout: 2 * time.Second, header: 200 * time.Millisecond})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(in)
			c.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("reading the gateway's answer: %v (got %q)", err, out)
		}
		br := bufio.NewReader(strings.NewReader(string(out)))
		for br.Buffered() > 0 || len(out) > 0 {
			if _, err := br.Peek(1); err == io.EOF {
				break
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("malformed response in %q: %v", out, err)
			}
			if _, err := io.ReadAll(resp.Body); err != nil {
				t.Fatalf("response body in %q: %v", out, err)
			}
			resp.Body.Close()
		}
		r.waitFree(t, 16)
	})
}
