package pool

// Owners of a buffer, besides instance ids (1..65535).
const (
	// OwnerFree marks a buffer on the free list.
	OwnerFree uint32 = 0
	// OwnerDaemon marks a buffer the daemon took back from a dead owner.
	OwnerDaemon uint32 = 1 << 16
)

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
			b.owner.Store(uint32(owner))
			b.reset()
			return top - 1, true
		}
	}
}

// Free returns buffer idx to the free list and bumps its generation, so
// every descriptor still naming the old contents becomes stale. Freeing a
// buffer that is already free is ignored and reported as false: a double
// push would corrupt the list for every process.
func (p *Pool) Free(idx uint32) bool {
	if idx >= p.l.Buffers {
		return false
	}
	b := &p.bufs[idx]
	// The generation moves before the owner is cleared and before the push,
	// so whoever pops the buffer next sees the new generation.
	if b.owner.Load() == OwnerFree {
		return false
	}
	b.gen.Add(1)
	if b.owner.Swap(OwnerFree) == OwnerFree {
		return false // lost a race with another Free of the same buffer
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

// Reclaim takes back every buffer owned by the endpoint id, which must be
// dead (no process can touch its buffers any more). For each, it sets the
// owner to OwnerDaemon (a compare-and-swap, so a concurrent sender undoing
// its own transfer to id does not race with it) and calls fn, which must
// answer the buffer's request and Free it. It returns how many it took.
func (p *Pool) Reclaim(id uint16, fn func(idx uint32)) int {
	n := 0
	for i := range p.bufs {
		b := &p.bufs[i]
		if b.owner.Load() == uint32(id) && b.owner.CompareAndSwap(uint32(id), OwnerDaemon) {
			p.h.reclaimed.Add(1)
			n++
			fn(uint32(i))
		}
	}
	return n
}

// Orphans returns the buffers that are neither on the free list nor owned
// by an endpoint for which live returns true. It walks the free list, so
// the result is only exact while nobody allocates or frees: the daemon calls
// it when the app has no request in flight, to find buffers lost by a
// process that died between taking a buffer and recording itself as owner.
func (p *Pool) Orphans(live func(owner uint32) bool) []uint32 {
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
		if o := p.bufs[i].owner.Load(); o == OwnerFree || !live(o) {
			out = append(out, uint32(i))
		}
	}
	return out
}

// Release frees a buffer found by Orphans whatever its owner field says.
func (p *Pool) Release(idx uint32) bool {
	if idx >= p.l.Buffers {
		return false
	}
	p.bufs[idx].owner.Store(OwnerDaemon)
	return p.Free(idx)
}
