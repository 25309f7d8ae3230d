package gateway

import (
	"bytes"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/graph"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
)

// fanGraph is first → [left, right] → join, every step the rig's function.
func fanGraph(wait time.Duration) []pool.Node {
	return []pool.Node{
		{Name: "first", Fn: 0, Next: []uint8{1, 2}, JoinAt: 3},
		{Name: "left", Fn: 0, Next: []uint8{3}, JoinAt: pool.NoNode},
		{Name: "right", Fn: 0, Next: []uint8{3}, JoinAt: pool.NoNode},
		{Name: "join", Fn: 0, JoinAt: pool.NoNode, IsJoin: true, Wait: wait},
	}
}

// branches plays the fan-out step: the request d at node first, split into
// its two tokens, which the test then sends on as it likes.
func (r *rig) branches(t *testing.T, d desc.Desc) [pool.MaxNext]graph.Branch {
	t.Helper()
	h := r.p.Header(d.Buf)
	h.SetPlace(0, pool.PhaseDone)
	rt, err := graph.Next(r.p, d.Buf)
	if err != nil || rt.Kind != graph.FanOut {
		t.Fatalf("route %+v %v", rt, err)
	}
	var bs [pool.MaxNext]graph.Branch
	if _, err := graph.Split(r.p, instID, d.Buf, rt, mono.Now(), &bs); err != nil {
		t.Fatal(err)
	}
	return bs
}

// deposit sends branch buffer b (held by the instance), its branch done, to
// the join, as the branch's last step does.
func (r *rig) deposit(t *testing.T, b uint32, body string) {
	t.Helper()
	if r.p.Header(b).Node() != 3 {
		r.p.Clear(b, instID)
	}
	r.p.Header(b).SetData(0, uint32(copy(r.p.Buffer(b), body)))
	if err := graph.ToGateway(r.p, r.inst, b, graph.Route{Kind: graph.Join, Node: 3}); err != nil {
		t.Fatal(err)
	}
}

// The gateway collects a join's inputs: one that arrives twice (a forged
// second for the same branch) is dropped; when all arrived, the join step
// gets one buffer listing them, which frees them with itself.
func TestJoinCollects(t *testing.T) {
	r := newRigWith(t, rigOpts{buffers: 32, inflight: 8, timeout: 5 * time.Second, hold: true, graph: fanGraph(0)})
	rep := &chanReplier{c: make(chan Reply, 1)}
	if err := r.g.Admit(&Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Body: &memBody{[]byte("in")}, Reply: rep}); err != nil {
		t.Fatal(err)
	}
	bs := r.branches(t, r.take(t))
	// The branches' stamps: a branch's end to its join's start is no hop
	// (below: the join starts a second after the left branch ended).
	now := mono.Now()
	for _, b := range bs[:2] {
		h := r.p.Header(b.Buf)
		h.HopStart(int(h.Node()), now)
		h.HopEnd(int(h.Node()), now)
	}
	// A forged duplicate of the left branch's output: its header copied.
	dup, _ := r.p.Alloc(instID)
	r.p.Header(dup).CopyMeta(r.p.Header(bs[0].Buf))
	r.deposit(t, bs[0].Buf, "L")
	r.deposit(t, dup, "L again")
	select {
	case d := <-r.held:
		t.Fatalf("the join ran on one input: %v", d)
	case <-time.After(50 * time.Millisecond):
	}
	r.deposit(t, bs[1].Buf, "R")
	d := r.take(t)
	if d.Hop != 3 {
		t.Fatalf("the join's buffer went to node %d", d.Hop)
	}
	info := r.p.Inputs(d.Buf)
	in := func(i int) string {
		b, ok := r.p.Input(d.Buf, i)
		if !ok {
			return "-"
		}
		return string(r.p.Data(b))
	}
	if info != (pool.JoinInfo{Width: 2, Of: 2, Arrived: 2, OK: 2}) || in(0) != "L" || in(1) != "R" {
		t.Fatalf("join inputs %+v: %q %q", info, in(0), in(1))
	}
	if r.app.Stats().LateInputs.Load() != 1 {
		t.Fatalf("late inputs %d, want the duplicate", r.app.Stats().LateInputs.Load())
	}
	copy(r.p.Buffer(d.Buf), "joined")
	r.p.Header(d.Buf).SetData(0, 6)
	r.p.Header(d.Buf).HopStart(3, now+int64(time.Second))
	r.p.Header(d.Buf).HopEnd(3, now+int64(time.Second))
	r.reply(d)
	got := <-rep.c
	if string(got.Body()) != "joined" {
		t.Fatalf("reply %q", got.Body())
	}
	got.Done()
	if n := r.app.Stats().Transits.Load(); n != 0 {
		t.Fatalf("%d hops counted (%d ns), want none: the branches end at the join", n, r.app.Stats().TransitNs.Load())
	}
	r.waitFree(t, 32)
}

