package pool

// The ownership protocol.
//
// Every buffer has one ownership word in its header, changed only by
// compare-and-swap (so from any process, and by any process that dies at
// any instruction, it moves through whole states):
//
//	bits  0..31  generation: bumped by Free, so a descriptor of an earlier
//	             use of the buffer never matches again
//	bits 32..47  holder: the endpoint that owns the buffer (OwnerFree on the
//	             free list, OwnerDaemon after a reclaim, OwnerShared while
//	             tokens read it: see share.go)
//	bits 48..63  transit: the endpoint the holder is sending it to, 0 when
//	             no transfer is under way
//
// Handing a buffer on is a transfer, not a store: the holder H marks the
// buffer in transit to D (Transfer), sends the descriptor, and D takes it
// (Accept) only by swapping exactly (gen, H, D) for (gen, D, 0). Nothing
// else makes D the holder. So:
//
//   - H dies before the send: the word still names H; the daemon's
//     Reclaim(H) takes the buffer (whether or not the descriptor left).
//   - H dies after the send: Reclaim(H) and D's Accept race for the same
//     word; exactly one wins. If the daemon wins, D drops the descriptor as
//     stale; if D wins, the daemon never sees the buffer.
//   - D dies with the descriptor queued: Reclaim(D) takes every buffer in
//     transit to D as well as those D holds.
//   - The send fails: Cancel swaps (gen, H, D) back to (gen, H, 0); if that
//     fails, D died and the daemon has the buffer (transport.ErrLost).
//   - A forged, duplicated or replayed descriptor: its Accept fails unless
//     the buffer is in transit from the descriptor's source to its
//     destination at the descriptor's generation, which only the one real
//     transfer makes true. A receiver never touches a buffer it did not
//     Accept.
//
// A descriptor is therefore a hint; the word is the truth. A transport may
// lose, duplicate or tear descriptors (a producer that died mid-write, a
// hostile writer of the app) without losing a buffer: a buffer left in
// transit is found by the daemon's sweep and reclaimed.

// Owners of a buffer besides instance and gateway ids (1..65533); OwnerShared
// is in share.go.
const (
	// OwnerFree is the holder of a buffer on the free list.
	OwnerFree uint16 = 0
	// OwnerDaemon is the holder of a buffer the daemon took back.
	OwnerDaemon uint16 = 0xffff
)

// Own is a decoded ownership word.
type Own struct {
	Gen     uint32
	Holder  uint16
	Transit uint16 // 0: no transfer under way
}

func ownWord(o Own) uint64 {
	return uint64(o.Gen) | uint64(o.Holder)<<32 | uint64(o.Transit)<<48
}

func ownOf(w uint64) Own {
	return Own{Gen: uint32(w), Holder: uint16(w >> 32), Transit: uint16(w >> 48)}
}

// Gen returns the buffer's generation.
func (b *BufHeader) Gen() uint32 { return uint32(b.own.Load()) }

// Owner returns the endpoint that holds the buffer.
func (b *BufHeader) Owner() uint16 { return uint16(b.own.Load() >> 32) }

// Own returns the buffer's ownership word, decoded.
func (b *BufHeader) Own() Own { return ownOf(b.own.Load()) }

// buf returns buffer idx's header, or nil when idx is out of range (a
// descriptor's index is outside input).
func (p *Pool) buf(idx uint32) *BufHeader {
	if idx >= p.l.Buffers {
		return nil
	}
	return &p.bufs[idx]
}

// Holds reports whether id holds buffer idx at generation gen, with no
// transfer under way.
func (p *Pool) Holds(idx, gen uint32, id uint16) bool {
	b := p.buf(idx)
	return b != nil && b.own.Load() == ownWord(Own{gen, id, 0})
}

// Transfer starts handing buffer idx from its holder from to endpoint to,
// and returns the generation the descriptor must carry. It reports false
// when from does not hold the buffer (the daemon reclaimed it).
func (p *Pool) Transfer(idx uint32, from, to uint16) (gen uint32, ok bool) {
	b := p.buf(idx)
	if b == nil || to == 0 {
		return 0, false
	}
	w := b.own.Load()
	o := ownOf(w)
	if o.Holder != from || o.Transit != 0 {
		return 0, false
	}
	return o.Gen, b.own.CompareAndSwap(w, ownWord(Own{o.Gen, from, to}))
}

