package pool

// Shared buffers: one payload, several readers.
//
// A fan-out sends one step's output to several branches at once without
// copying it. Each branch gets a token: a buffer of its own (its own header:
// ownership word, timestamps, join frame, status), whose payload is the
// shared buffer's (BufHeader.ref names it; Data and Piece read through it).
// The shared buffer's held word counts the tokens, one bit each, under its
// generation:
//
//	held = generation<<32 | bit i set while token i still reads it
//
// and its holder is OwnerShared, which no process is: no Reclaim ever takes
// it. A token dropping its reference (when it is freed, by whoever holds it
// then: an instance, the gateway, the daemon after a reclaim) clears its
// bit with a compare-and-swap that checks the generation; the one that
// clears the last bit frees the shared buffer. Clearing is idempotent, so a
// token freed twice over a crash (its holder died after clearing, before
// the token's own free; the daemon frees it again) never frees the shared
// buffer twice, and the generation keeps a late clear off a later use of
// the same buffer.
//
// Sharing is published in three steps, each undone by the daemon when the
// process doing it dies (see Tokens and its salvage rules in docs/design.md):
//
//  1. Token: the holder allocates the tokens, each naming the buffer and its
//     bit. Not yet real: the buffer's held word does not carry their bits.
//  2. Publish: held = gen<<32 | the tokens' bits. From here on the tokens
//     are real (TokenLive), whoever holds them.
//  3. Publish's compare-and-swap of the buffer's holder to OwnerShared.
//
// A daemon that takes back a buffer between 2 and 3 completes the sharing
// (Shared: held carries its generation); tokens it takes back whose bit is
// not in held it frees unsent (Token before Publish).

// OwnerShared is the holder of a shared buffer (see above).
const OwnerShared uint16 = 0xfffe

// MaxShare is the most tokens one buffer is shared with.
const MaxShare = 32

// Token allocates a token for holder that reads the payload of buffer idx
// (which holder holds, and will Publish) as reference bit, with idx's
// request metadata and place in the graph copied. ok is false when the
// pool is empty.
func (p *Pool) Token(idx uint32, holder uint16, bit int) (tok uint32, ok bool) {
	b := p.buf(idx)
	if b == nil || bit < 0 || bit >= MaxShare {
		return 0, false
	}
	tok, ok = p.Alloc(holder)
	if !ok {
		return 0, false
	}
	t := &p.bufs[tok]
	t.CopyMeta(b)
	t.ref, t.refGen, t.refBit = idx+1, b.Gen(), uint8(bit)
	return tok, true
}

// Publish makes buffer idx, held by holder, shared by the tokens whose bits
// are in mask (made by Token). It reports false when holder does not hold
// it (the daemon took it back): the tokens are then not real.
func (p *Pool) Publish(idx uint32, holder uint16, mask uint32) bool {
	b := p.buf(idx)
	if b == nil || mask == 0 {
		return false
	}
	w := b.own.Load()
	o := ownOf(w)
	if o.Holder != holder || o.Transit != 0 {
		return false
	}
	// Ordering: held is stored before the holder changes, so whoever sees
	// OwnerShared sees the references; a daemon that takes the buffer back
	// in between finds held carrying its generation (Shared).
	b.held.Store(uint64(o.Gen)<<32 | uint64(mask))
	return b.own.CompareAndSwap(w, ownWord(Own{o.Gen, OwnerShared, 0}))
}

// Shared reports whether buffer idx is shared, or was being published when
// its holder stopped: its held word carries its generation and a token.
func (p *Pool) Shared(idx uint32) bool {
	b := p.buf(idx)
	if b == nil {
		return false
	}
	h, gen := b.held.Load(), b.Gen()
	return uint32(h>>32) == gen && uint32(h) != 0
}

// CompleteShare finishes the publication of buffer idx, which holder (the
// daemon, after a reclaim) holds and which is Shared: its holder becomes
// OwnerShared.
func (p *Pool) CompleteShare(idx uint32, holder uint16) bool {
	return p.Shared(idx) && p.Move(idx, holder, OwnerShared)
}

// TokenLive reports whether buffer tok is a real token: it reads a shared
// buffer whose held word still has its bit (see Publish). A buffer that is
// no token is live too.
func (p *Pool) TokenLive(tok uint32) bool {
	t := p.buf(tok)
	if t == nil {
		return false
	}
	if t.ref == 0 {
		return true
	}
	r := p.buf(t.ref - 1)
	if r == nil || t.refBit >= MaxShare {
		return false
	}
	h := r.held.Load()
	return uint32(h>>32) == t.refGen && h&(1<<t.refBit) != 0
}

// Reads returns the buffer whose payload buffer idx reads (a token's shared
// buffer), and whether it reads another's.
func (p *Pool) Reads(idx uint32) (uint32, bool) {
	b := p.buf(idx)
	if b == nil || b.ref == 0 || b.ref > p.l.Buffers {
		return 0, false
	}
	return b.ref - 1, true
}

