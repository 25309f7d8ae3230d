package pool

// A join's inputs.
//
// When a join runs, the gateway (which collected the branches' outputs as
// they arrived) makes one buffer of KindJoin for the join step: its header
// lists the inputs, one per successor of the fan-out (missing ones empty),
// and each input's holder becomes OwnerJoined: it belongs to that buffer.
// The join step reads the inputs in place; its own payload starts empty
// and is its output's room. Whoever frees the buffer frees its inputs with
// it (each only at the generation listed, as OwnerJoined), like its extents
// and its shared reference: so they go wherever the buffer goes, and come
// back with it from a process that dies. The list is forgotten before the
// inputs are freed: a process that dies in between leaves inputs no buffer
// lists, which the daemon's audit finds (UnlistedInputs) and frees.

// OwnerJoined is the holder of a join's input (see above).
const OwnerJoined uint16 = 0xfffd

// Ref names one use of a buffer: its index and generation.
type Ref struct{ Idx, Gen uint32 }

// JoinInfo are the counts of a join's inputs.
type JoinInfo struct {
	Width   int // inputs listed: the fan-out's successors
	Of      int // branches the fan-out sent
	Arrived int // inputs that arrived before the join ran
	OK      int // inputs that succeeded (status below 400, not stopped with an error)
}

// SetInputs makes buffer j, which holder holds, a join's buffer (KindJoin)
// owning the inputs in (index i: the fan-out's i-th successor; Ref{} where
// none arrived), which holder holds: each becomes OwnerJoined. An input
// holder does not hold is left out. It reports how many it took.
func (p *Pool) SetInputs(j uint32, holder uint16, in []Ref, info JoinInfo) int {
	b := p.buf(j)
	if b == nil || len(in) > MaxNext {
		return 0
	}
	b.kind = KindJoin
	b.width, b.of = uint8(len(in)), uint8(min(info.Of, 255))
	b.arrived, b.okays = uint8(min(info.Arrived, 255)), uint8(min(info.OK, 255))
	n := 0
	for i, r := range in {
		b.inputs[i] = Ref{}
		if r == (Ref{}) {
			continue
		}
		x := p.buf(r.Idx)
		if x == nil {
			continue
		}
		// Listed first, then given: a daemon that dies in between leaves
		// a listed input still its own (freeing the list skips it).
		b.inputs[i] = Ref{Idx: r.Idx + 1, Gen: r.Gen}
		if !x.own.CompareAndSwap(ownWord(Own{r.Gen, holder, 0}), ownWord(Own{r.Gen, OwnerJoined, 0})) {
			b.inputs[i] = Ref{}
			continue
		}
		n++
	}
	return n
}

// Inputs returns the counts of join buffer j's inputs.
func (p *Pool) Inputs(j uint32) JoinInfo {
	b := p.buf(j)
	if b == nil || b.kind != KindJoin {
		return JoinInfo{}
	}
	return JoinInfo{Width: min(int(b.width), MaxNext), Of: int(b.of), Arrived: int(b.arrived), OK: int(b.okays)}
}

// Input returns input i of join buffer j, and whether it arrived (and is
// still the join's: an index or generation scribbled over is not).
func (p *Pool) Input(j uint32, i int) (uint32, bool) {
	b := p.buf(j)
	if b == nil || b.kind != KindJoin || i < 0 || i >= min(int(b.width), MaxNext) {
		return 0, false
	}
	r := b.inputs[i]
	if r.Idx == 0 || r.Idx > p.l.Buffers {
		return 0, false
	}
	x := &p.bufs[r.Idx-1]
	if x.own.Load() != ownWord(Own{r.Gen, OwnerJoined, 0}) {
		return 0, false
	}
	return r.Idx - 1, true
}

// DropInputs frees join buffer j's inputs now (the join ran and passes its
// buffer on as its output). holder holds j.
func (p *Pool) DropInputs(j uint32, holder uint16) {
	b := p.buf(j)
	if b == nil || b.Owner() != holder {
		return
	}
	p.dropInputs(b, holder)
}

// dropInputs forgets buffer b's inputs, then frees them.
func (p *Pool) dropInputs(b *BufHeader, self uint16) {
	n := min(int(b.width), MaxNext)
	if b.kind != KindJoin || n == 0 {
		return
	}
	in := b.inputs
	b.width = 0
	for _, r := range in[:n] {
		if r.Idx != 0 && r.Idx <= p.l.Buffers {
			p.freeJoined(r.Idx-1, r.Gen, self)
		}
	}
}

// freeJoined frees input idx at generation gen, which a join's buffer
// listed. Like a shared buffer it is made self's first.
func (p *Pool) freeJoined(idx, gen uint32, self uint16) bool {
	b := p.buf(idx)
	if b == nil || self == OwnerFree || self >= OwnerJoined && self != OwnerDaemon {
		return false
	}
	if !b.own.CompareAndSwap(ownWord(Own{gen, OwnerJoined, 0}), ownWord(Own{gen, self, 0})) {
		return false
	}
	return p.free(idx, gen, true, self, self)
}

// UnlistedInputs returns the buffers held as a join's inputs that no
// buffer lists any more (a process died between forgetting a list and
// freeing it). Like Orphans it is exact only while nothing is in flight.
func (p *Pool) UnlistedInputs() []Ref { return p.unowned(OwnerJoined) }

// FreeUnlisted frees an input UnlistedInputs found, if it is still that one.
func (p *Pool) FreeUnlisted(r Ref) bool { return p.freeJoined(r.Idx, r.Gen, OwnerDaemon) }
