package peer

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/gateway"
)

// A chain whose second step runs only on another node: each request goes
// over once and comes back; 64 clients at once; nothing is left held or
// in flight on either node; the reply carries what the remote step set
// (content type, a response header).
func TestHopAcrossNodes(t *testing.T) {
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}})
	connect(a, b)

	code, body, hdr := a.post("hello")
	if code != 200 || body != "OLLEH" || hdr.Get("Content-Type") != "text/x-rev" || hdr.Get("X-Rev-Node") != "b" {
		t.Fatalf("got %d %q %v", code, body, hdr)
	}
	const clients, each = 64, 20
	var wg sync.WaitGroup
	var bad atomic.Int64
	var first atomic.Value
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				s := fmt.Sprintf("client-%d-request-%d", c, i)
				code, body, _ := a.post(s)
				if code != 200 || body != want(s) {
					bad.Add(1)
					first.CompareAndSwap(nil, fmt.Sprintf("%d %q for %q", code, body, s))
				}
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d of %d requests went wrong, first: %v", n, clients*each, first.Load())
	}
	a.waitIdle()
	b.waitIdle()
	st := a.app.Stats()
	if st.Shipped.Load() != clients*each+1 || st.Answered.Load() != st.Shipped.Load() || st.Failed.Load() != 0 {
		t.Fatalf("a shipped %d, answered %d, failed %d", st.Shipped.Load(), st.Answered.Load(), st.Failed.Load())
	}
	if b.app.Stats().Shipped.Load() != 0 {
		t.Fatal("b handed requests on to another node")
	}
}

// Ingress anywhere: a node with no instance of the chain's first step
// hands the request to one that has, where the rest of the chain runs too
// (a request never leaves the node it was handed to at that step: a third
// node is not involved).
func TestIngressAnywhere(t *testing.T) {
	a := newTNode(t, "a", nodeOpts{})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{true, true}})
	c := newTNode(t, "c", nodeOpts{})
	connect(a, b, c)
	for _, n := range []*tnode{a, c} {
		for i := range 20 {
			s := fmt.Sprintf("%s-%d", n.name, i)
			if code, body, _ := n.post(s); code != 200 || body != want(s) {
				t.Fatalf("via %s: %d %q", n.name, code, body)
			}
		}
	}
	if b.app.Stats().Shipped.Load() != 0 {
		t.Fatal("b handed requests on")
	}
	for _, n := range []*tnode{a, b, c} {
		n.waitIdle()
	}
}

// The node running a step dies while requests wait there: they are
// answered 502 at once at the origin, naming the node, and nothing stays
// held there.
func TestNodeDiesMidChain(t *testing.T) {
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, holdRev: true})
	connect(a, b)
	const k = 8
	codes := make(chan string, k)
	for i := range k {
		go func() {
			code, body, _ := a.post(fmt.Sprint("r", i))
			codes <- fmt.Sprint(code, " ", body)
		}()
	}
	var held []desc.Desc
	for range k {
		held = append(held, <-b.hold)
	}
	began := time.Now()
	b.stop() // its links break
	for range k {
		got := <-codes
		if !strings.HasPrefix(got, "502 ") || !strings.Contains(got, "node b went away") {
			t.Fatalf("answer %q, want a 502 naming node b", got)
		}
	}
	// "node b went away", not the deadline's 504: answered when the links
	// broke, not 10 s later (a bound by the clock would fail at load).
	t.Logf("the 502s took %v", time.Since(began))
	a.waitIdle()
	if a.app.Stats().Failed.Load() != k {
		t.Fatalf("failed %d", a.app.Stats().Failed.Load())
	}
	// b's instance finishes what it held: the replies have no link to go
	// to and are dropped, their buffers freed.
	for _, d := range held {
		b.release(d)
	}
	b.waitIdle()
}

// A node cut off (nothing arrives from it any more, the link stays open)
// is noticed within three keepalives: its requests are answered 502.
func TestNodeCutOff(t *testing.T) {
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, keepalive: 50 * time.Millisecond})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, holdRev: true, keepalive: 50 * time.Millisecond})
	// a reaches b through a proxy that can freeze.
	px := newProxy(t, b.paddr)
	peers := []Peer{{Name: "a", Address: a.paddr}, {Name: "b", Address: px.addr}}
	a.hub.SetPeers(peers)
	// b takes a's link only from a's address: the proxy's is 127.0.0.1 too.
	b.hub.SetPeers(peers)
	byFn := map[string][]NodeCount{"upper": {{Node: "a", Instances: 1}}, "rev": {{Node: "b", Instances: 1}}}
	a.app.SetPlacement(byFn)
	b.app.SetPlacement(byFn)
	a.waitLinks(1)
	a.syncRemote()
	got := make(chan string, 1)
	go func() {
		code, body, _ := a.post("x")
		got <- fmt.Sprint(code, " ", body)
	}()
	d := <-b.hold
	px.freeze()
	select {
	case s := <-got:
		if !strings.HasPrefix(s, "502 ") || !strings.Contains(s, "stopped answering") {
			t.Fatalf("answer %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer 5s after the node was cut off")
	}
	a.waitIdle()
	b.release(d)
	px.close()
	b.waitIdle()
}

