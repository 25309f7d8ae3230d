package peer

import (
	"strings"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// Branches, joins and calls do not cross nodes: one whose function runs
// only on another node is answered StatusLocalOnly at once, with a message
// naming the function, counted; nothing reaches the other node, nothing is
// held after.

// A fan-out whose branch "rev" runs only on node b: the join (on a) gets
// that branch as a failed input (503 and the message), the other branch's
// output, and the request completes.
func TestBranchStaysLocal(t *testing.T) {
	g := []pool.Node{
		{Name: "first", Fn: fnUpper, Next: []uint8{1, 2}, JoinAt: 3},
		{Name: "far", Fn: fnRev, Next: []uint8{3}, JoinAt: pool.NoNode},
		{Name: "near", Fn: fnUpper, Next: []uint8{3}, JoinAt: pool.NoNode},
		{Name: "join", Fn: fnUpper, JoinAt: pool.NoNode, IsJoin: true},
	}
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, graph: g})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, graph: g})
	connect(a, b)
	for range 3 {
		code, body, _ := a.post("hello")
		parts := strings.Split(body, "|")
		if code != 200 || len(parts) != 2 || !strings.HasPrefix(parts[0], "503:spry: a branch of a fan-out of chain buy needs function rev") ||
			!strings.Contains(parts[0], "node a") || parts[1] != "200:upper@a" && parts[1] != "0:upper@a" {
			t.Fatalf("got %d %q", code, body)
		}
	}
	localOnly(t, a, b, fnRev, 3)
}

// A join whose function runs only on node b: the client gets 503 and the
// message.
func TestJoinStaysLocal(t *testing.T) {
	g := []pool.Node{
		{Name: "first", Fn: fnUpper, Next: []uint8{1, 2}, JoinAt: 3},
		{Name: "l", Fn: fnUpper, Next: []uint8{3}, JoinAt: pool.NoNode},
		{Name: "r", Fn: fnUpper, Next: []uint8{3}, JoinAt: pool.NoNode},
		{Name: "join", Fn: fnRev, JoinAt: pool.NoNode, IsJoin: true},
	}
	a := newTNode(t, "a", nodeOpts{runs: [2]bool{true, false}, graph: g})
	b := newTNode(t, "b", nodeOpts{runs: [2]bool{false, true}, graph: g})
	connect(a, b)
	code, body, _ := a.post("hello")
	if code != StatusLocalOnly || !strings.Contains(body, "the join of chain buy needs function rev, which has no ready instance on node a") {
		t.Fatalf("got %d %q", code, body)
	}
	localOnly(t, a, b, fnRev, 1)
}

// A line step of a graph chain still crosses: the other node runs the
// rest of the chain (here its fan-out and join too).
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
	a.waitIdle()
	b.waitIdle()
	if st := a.app.Stats(); st.Shipped.Load() != 1 || st.LocalOnly.Load() != 0 {
		t.Fatalf("a shipped %d, local-only %d", st.Shipped.Load(), st.LocalOnly.Load())
	}
}

// A call (req.Call) of a function that runs only on node b: the caller
// gets a failed answer at once, 503 with the message.
func TestCallStaysLocal(t *testing.T) {
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
	buf, ok := p.Alloc(callerID)
	if !ok {
		t.Fatal("no buffer")
	}
	h := p.Header(buf)
	h.SetChain(0)
	h.SetCall(pool.CallFrame{Caller: callerID, Callee: fnRev, Tag: 7})
	h.SetTimes(mono.Now(), mono.Now()+int64(10*time.Second))
	h.SetData(0, uint32(copy(p.Buffer(buf), "call me")))
	h.SetPlace(pool.CallNode, pool.PhaseQueued)
	if err := transport.Forward(p, c, fnRev, desc.Desc{Buf: buf, Hop: pool.CallNode, Flags: desc.FlagCall}, 1); err != nil {
		t.Fatal(err)
	}
	got := make(chan desc.Desc, 1)
	go func() {
		var ds [transport.MaxBatch]desc.Desc
		n, err := c.Recv(ds[:])
		if err == nil && n > 0 {
			got <- ds[0]
		}
	}()
	var d desc.Desc
	select {
	case d = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the caller got no answer")
	}
	if !d.Is(desc.FlagReturn) || !p.Accept(d.Buf, d.Gen, d.Src, callerID) {
		t.Fatalf("answer %v", d)
	}
	rh := p.Header(d.Buf)
	msg := string(p.Data(d.Buf))
	if rh.Status() != StatusLocalOnly || rh.Call().Tag != 7 || !strings.Contains(msg, "a call of function rev, which has no ready instance on node a") {
		t.Fatalf("answer: status %d tag %d %q", rh.Status(), rh.Call().Tag, msg)
	}
	p.Free(d.Buf, callerID)
	localOnly(t, a, b, fnRev, 1)
}

// localOnly checks that node a answered k requests of function fn
// StatusLocalOnly, handed none to b, and that both hold nothing.
func localOnly(t *testing.T, a, b *tnode, fn int, k uint64) {
	t.Helper()
	a.waitIdle()
	b.waitIdle()
	st := a.app.Stats()
	if st.LocalOnly.Load() != k || a.app.LocalOnly(fn) != k || st.Shipped.Load() != 0 {
		t.Fatalf("a: local-only %d (fn %d), shipped %d; want %d, 0", st.LocalOnly.Load(), a.app.LocalOnly(fn), st.Shipped.Load(), k)
	}
	if q := a.p.Stats(a.app.fns[fn].remote).Queue.Load(); q != 0 {
		t.Fatalf("a: remote slot of %s queue %d", fnNames[fn], q)
	}
}