// Cancel undoes a transfer whose descriptor was not sent. It reports false
// when the daemon took the buffer meanwhile (the destination died): the
// sender must then leave it alone.
func (p *Pool) Cancel(idx, gen uint32, from, to uint16) bool {
	b := p.buf(idx)
	return b != nil && b.own.CompareAndSwap(ownWord(Own{gen, from, to}), ownWord(Own{gen, from, 0}))
}

// Accept completes the transfer a received descriptor announces: buffer idx
// at generation gen, from endpoint from, to endpoint to (the receiver). It
// reports false for a stale, forged or duplicate descriptor, or one whose
// buffer the daemon took back: the receiver must then drop it unread.
func (p *Pool) Accept(idx, gen uint32, from, to uint16) bool {
	b := p.buf(idx)
	return b != nil && to != 0 && b.own.CompareAndSwap(ownWord(Own{gen, from, to}), ownWord(Own{gen, to, 0}))
}

// Move hands buffer idx from holder from to holder to inside one process
// (no descriptor: the daemon giving a reclaimed buffer to the gateway). It
// reports false when from does not hold it.
func (p *Pool) Move(idx uint32, from, to uint16) bool {
	b := p.buf(idx)
	if b == nil {
		return false
	}
	w := b.own.Load()
	o := ownOf(w)
	return o.Holder == from && o.Transit == 0 && b.own.CompareAndSwap(w, ownWord(Own{o.Gen, to, 0}))
}

// Seize takes buffer idx for the daemon if its word is still o (the sweep,
// for a buffer whose holder vanished or whose transfer never completed).
func (p *Pool) Seize(idx uint32, o Own) bool {
	b := p.buf(idx)
	if b == nil || o.Holder == OwnerFree || b.own.CompareAndSwap(ownWord(o), ownWord(Own{o.Gen, OwnerDaemon, 0})) == false {
		return false
	}
	p.h.reclaimed.Add(1)
	return true
}

// Holding returns how many buffers endpoint id holds or has in transit to
// or from it.
func (p *Pool) Holding(id uint16) int {
	n := 0
	for i := range p.bufs {
		if o := p.bufs[i].Own(); o.Holder != OwnerFree && (o.Holder == id || o.Transit == id) {
			n++
		}
	}
	return n
}

// Audit reports whether the free list is consistent: its head and links
// stay in range, it has no cycle, every buffer on it is free, and the free
// count matches. Like Orphans it is exact only while nobody allocates or
// frees.
func (p *Pool) Audit() bool {
	on := make([]bool, p.l.Buffers)
	n := int64(0)
	top := p.h.head.Load()
	for t := uint32(top); t != 0; t = p.bufs[t-1].next.Load() {
		if t > p.l.Buffers || on[t-1] || p.bufs[t-1].Owner() != OwnerFree {
			return false
		}
		on[t-1] = true
		n++
	}
	return n == p.h.free.Load()
}

// Rebuild makes a new free list of every buffer for which keep returns
// false (given the buffer's index and ownership word; buffers held by
// nobody always go on it), bumping their generations, and
// leaves the others as they are: the daemon's repair of a list a process of
// the app broke, or of buffers lost by a process that died between taking
// one off the list and recording itself as its holder. Nobody may allocate
// or free meanwhile (the daemon calls it with the app's admission held and
// nothing in flight). It returns how many buffers are free after.
func (p *Pool) Rebuild(keep func(idx uint32, o Own) bool) int {
	head := uint32(0)
	n := int64(0)
	for i := len(p.bufs) - 1; i >= 0; i-- {
		b := &p.bufs[i]
		o := b.Own()
		if o.Holder != OwnerFree && keep(uint32(i), o) {
			continue
		}
		if o.Holder != OwnerFree {
			// Its payload goes with it (extents, a token's reference, a
			// join's inputs); a buffer that was free owns none.
			p.dropSegs(b)
			p.dropRef(b, OwnerDaemon)
			p.dropInputs(b, OwnerDaemon)
		}
		b.own.Store(ownWord(Own{Gen: o.Gen + 1}))
		b.next.Store(head)
		head = uint32(i) + 1
		n++
	}
	old := p.h.head.Load()
	p.h.head.Store((old>>32+1)<<32 | uint64(head))
	p.h.free.Store(n)
	return int(n)
}
