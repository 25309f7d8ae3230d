package peer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// Branches, joins and calls cross nodes: one whose function runs only on
// another node goes there with its place in the graph, and its result
// comes back to the node that holds the join's state (and the client), or
// the caller, as a local one would; nothing is held after on any node.

// fanGraph is first → (far, near) → join, with the given functions.
func fanGraph(far, near, join int) []pool.Node {
	return []pool.Node{
		{Name: "first", Fn: fnUpper, Next: []uint8{1, 2}, JoinAt: 3},
		{Name: "far", Fn: uint16(far), Next: []uint8{3}, JoinAt: pool.NoNode},
		{Name: "near", Fn: uint16(near), Next: []uint8{3}, JoinAt: pool.NoNode},
		{Name: "join", Fn: uint16(join), JoinAt: pool.NoNode, IsJoin: true},
	}
}

// A fan-out whose branch "far" runs only on node b: it runs there, and
// the join (on a) gets its output beside the local branch's.
func TestBranchCrosses(t *testing.T) {
	g := fanGraph(fnRev, fnUpper, fnUpper)
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, graph: g})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, graph: g})
	connect(a, b)
	const k = 20
	for range k {
		if code, body, _ := a.post("hello"); code != 200 || body != "200:rev@b|0:upper@a" {
			t.Fatalf("got %d %q", code, body)
		}
	}
	crossed(t, k, a, b)
}

// A branch of two steps, the first only on b, the second only on a: it
// goes to b, comes back to a for its second step (a branch of b's
// request now), back to b with its end, and back to a's join.
func TestBranchCrossesTwice(t *testing.T) {
	g := []pool.Node{
		{Name: "first", Fn: fnUpper, Next: []uint8{1, 3}, JoinAt: 4},
		{Name: "far1", Fn: fnRev, Next: []uint8{2}, JoinAt: pool.NoNode},
		{Name: "far2", Fn: fnUpper, Next: []uint8{4}, JoinAt: pool.NoNode},
		{Name: "near", Fn: fnUpper, Next: []uint8{4}, JoinAt: pool.NoNode},
		{Name: "join", Fn: fnUpper, JoinAt: pool.NoNode, IsJoin: true},
	}
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, graph: g})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, graph: g})
	connect(a, b)
	if code, body, _ := a.post("hello"); code != 200 || body != "200:upper@a|0:upper@a" {
		t.Fatalf("got %d %q", code, body)
	}
	crossed(t, 1, a, b)
	if n := b.app.Stats().Shipped.Load(); n != 1 {
		t.Fatalf("b shipped %d, want 1 (far2 back to a)", n)
	}
}

// A join whose function runs only on node b: its inputs go there with
// it, each with its status and content type, and b's answer (the join's
// output, the end of the chain) is the client's.
func TestJoinCrosses(t *testing.T) {
	g := fanGraph(fnUpper, fnUpper, fnRev)
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, graph: g})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, graph: g})
	connect(a, b)
	const k = 20
	for range k {
		if code, body, _ := a.post("hello"); code != 200 || body != "0:upper@a|0:upper@a" {
			t.Fatalf("got %d %q", code, body)
		}
	}
	crossed(t, k, a, b)
}

// The node running a branch dies while it holds it: the join gets that
// branch as a failed input (502, naming the node) at once, the quorum (all
// branches) decides, and the request completes with the other branch.
func TestNodeDiesMidFanOut(t *testing.T) {
	g := fanGraph(fnRev, fnUpper, fnUpper)
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, graph: g})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, graph: g, holdRev: true})
	connect(a, b)
	const k = 8
	got := make(chan string, k)
	for i := range k {
		go func() {
			code, body, _ := a.post(fmt.Sprint("r", i))
			got <- fmt.Sprint(code, " ", body)
		}()
	}
	for range k {
		<-b.hold
	}
	began := time.Now()
	b.stop()
	for range k {
		s := <-got
		if !strings.HasPrefix(s, "200 502:spry: node b went away") || !strings.HasSuffix(s, "|0:upper@a") {
			t.Fatalf("answer %q, want 200 with a 502 branch naming node b", s)
		}
	}
	// A 502 naming node b, not the deadline's 504: answered when the
	// links broke (a bound by the clock would fail at load).
	t.Logf("the failed branches took %v", time.Since(began))
	a.waitIdle()
	if n := a.app.Stats().Failed.Load(); n != k {
		t.Fatalf("failed %d, want %d", n, k)
	}
}

// A call (req.Call) of a function that runs only on node b: it runs
// there, and the caller gets its answer, with its tag.
func TestCallCrosses(t *testing.T) {
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}})
	connect(a, b)
	const callerID = 30
	c, err := a.fab.Open(callerID)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := a.p
	const k = 10
	for i := range k {
		buf, ok := p.Alloc(callerID)
		if !ok {
			t.Fatal("no buffer")
		}
		h := p.Header(buf)
		h.SetChain(0)
		h.SetCall(pool.CallFrame{Caller: callerID, Callee: fnRev, Tag: uint32(7 + i), Depth: 1})
		h.SetTimes(mono.Now(), mono.Now()+int64(10*time.Second))
		h.SetData(0, uint32(copy(p.Buffer(buf), fmt.Sprint("call ", i))))
		h.SetPlace(pool.CallNode, pool.PhaseQueued)
		if err := transport.Forward(p, c, fnRev, desc.Desc{Buf: buf, Hop: pool.CallNode, Flags: desc.FlagCall}, 1); err != nil {
			t.Fatal(err)
		}
		d := recvOne(t, c)
		if !d.Is(desc.FlagReturn) || !p.Accept(d.Buf, d.Gen, d.Src, callerID) {
			t.Fatalf("answer %v", d)
		}
		rh := p.Header(d.Buf)
		if msg := string(p.Data(d.Buf)); rh.Status() != 200 || rh.Call().Tag != uint32(7+i) || msg != fmt.Sprintf("rev@b(depth 1):call %d", i) {
			t.Fatalf("answer: status %d tag %d %q", rh.Status(), rh.Call().Tag, msg)
		}
		p.Free(d.Buf, callerID)
	}
	crossed(t, k, a, b)
}