// Past its deadline, a request out at another node is answered 504 at the
// origin by its timer; its buffer comes back when the reply does.
func TestDeadlineAcrossNodes(t *testing.T) {
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, timeout: 300 * time.Millisecond})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, holdRev: true})
	connect(a, b)
	got := make(chan int, 1)
	go func() {
		code, _, _ := a.post("slow")
		got <- code
	}()
	d := <-b.hold
	if code := <-got; code != 504 {
		t.Fatalf("got %d, want 504", code)
	}
	b.release(d) // late: b answers it 504 itself (the deadline travelled along)
	a.waitIdle()
	b.waitIdle()
}

// A node that refuses a request before running anything (at its in-flight
// limit) makes the origin try another that runs the step.
func TestRefusedGoesElsewhere(t *testing.T) {
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, holdRev: true, inflight: 1})
	c := newTNode(t, "c", nodeOpts{runs: [2]bool{false, true}})
	connect(a, b, c)
	// Fill b: one request held there (the others may go to c).
	var held []desc.Desc
	var wg sync.WaitGroup
	for held == nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.post("fill") }()
		select {
		case d := <-b.hold:
			held = append(held, d)
		case <-time.After(200 * time.Millisecond):
		}
	}
	for i := range 20 {
		s := fmt.Sprint("r", i)
		if code, body, _ := a.post(s); code != 200 || body != want(s) {
			t.Fatalf("got %d %q", code, body)
		}
	}
	for _, d := range held {
		b.release(d)
	}
	wg.Wait()
	for _, n := range []*tnode{a, b, c} {
		n.waitIdle()
	}
}

// Links need the cluster token when one is set: a node without it (or
// with another) cannot join, and none is taken from a node not in the map.
func TestHandshake(t *testing.T) {
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, token: []byte("s3cret")})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, token: []byte("s3cret")})
	connect(a, b)
	if code, body, _ := a.post("tok"); code != 200 || body != "KOT" {
		t.Fatalf("with the token: %d %q", code, body)
	}
	for _, tok := range [][]byte{nil, []byte("other")} {
		nc, err := net.Dial("tcp", a.paddr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(nc, "b", tok, true); err == nil {
			t.Fatalf("token %q: handshake succeeded", tok)
		}
		nc.Close()
	}
	// Without tokens: an unknown node is refused.
	c := newTNode(t, "c", nodeOpts{})
	d := newTNode(t, "d", nodeOpts{})
	c.hub.SetPeers([]Peer{{Name: "c", Address: c.paddr}})
	nc, err := net.Dial("tcp", c.paddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := handshake(nc, "d", nil, true); err != nil {
		t.Fatal(err) // the hello goes through; then the verdict says no
	}
	if err := readVerdict(nc, "c"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("a node not in the map: verdict %v", err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a node not in the map kept its link: %v", err)
	}
	_ = d
}

// proxy forwards TCP to addr until frozen (it then passes nothing on,
// and closes nothing: a cut cable).
type proxy struct {
	t      testing.TB
	ln     net.Listener
	addr   string
	to     string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newProxy(t testing.TB, to string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, addr: ln.Addr().String(), to: to}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go p.pipe(c, u)
			go p.pipe(u, c)
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) pipe(from, to net.Conn) {
	b := make([]byte, 32<<10)
	for {
		n, err := from.Read(b)
		if err != nil {
			return
		}
		if p.frozen.Load() {
			continue // dropped
		}
		if _, err := to.Write(b[:n]); err != nil {
			return
		}
	}
}

func (p *proxy) freeze() { p.frozen.Store(true) }

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
}

// memBody is a body already in memory.
type memBody struct{ b []byte }

func (m *memBody) ReadBody(dst []byte) (int, *gateway.Error) { return copy(dst, m.b), nil }

type chanReplier chan gateway.Reply

func (c chanReplier) Reply(r gateway.Reply) { c <- r }

// A request that crosses to another node and back allocates nothing on
// either node: the sender's endpoint, the links' writers and readers, the
// receiver's admission.
func TestHopZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}})
	connect(a, b)
	rep := make(chanReplier, 1)
	body := &memBody{b: []byte("zero allocations")}
	req := gateway.Request{}
	round := func() {
		req = gateway.Request{Chain: a.ch, Method: post, Path: path, Length: int64(len(body.b)), Body: body, Reply: rep}
		if err := a.g.Admit(&req); err != nil {
			t.Fatal(err)
		}
		r := <-rep
		if r.Status() != 200 {
			t.Fatalf("status %d %q", r.Status(), r.Body())
		}
		r.Done()
	}
	for range 200 {
		round() // warm: queues and buffers grown
	}
	if n := testing.AllocsPerRun(1000, round); n != 0 {
		t.Fatalf("a round trip across nodes allocates %v times", n)
	}
}

var post, path = []byte("POST"), []byte("/buy")
