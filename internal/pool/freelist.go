package pool

// Alloc takes a buffer off the free list for owner and returns its index.
// ok is false when the pool is empty (backpressure, not an error).
//
// Alloc is lock-free and safe across processes. It allocates nothing.
func (p *Pool) Alloc(owner uint16) (idx uint32, ok bool) {
	h := p.h
	for {
		// Ordering: the head load is sequentially consistent, so the next
		// link read below was written (by Free's Store before its CAS)
		// before the push that made this head visible. If another process
		// pops and re-pushes top meanwhile, next may be stale, but the
		// tag in head has moved on and the CAS fails.
		old := h.head.Load()
		top := uint32(old)
		if top == 0 || top > p.l.Buffers {
			// top > Buffers means a writer of this app corrupted the
			// head; treat it as empty rather than index out of range.
			h.allocFails.Add(1)
			return 0, false
		}
		next := p.bufs[top-1].next.Load()
		if h.head.CompareAndSwap(old, (old>>32+1)<<32|uint64(next)) {
			h.free.Add(-1)
			b := &p.bufs[top-1]
			// A process that dies here leaves the buffer neither on the
			// list nor owned: the daemon's audit finds it (Orphans).
			b.own.Store(ownWord(Own{Gen: b.Gen(), Holder: owner}))
			b.reset()
			return top - 1, true
		}
	}
}

// Free returns buffer idx, held by holder, to the free list and bumps its
// generation, so every descriptor still naming the old contents becomes
// stale. Its payload goes with it: the extents it lists are released, and
// if it is a token, its reference to the shared buffer it reads is dropped
// (the last one frees that one too). It reports false, and does nothing,
// when holder does not hold the buffer (already freed, reclaimed, or in
// transit): a double push would corrupt the list for every process.
func (p *Pool) Free(idx uint32, holder uint16) bool { return p.free(idx, 0, false, holder, holder) }

// free frees buffer idx if holder holds it (at generation gen, when
// checkGen). self is the endpoint freeing it: a shared buffer, which nobody
// holds, is made self's first, so that only one of the processes that may
// free it drops its payload, and a freer that dies leaves it where
// Reclaim(self) finds it.
func (p *Pool) free(idx, gen uint32, checkGen bool, holder, self uint16) bool {
	b := p.buf(idx)
	if b == nil || holder == OwnerFree {
		return false
	}
	w := b.own.Load()
	o := ownOf(w)
	if o.Holder != holder || o.Transit != 0 || (checkGen && o.Gen != gen) {
		return false
	}
	if holder == OwnerShared {
		if self == OwnerFree || self == OwnerShared {
			return false
		}
		taken := ownWord(Own{o.Gen, self, 0})
		if !b.own.CompareAndSwap(w, taken) {
			return false
		}
		w = taken
	}
	// The payload goes before the buffer: what a process dying in between
	// leaves is a buffer still held (reclaimed and freed again, with no
	// payload left to drop), never a payload dropped twice.
	p.dropSegs(b)
	p.dropRef(b, self)
	p.dropInputs(b, self)
	// The generation moves with the holder, in one step, before the push:
	// whoever pops the buffer next sees the new generation.
	if !b.own.CompareAndSwap(w, ownWord(Own{Gen: o.Gen + 1})) {
		return false
	}
	h := p.h
	for {
		old := h.head.Load()
		// Ordering: next is stored before the CAS publishes idx as the new
		// head (both sequentially consistent), so a popper that sees idx
		// in head reads this next.
		b.next.Store(uint32(old))
		if h.head.CompareAndSwap(old, (old>>32+1)<<32|uint64(idx+1)) {
			h.free.Add(1)
			return true
		}
	}
}

// Reclaim takes back every buffer that endpoint id holds or that is in
// transit from or to it; id must be dead (no process can touch its buffers
// any more). Each such buffer becomes the daemon's (a compare-and-swap: a
// live peer accepting or cancelling the same transfer either wins first or
// finds the daemon's word), and fn, which must answer the buffer's request
// and free it, is called for it. It returns how many it took.
func (p *Pool) Reclaim(id uint16, fn func(idx uint32)) int {
	if id == OwnerFree || id == OwnerDaemon {
		return 0
	}
	n := 0
	for i := range p.bufs {
		b := &p.bufs[i]
		for {
			w := b.own.Load()
			o := ownOf(w)
			if o.Holder == OwnerFree || (o.Holder != id && o.Transit != id) {
				break
			}
			if b.own.CompareAndSwap(w, ownWord(Own{Gen: o.Gen, Holder: OwnerDaemon})) {
				p.h.reclaimed.Add(1)
				n++
				fn(uint32(i))
				break
			}
		}
	}
	return n
}

// Orphans returns the buffers that are neither on the free list nor owned
// by an endpoint for which live returns true. It walks the free list, so
// the result is only exact while nobody allocates or frees: the daemon calls
// it when the app has no request in flight, to find buffers lost by a
// process that died between taking a buffer and recording itself as owner.
func (p *Pool) Orphans(live func(owner uint16) bool) []uint32 {
	on := make([]bool, p.l.Buffers)
	top := uint32(p.h.head.Load())
	for steps := uint32(0); top != 0 && top <= p.l.Buffers && steps < p.l.Buffers; steps++ {
		if on[top-1] {
			break // a cycle: stop, everything reachable is marked
		}
		on[top-1] = true
		top = p.bufs[top-1].next.Load()
	}
	var out []uint32
	for i := range p.bufs {
		if on[i] {
			continue
		}
		if o := p.bufs[i].Owner(); o == OwnerFree || !live(o) {
			out = append(out, uint32(i))
		}
	}
	return out
}

// Release frees a buffer found by Orphans whatever its owner field says.
func (p *Pool) Release(idx uint32) bool {
	b := p.buf(idx)
	if b == nil {
		return false
	}
	b.own.Store(ownWord(Own{Gen: b.Gen(), Holder: OwnerDaemon}))
	return p.Free(idx, OwnerDaemon)
}