// unref drops reference bit of the shared buffer idx at generation gen; the
// last reference frees it. Idempotent: a bit already clear, or a buffer
// since freed (another generation), is left alone.
func (p *Pool) unref(idx, gen uint32, bit uint8, self uint16) {
	b := p.buf(idx)
	if b == nil || bit >= MaxShare {
		return
	}
	m := uint64(1) << bit
	for {
		w := b.held.Load()
		if uint32(w>>32) != gen || w&m == 0 {
			return
		}
		if b.held.CompareAndSwap(w, w&^m) {
			if uint32(w) == uint32(m) {
				// The last reader: free it, but only this generation, and
				// only if its publication completed (a daemon that took it
				// back mid-publication frees it itself).
				p.free(idx, gen, true, OwnerShared, self)
			}
			return
		}
	}
}

// dropRef drops buffer b's reference to the shared buffer it reads. The
// reference is dropped before it is forgotten: a process that dies in
// between leaves a reference that dropping again does not count twice.
func (p *Pool) dropRef(b *BufHeader, self uint16) {
	r := b.ref
	if r == 0 {
		return
	}
	if r <= p.l.Buffers {
		p.unref(r-1, b.refGen, b.refBit, self)
	}
	b.ref = 0
}

// UnusedShares returns the shared buffers that no token reads any more but
// that are still shared: a process died between dropping the last
// reference and freeing the buffer, or a reader's reference was lost with
// a process that died between freeing it and dropping it. Like Orphans it
// is exact only while nothing is in flight; the daemon frees what it finds
// twice in a row over a while (FreeShared).
func (p *Pool) UnusedShares() []Ref { return p.unowned(OwnerShared) }

// unowned returns the buffers held by holder (OwnerShared, OwnerJoined)
// that nothing owns (see owned): the audit's UnusedShares and
// UnlistedInputs.
func (p *Pool) unowned(holder uint16) []Ref {
	owned := p.owned()
	var out []Ref
	for i := range p.bufs {
		if o := p.bufs[i].Own(); o.Holder == holder && !owned[i] {
			out = append(out, Ref{Idx: uint32(i), Gen: o.Gen})
		}
	}
	return out
}

// owned reports, per buffer, whether something outside the pool's own
// holders accounts for it: an endpoint or the daemon holds it, or it is a
// shared buffer a live token of an owned buffer reads, or a join's input an
// owned join buffer lists (at its generation). Shared buffers and joins'
// inputs nest (a branch's token fans out again, a join's input reads a
// shared buffer), so ownership is followed from the real holders down; a
// reference that comes back round to where it started (a buffer that lists
// or reads itself, or a ring of them: scribbled headers) owns nothing.
func (p *Pool) owned() []bool {
	owned := make([]bool, len(p.bufs))
	var todo []uint32
	for i := range p.bufs {
		switch p.bufs[i].Owner() {
		case OwnerFree, OwnerShared, OwnerJoined:
		default:
			owned[i] = true
			todo = append(todo, uint32(i))
		}
	}
	take := func(x uint32) {
		if !owned[x] {
			owned[x] = true
			todo = append(todo, x)
		}
	}
	for len(todo) > 0 {
		j := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		t := &p.bufs[j]
		if r := t.ref; r != 0 && r <= p.l.Buffers && p.bufs[r-1].Owner() == OwnerShared && p.TokenLive(j) {
			take(r - 1)
		}
		if t.kind != KindJoin {
			continue
		}
		for _, r := range t.inputs[:min(int(t.width), MaxNext)] {
			if r.Idx != 0 && r.Idx <= p.l.Buffers && p.bufs[r.Idx-1].Own() == (Own{r.Gen, OwnerJoined, 0}) {
				take(r.Idx - 1)
			}
		}
	}
	return owned
}

// FreeShared frees shared buffer r if it is still that shared buffer (see
// UnusedShares); the daemon frees it as OwnerDaemon.
func (p *Pool) FreeShared(r Ref) bool {
	b := p.buf(r.Idx)
	if b == nil || b.Own() != (Own{r.Gen, OwnerShared, 0}) {
		return false
	}
	b.held.Store(uint64(r.Gen) << 32)
	return p.free(r.Idx, r.Gen, true, OwnerShared, OwnerDaemon)
}

// Unshared reports whether buffer idx was shared and every reference to it
// is gone (held carries its generation and no bit): a process died while
// freeing it. The daemon, holding it after a reclaim, just frees it.
func (p *Pool) Unshared(idx uint32) bool {
	b := p.buf(idx)
	if b == nil {
		return false
	}
	h := b.held.Load()
	return uint32(h>>32) == b.Gen() && uint32(h) == 0
}