// recvOne receives one descriptor on c, or fails the test after 10 s.
func recvOne(t *testing.T, c transport.Conn) desc.Desc {
	t.Helper()
	got := make(chan desc.Desc, 1)
	go func() {
		var ds [transport.MaxBatch]desc.Desc
		n, err := c.Recv(ds[:])
		if err == nil && n > 0 {
			got <- ds[0]
		}
	}()
	select {
	case d := <-got:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the caller got no answer")
		return desc.Desc{}
	}
}

// A line step of a graph chain crosses: the other node runs the rest of
// the chain (here its fan-out and join too).
func TestGraphLineCrosses(t *testing.T) {
	g := []pool.Node{
		{Name: "first", Fn: fnUpper, Next: []uint8{1}, JoinAt: pool.NoNode},
		{Name: "fan", Fn: fnRev, Next: []uint8{2, 3}, JoinAt: 4},
		{Name: "l", Fn: fnRev, Next: []uint8{4}, JoinAt: pool.NoNode},
		{Name: "r", Fn: fnRev, Next: []uint8{4}, JoinAt: pool.NoNode},
		{Name: "join", Fn: fnRev, JoinAt: pool.NoNode, IsJoin: true},
	}
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, graph: g})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, graph: g})
	connect(a, b)
	code, body, _ := a.post("hello")
	if code != 200 || (body != "0:rev@b|0:rev@b" && body != "200:rev@b|200:rev@b") {
		t.Fatalf("got %d %q", code, body)
	}
	crossed(t, 1, a, b)
}

// crossed checks that node a handed k requests to b, each answered, none
// failed, that the links hold no open request, and that both nodes hold
// nothing.
func crossed(t *testing.T, k uint64, a, b *tnode) {
	t.Helper()
	a.waitIdle()
	b.waitIdle()
	st := a.app.Stats()
	if st.Shipped.Load() != k || st.Answered.Load() != k || st.Failed.Load() != 0 {
		t.Fatalf("a: shipped %d, answered %d, failed %d; want %d, %d, 0", st.Shipped.Load(), st.Answered.Load(), st.Failed.Load(), k, k)
	}
	for _, n := range []*tnode{a, b} {
		for fn, slot := range []uint32{1, 3} {
			if q := n.p.Stats(slot).Queue.Load(); q != 0 {
				t.Fatalf("%s: remote slot of %s queue %d", n.name, fnNames[fn], q)
			}
		}
		openOnLinks(t, n)
	}
}

// openOnLinks checks that no request is open on node n's out-links.
func openOnLinks(t *testing.T, n *tnode) {
	t.Helper()
	for peer, l := range *n.hub.links.Load() {
		if o := l.open.Load(); o != 0 {
			t.Fatalf("%s: %d requests open on the link to %s", n.name, o, peer)
		}
	}
}

// A node that never answers some requests (its replies are lost on the
// way; the link stays up): they are given up at their deadline (504 by
// the gateway, the buffers back by Sweep), and nothing stays open on the
// link — an open count that only a reply closed grew with each one, and
// sent a link's frames to its writer goroutine for good.
func TestUnansweredSettle(t *testing.T) {
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, timeout: 200 * time.Millisecond, keepalive: 5 * time.Second})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, keepalive: 5 * time.Second, holdRev: true})
	px := newProxy(t, b.paddr)
	peers := []Peer{{Name: "a", Address: a.paddr}, {Name: "b", Address: px.addr}}
	a.hub.SetPeers(peers)
	b.hub.SetPeers(peers)
	byFn := map[string][]NodeCount{"upper": {{Node: "a", Instances: 1}}, "rev": {{Node: "b", Instances: 1}}}
	a.app.SetPlacement(byFn)
	b.app.SetPlacement(byFn)
	a.waitLinks(1)
	a.syncRemote()
	l := a.hub.link("b")
	const k = 6
	got := make(chan int, k)
	for range k {
		go func() { code, _, _ := a.post("never"); got <- code }()
	}
	var held []desc.Desc
	select {
	case d := <-b.hold:
		held = append(held, d)
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached b")
	}
	px.freeze() // from here nothing b sends reaches a, nor a's requests b
	for range k {
		if code := <-got; code != 504 {
			t.Fatalf("got %d, want 504", code)
		}
	}
	// Given up: Sweep takes back what is out at b, the link stays up.
	for out := true; out; {
		a.app.Sweep(0)
		out = false
		for i := range a.app.out {
			out = out || a.app.out[i].word.Load()&7 != stFree
		}
		time.Sleep(5 * time.Millisecond)
	}
	a.waitIdle()
	if a.hub.link("b") != l {
		t.Fatal("the link went down: the test needs it up")
	}
	if o := l.open.Load(); o != 0 {
		t.Fatalf("%d requests open on the link after every one was given up", o)
	}
	for len(held) < k {
		select {
		case d := <-b.hold:
			held = append(held, d)
			continue
		default:
		}
		break
	}
	for _, d := range held {
		b.release(d)
	}
	px.close()
	b.waitIdle()
}