// A join with a wait runs with what arrived; the branch that comes later
// is dropped. A request answered 504 drops its branches as they come.
func TestJoinWaitAndDeadline(t *testing.T) {
	r := newRigWith(t, rigOpts{buffers: 32, inflight: 8, timeout: time.Second, hold: true, graph: fanGraph(50 * time.Millisecond)})
	rep := &chanReplier{c: make(chan Reply, 1)}
	r.g.Admit(&Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Body: &memBody{[]byte("in")}, Reply: rep})
	bs := r.branches(t, r.take(t))
	r.deposit(t, bs[1].Buf, "R")
	d := r.take(t) // after the wait, with the right branch only
	if _, ok := r.p.Input(d.Buf, 0); ok || r.p.Inputs(d.Buf).Arrived != 1 {
		t.Fatalf("join after its wait: %+v", r.p.Inputs(d.Buf))
	}
	r.deposit(t, bs[0].Buf, "late")
	r.reply(d)
	got := <-rep.c
	got.Done()
	r.waitFree(t, 32)

	// No branch before the deadline: 504; the branches, later, are freed.
	r.g.Admit(&Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Body: &memBody{[]byte("in")}, Reply: rep})
	bs = r.branches(t, r.take(t))
	got = <-rep.c
	if got.Status() != 504 {
		t.Fatalf("status %d, want 504", got.Status())
	}
	got.Done()
	r.deposit(t, bs[0].Buf, "late")
	r.deposit(t, bs[1].Buf, "late")
	r.waitFree(t, 32)
}

// A large body pushed by an adapter (Begin, Room, Wrote, Send) grows into
// the extent region; one too large is refused at once; a body of known
// length gets all its room up front.
func TestLargeBodyAdmission(t *testing.T) {
	r := newRigWith(t, rigOpts{buffers: 8, inflight: 4, timeout: 5 * time.Second, chunks: 64, maxBody: 3 << 20})
	rep := &chanReplier{c: make(chan Reply, 1)}
	ch := r.g.Chains()[0]
	x, err := r.g.Begin(&Request{Chain: ch, Method: []byte("PUT"), Path: []byte("/c"), Length: -1, Reply: rep})
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for k := 0; len(want) < 2<<20+7; k++ {
		room, err := x.Room()
		if err != nil {
			t.Fatal(err)
		}
		n := copy(room, bytes.Repeat([]byte{byte(k)}, min(len(room), 100000, 2<<20+7-len(want))))
		x.Wrote(n)
		want = append(want, room[:n]...)
	}
	x.Send(0, nil)
	got := <-rep.c
	var body []byte
	for i := range got.Pieces() {
		body = append(body, got.Piece(i)...)
	}
	if !bytes.Equal(body, want) || got.Len() != len(want) {
		t.Fatalf("pushed body: %d bytes back, want %d", len(body), len(want))
	}
	got.Done()
	r.waitFree(t, 8)
	if r.p.ExtentUsed() != 0 {
		t.Fatal("extents left")
	}

	for _, tc := range []struct {
		length int64
		want   *Error
	}{{3<<20 + 1, ErrTooLarge}, {3 << 20, nil}} {
		req := Request{Chain: ch, Method: []byte("PUT"), Path: []byte("/c"), Length: tc.length, Reply: rep}
		x, err := r.g.Begin(&req)
		if err != tc.want {
			t.Fatalf("length %d: %v, want %v", tc.length, err, tc.want)
		}
		if err == nil {
			if len(x.Body()) < int(tc.length) {
				t.Fatalf("room %d for a body of %d", len(x.Body()), tc.length)
			}
			x.Cancel()
		}
		r.waitFree(t, 8)
	}
}
