package pool

import "testing"

// Defect 5 of issue 17: ownership used to move to the destination before
// the send, so a sender killed in between left a buffer owned by a live
// endpoint that never got the descriptor, out of every reclaim's reach.
// Now the buffer stays the sender's (in transit) until the receiver
// accepts it: the sender's reclaim finds it, and the late descriptor, if
// it got out, is refused.
func TestSenderDiesBetweenTransferAndSend(t *testing.T) {
	p := newPool(t, testLayout())
	b, _ := p.Alloc(1)
	gen, ok := p.Transfer(b, 1, 2)
	if !ok {
		t.Fatal("Transfer")
	}
	// Sender 1 dies here. The daemon reclaims it.
	var got []uint32
	if n := p.Reclaim(1, func(i uint32) { got = append(got, i) }); n != 1 || got[0] != b {
		t.Fatalf("Reclaim(1) = %d %v, want buffer %d", n, got, b)
	}
	if p.Accept(b, gen, 1, 2) {
		t.Fatal("the receiver accepted a buffer the daemon took back")
	}
	if p.Holding(2) != 0 {
		t.Fatal("the receiver is charged with a buffer it never got")
	}
	if !p.Free(b, OwnerDaemon) || p.FreeBuffers() != int(p.Buffers()) {
		t.Fatal("not all buffers back")
	}
}

// A receiver that dies with a descriptor queued: its reclaim takes the
// buffer in transit to it; the live sender's Cancel then fails (ErrLost).
func TestReceiverDiesInTransit(t *testing.T) {
	p := newPool(t, testLayout())
	b, _ := p.Alloc(1)
	gen, _ := p.Transfer(b, 1, 2)
	if n := p.Reclaim(2, func(uint32) {}); n != 1 {
		t.Fatalf("Reclaim(2) = %d", n)
	}
	if p.Cancel(b, gen, 1, 2) {
		t.Fatal("Cancel won over the daemon")
	}
	if p.Holds(b, gen, 1) || p.Free(b, 1) {
		t.Fatal("the sender still holds it")
	}
}

// Defect 7 of issue 17: a forged descriptor naming a buffer the gateway is
// still filling, or a duplicate of a real reply, passed the owner and
// generation check and was freed as stale while in use. Accept takes a
// buffer only by completing the one transfer under way.
func TestForgedAndDuplicateReplies(t *testing.T) {
	p := newPool(t, testLayout())
	const gw, inst, other = 10, 11, 12
	b, _ := p.Alloc(gw) // the gateway fills it
	gen := p.Header(b).Gen()
	for _, src := range []uint16{inst, other, gw, OwnerDaemon} {
		if p.Accept(b, gen, src, gw) {
			t.Fatalf("forged reply from %d accepted for a buffer the gateway fills", src)
		}
	}
	// The real round trip: gateway → inst → gateway.
	g1, _ := p.Transfer(b, gw, inst)
	if p.Accept(b, g1, other, inst) || p.Accept(b, g1, gw, other) {
		t.Fatal("accepted by or from the wrong endpoint")
	}
	if !p.Accept(b, g1, gw, inst) {
		t.Fatal("the instance could not accept")
	}
	if p.Accept(b, g1, gw, inst) {
		t.Fatal("duplicate descriptor accepted")
	}
	g2, _ := p.Transfer(b, inst, gw)
	if !p.Accept(b, g2, inst, gw) {
		t.Fatal("the gateway could not accept the reply")
	}
	if p.Accept(b, g2, inst, gw) {
		t.Fatal("duplicate reply accepted while the gateway writes the response")
	}
	if !p.Free(b, gw) || p.Free(b, gw) {
		t.Fatal("free")
	}
	// A reply replayed after the buffer was reused for another request.
	b2, _ := p.Alloc(gw)
	if b2 != b {
		t.Skip("allocator handed out another buffer")
	}
	g3, _ := p.Transfer(b, gw, inst)
	if g3 == g2 || p.Accept(b, g2, gw, inst) {
		t.Fatal("an old generation's descriptor accepted")
	}
}

// Defect 4 of issue 17: the daemon indexed with routing values an instance
// can write. It now reads its own copy; the instances' copy is repaired.
func TestDaemonIgnoresScribbledRoute(t *testing.T) {
	p := newPool(t, Layout{Buffers: 4, BufferSize: 1024, Functions: 2, Chains: 1, Slots: 4})
	p.SetFunction(0, 0, 2)
	p.SetFunction(1, 2, 2)
	p.SetChain(0, []uint16{0, 1})
	p.StartSlot(2, 7, 1)
	p.SetSlotState(2, SlotReady)
	// A hostile instance writes the shared table.
	for i := range p.shFns {
		p.shFns[i].base, p.shFns[i].max = 1<<30, 1<<30
		p.shFns[i].hwm.Store(1 << 31)
	}
	for i := range p.shSlots {
		p.shSlots[i].fn.Store(1 << 31)
		p.shSlots[i].state.Store(SlotReady)
		p.shSlots[i].id.Store(9)
	}
	p.shChains[0].nnodes = 1 << 31
	p.shChains[0].nodes[0].fn = 0xffff
	slot, id, ok := p.Pick(1, 0)
	if !ok || slot != 2 || id != 7 {
		t.Fatalf("Pick = %d %d %v, want slot 2, instance 7", slot, id, ok)
	}
	if fn, ok := p.Step(0, 1); !ok || fn != 1 {
		t.Fatalf("Step = %d %v", fn, ok)
	}
	p.StartSlot(3, 8, 1) // indexed with the shared slot's fn before
	p.RepairRoute()
	if p.shFns[1].base != 2 || p.shSlots[0].state.Load() != SlotEmpty || p.shChains[0].nodes[0].fn != 0 {
		t.Fatal("RepairRoute did not restore the instances' table")
	}
}

// An instance's Pick checks what it reads in the shared table.
func TestInstancePickChecksBounds(t *testing.T) {
	p := newPool(t, Layout{Buffers: 4, BufferSize: 1024, Functions: 1, Chains: 1, Slots: 2})
	p.daemon = false // as an instance sees it
	p.fns, p.slots = p.shFns, p.shSlots
	p.fns[0].base, p.fns[0].max = 1, 1<<30
	p.fns[0].hwm.Store(1 << 31)
	if _, _, ok := p.Pick(0, 0); ok {
		t.Fatal("Pick used an out-of-range function entry")
	}
}

// The free list rebuilt after a process broke it, or lost a buffer
// between taking it and recording itself its holder.
func TestAuditRebuild(t *testing.T) {
	p := newPool(t, testLayout())
	if !p.Audit() {
		t.Fatal("fresh pool fails its audit")
	}
	i, _ := p.Alloc(5)
	p.bufs[i].own.Store(ownWord(Own{Gen: p.bufs[i].Gen()})) // died before recording itself
	j, _ := p.Alloc(6)                                      // a live holder
	p.h.head.Store(1 << 40)                                 // and a scribbled head
	if p.Audit() {
		t.Fatal("audit passed a broken list")
	}
	n := p.Rebuild(func(_ uint32, o Own) bool { return o.Holder == 6 })
	if n != int(p.Buffers())-1 || !p.Audit() || p.Header(j).Owner() != 6 {
		t.Fatalf("rebuild: %d free, audit %v", n, p.Audit())
	}
}
