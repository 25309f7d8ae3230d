package graph

import (
	"testing"

	"github.com/spry-dev/spry/internal/pool"
)

// a → {b | c} (choose); b → [d, e] (fan-out, join f); d → f; e → f; f; c.
func testPool(t *testing.T) *pool.Pool {
	p, err := pool.Create("graph", pool.Layout{Buffers: 16, BufferSize: 1024, Functions: 1, Chains: 1, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	err = p.SetGraph(0, []pool.Node{
		{Name: "a", Next: []uint8{1, 2}, Choose: true, JoinAt: pool.NoNode},
		{Name: "b", Next: []uint8{3, 4}, JoinAt: 5},
		{Name: "c", JoinAt: pool.NoNode},
		{Name: "d", Next: []uint8{5}, JoinAt: pool.NoNode},
		{Name: "e", Next: []uint8{5}, JoinAt: pool.NoNode},
		{Name: "f", IsJoin: true, JoinAt: pool.NoNode},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNext(t *testing.T) {
	p := testPool(t)
	b, _ := p.Alloc(1)
	h := p.Header(b)
	for _, tc := range []struct {
		node   uint8
		chosen uint16
		frame  bool
		stop   bool
		want   Route
		err    error
	}{
		{node: 0, want: Route{Kind: Forward, Node: 1}},                  // choose: the first by default
		{node: 0, chosen: 2, want: Route{Kind: Forward, Node: 2}},       // the second, chosen
		{node: 0, chosen: 3, err: ErrOneOnly},                           // two where one is allowed
		{node: 0, chosen: 4, err: ErrChoice},                            // not a successor
		{node: 1, want: Route{Kind: FanOut, Node: 1, Join: 5, Mask: 3}}, // every branch
		{node: 1, chosen: 2, want: Route{Kind: FanOut, Node: 1, Join: 5, Mask: 2}},
		{node: 3, frame: true, want: Route{Kind: Join, Node: 5}}, // into its join
		{node: 3, frame: true, stop: true, want: Route{Kind: Join, Node: 5}},
		{node: 2, want: Route{Kind: Reply}},
		{node: 2, stop: true, want: Route{Kind: Reply}},
		{node: 9, err: ErrBadGraph},
	} {
		h.SetPlace(tc.node, pool.PhaseDone)
		h.SetChosen(tc.chosen)
		h.ClearFrames()
		if tc.frame {
			h.PushFrame(pool.Frame{Join: 5, Slot: 0, Of: 2, Width: 2})
		}
		h.SetFlags(0)
		if tc.stop {
			h.SetFlags(pool.FlagStop)
		}
		got, err := Next(p, b)
		if err != tc.err || (err == nil && got != tc.want) {
			t.Errorf("node %d chosen %b frame %v stop %v: %+v %v, want %+v %v", tc.node, tc.chosen, tc.frame, tc.stop, got, err, tc.want, tc.err)
		}
	}
	h.SetCall(pool.CallFrame{Caller: 7})
	h.SetPlace(pool.CallNode, pool.PhaseDone)
	if got, err := Next(p, b); err != nil || got != (Route{Kind: Return, Dst: 7}) {
		t.Errorf("a call's answer: %+v %v", got, err)
	}
}

// Split makes one token per branch, each with its join frame, the output
// shared; it undoes everything when the pool runs out of buffers.
func TestSplit(t *testing.T) {
	p := testPool(t)
	out, _ := p.Alloc(1)
	copy(p.Buffer(out), "shared")
	p.Header(out).SetData(0, 6)
	p.Header(out).SetPlace(1, pool.PhaseDone)
	var bs [pool.MaxNext]Branch
	got, err := Split(p, 1, out, Route{Kind: FanOut, Node: 1, Join: 5, Mask: 3}, 42, &bs)
	if err != nil || len(got) != 2 {
		t.Fatalf("Split: %v %v", got, err)
	}
	for k, b := range got {
		f, ok := p.Header(b.Buf).TopFrame()
		if b.Node != uint8(3+k) || !ok || f != (pool.Frame{At: 42, Join: 5, Slot: uint16(k), Of: 2, Width: 2}) || string(p.Data(b.Buf)) != "shared" {
			t.Fatalf("branch %d: %+v frame %+v %q", k, b, f, p.Data(b.Buf))
		}
	}
	for _, b := range got {
		p.Free(b.Buf, 1)
	}
	if p.FreeBuffers() != 16 {
		t.Fatalf("%d free", p.FreeBuffers())
	}
	// Only 2 buffers left: the output and one token.
	var hold []uint32
	for p.FreeBuffers() > 2 {
		x, _ := p.Alloc(1)
		hold = append(hold, x)
	}
	out, _ = p.Alloc(1)
	p.Header(out).SetPlace(1, pool.PhaseDone)
	if _, err := Split(p, 1, out, Route{Kind: FanOut, Node: 1, Join: 5, Mask: 3}, 0, &bs); err != pool.ErrNoRoom {
		t.Fatalf("Split without buffers: %v", err)
	}
	if p.FreeBuffers() != 1 || !p.Free(out, 1) {
		t.Fatal("Split did not undo")
	}
	for _, x := range hold {
		p.Free(x, 1)
	}
}
