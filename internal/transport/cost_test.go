package transport

import (
	"testing"

	"github.com/spry-dev/spry/internal/desc"
)

// One descriptor through a ring with its ownership hand-off (Transfer,
// push, pop, Accept) and back, on one thread:
// the instructions the data plane adds per hop, without scheduling noise.
func BenchmarkOwnedRingHop(b *testing.B) {
	p := testPool(b, "poll", 4)
	f := newFabric(b, "poll", Options{Pool: p})
	c := open(b, f, 2).(*ringConn)
	buf, _ := p.Alloc(1)
	var ds [1]desc.Desc
	var foreign uint64
	for b.Loop() {
		gen, _ := p.Transfer(buf, 1, 2)
		d := desc.Desc{Dst: 2, Src: 1, Buf: buf, Gen: gen}
		c.v.push(c.ring, &d, 1)
		c.v.pop(c.ring, &c.head, 2, ds[:], &foreign)
		if !p.Accept(ds[0].Buf, ds[0].Gen, ds[0].Src, 2) {
			b.Fatal("accept")
		}
		p.Transfer(buf, 2, 1)
		p.Accept(buf, gen, 2, 1)
	}
}

// The same loop without the ownership hand-offs: BenchmarkOwnedRingHop
// minus this, in one run, is what two hand-offs (Transfer and Accept, a
// compare-and-swap each) cost on top of the ring's own push and pop.
func BenchmarkBareRingHop(b *testing.B) {
	p := testPool(b, "poll", 4)
	f := newFabric(b, "poll", Options{Pool: p})
	c := open(b, f, 2).(*ringConn)
	buf, _ := p.Alloc(1)
	var ds [1]desc.Desc
	var foreign uint64
	for b.Loop() {
		d := desc.Desc{Dst: 2, Src: 1, Buf: buf}
		c.v.push(c.ring, &d, 1)
		c.v.pop(c.ring, &c.head, 2, ds[:], &foreign)
		if ds[0].Buf != buf {
			b.Fatal("pop")
		}
	}
}
