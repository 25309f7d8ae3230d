package pool

import (
	"bytes"
	"testing"
)

// A join's buffer owns its inputs: read in place through it, freed with
// it (wherever it is freed), each once.
func TestJoinInputs(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(64))
	const gw, inst = 5, 6
	// The branches' outputs: a plain buffer, an extent, a token of a
	// shared buffer.
	a, _ := p.Alloc(gw)
	copy(p.Buffer(a), "alpha")
	p.Header(a).SetData(0, 5)
	b, _ := p.Alloc(gw)
	p.Reserve(b, 3<<20, false)
	wantB := fillPattern(p, b, 2)
	root, _ := p.Alloc(gw)
	copy(p.Buffer(root), "shared")
	p.Header(root).SetData(0, 6)
	toks := fanOut(t, p, root, gw, 2)
	p.Free(toks[1], gw) // the other branch went elsewhere

	j, _ := p.Alloc(gw)
	in := []Ref{{a, p.Header(a).Gen()}, {}, {b, p.Header(b).Gen()}, {toks[0], p.Header(toks[0]).Gen()}}
	if n := p.SetInputs(j, gw, in, JoinInfo{Of: 4, Arrived: 3, OK: 3}); n != 3 {
		t.Fatalf("SetInputs took %d", n)
	}
	if p.Header(a).Owner() != OwnerJoined || p.Free(a, gw) {
		t.Fatal("an input is still the gateway's")
	}
	// The join step gets the buffer.
	gen, _ := p.Transfer(j, gw, inst)
	p.Accept(j, gen, gw, inst)
	if info := p.Inputs(j); info != (JoinInfo{Width: 4, Of: 4, Arrived: 3, OK: 3}) {
		t.Fatalf("Inputs = %+v", info)
	}
	got := func(i int) []byte {
		x, ok := p.Input(j, i)
		if !ok {
			return nil
		}
		return payload(p, x)
	}
	if string(got(0)) != "alpha" || got(1) != nil || !bytes.Equal(got(2), wantB) || string(got(3)) != "shared" {
		t.Fatalf("inputs %q %q %d %q", got(0), got(1), len(got(2)), got(3))
	}
	// Its output in place, its inputs dropped early; then freed.
	p.DropInputs(j, inst)
	if _, ok := p.Input(j, 0); ok {
		t.Fatal("input still there after DropInputs")
	}
	p.Free(j, inst)
	checkEmpty(t, p)

	// Freed by the daemon after the join step died: the inputs go too.
	a, _ = p.Alloc(gw)
	j, _ = p.Alloc(gw)
	p.SetInputs(j, gw, []Ref{{a, p.Header(a).Gen()}}, JoinInfo{Of: 1, Arrived: 1})
	gen, _ = p.Transfer(j, gw, inst)
	p.Accept(j, gen, gw, inst)
	p.Reclaim(inst, func(uint32) {})
	p.Free(j, OwnerDaemon)
	checkEmpty(t, p)
}

// Inputs no buffer lists (the list's freer died between forgetting it and
// freeing them) are found and freed.
func TestUnlistedInputs(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(16))
	a, _ := p.Alloc(1)
	j, _ := p.Alloc(1)
	p.SetInputs(j, 1, []Ref{{a, p.Header(a).Gen()}}, JoinInfo{Of: 1, Arrived: 1})
	if len(p.UnlistedInputs()) != 0 {
		t.Fatal("a listed input reported")
	}
	p.Header(j).width = 0 // forgotten; the freer dies here
	p.Free(j, 1)
	u := p.UnlistedInputs()
	if len(u) != 1 || u[0].Idx != a || !p.FreeUnlisted(u[0]) || p.FreeUnlisted(u[0]) {
		t.Fatalf("UnlistedInputs = %v", u)
	}
	checkEmpty(t, p)
}

// Inputs that only list each other (scribbled headers: a join's input that
// is a join buffer listing itself, or two listing one another) are
// unlisted: nothing outside the ring owns them. An input listed by a
// listed input (nested) is not.
func TestUnlistedInputsRing(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(16))
	a, _ := p.Alloc(1)
	p.SetInputs(a, 1, []Ref{{a, p.Header(a).Gen()}}, JoinInfo{Of: 1, Arrived: 1}) // itself
	b, _ := p.Alloc(1)
	c, _ := p.Alloc(1)
	p.SetInputs(b, 1, []Ref{{c, p.Header(c).Gen()}}, JoinInfo{Of: 1, Arrived: 1})
	p.SetInputs(c, 1, []Ref{{b, p.Header(b).Gen()}}, JoinInfo{Of: 1, Arrived: 1})
	if p.Header(a).Owner() != OwnerJoined || p.Header(b).Owner() != OwnerJoined || p.Header(c).Owner() != OwnerJoined {
		t.Fatal("setup: not joined")
	}
	// Nested and owned: j (held) lists x, which lists y.
	x, _ := p.Alloc(1)
	y, _ := p.Alloc(1)
	p.SetInputs(x, 1, []Ref{{y, p.Header(y).Gen()}}, JoinInfo{Of: 1, Arrived: 1})
	j, _ := p.Alloc(1)
	p.SetInputs(j, 1, []Ref{{x, p.Header(x).Gen()}}, JoinInfo{Of: 1, Arrived: 1})
	u := p.UnlistedInputs()
	if len(u) != 3 {
		t.Fatalf("UnlistedInputs = %v, want %d, %d, %d", u, a, b, c)
	}
	for _, r := range u {
		if r.Idx != a && r.Idx != b && r.Idx != c {
			t.Fatalf("UnlistedInputs = %v: %d is listed", u, r.Idx)
		}
		p.FreeUnlisted(r)
	}
	p.Free(j, 1)
	checkEmpty(t, p)
}
