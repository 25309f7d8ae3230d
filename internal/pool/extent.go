package pool

import (
	"errors"
	"math/bits"
)

// Large payloads.
//
// A payload up to BufferSize bytes lives in its buffer's own area of the
// arena, as it always did. A larger one lives in the large-extent region:
// Layout.Chunks chunks of ChunkSize bytes, of which a bitmap in the pool
// (one bit per chunk, 1 = taken) says which are free. A payload there is a
// list of segments in its buffer header (BufHeader.segs), each a run of
// chunks; usually one, so the payload is one contiguous slice of the pool.
// Several segments happen only when a body of unknown length (chunked) or
// an output written piece by piece outgrew its extent and the chunks after
// it were taken, or when the region is too fragmented for one run.
//
// Claiming a run is a compare-and-swap per bitmap word it covers (runs of
// up to 64 chunks usually fit one word), undone word by word when another
// process took a chunk first; releasing clears the bits. So the bitmap is
// lock-free and shared by every process of the app, like the free list.
//
// A buffer owns the segments its header lists: Free releases them, once,
// with the buffer (it forgets them before it releases them, so a process
// that dies in between leaks chunks rather than releasing them twice). A
// process that dies between claiming chunks and recording them leaks them
// too: the daemon's audit (ExtentLeaks) finds such chunks when nothing is
// in flight and gives them back.
//
// The region is a sparse part of the memfd: a page costs memory only once
// something writes it, so a pool of 2 GiB on a small machine is fine until
// it is used.

// Errors about payload room.
var (
	// ErrNoRoom: the extent region has no room for the payload (backpressure:
	// the gateway answers 503).
	ErrNoRoom = errors.New("pool: no room for the payload in the pool")
	// ErrPayloadTooLarge: the payload would be longer than allowed.
	ErrPayloadTooLarge = errors.New("pool: payload larger than allowed")
)

// MaxPayload is the longest payload a buffer header can describe.
const MaxPayload = 1<<32 - 1

// ExtentBytes returns the size of the large-extent region.
func (p *Pool) ExtentBytes() uint64 { return uint64(p.l.Chunks) * ChunkSize }

// ExtentUsed returns the bytes of the large-extent region claimed now.
func (p *Pool) ExtentUsed() uint64 { return uint64(max(p.h.used.Load(), 0)) * ChunkSize }

// ExtentFails returns how often a claim found no room.
func (p *Pool) ExtentFails() uint64 { return p.h.extFails.Load() }

// chunks returns how many chunks hold n bytes.
func chunks(n uint64) uint64 { return (n + ChunkSize - 1) / ChunkSize }

// runMask returns the bits of word i that chunks [first, first+n) cover.
func runMask(i, first, n uint32) uint64 {
	lo, hi := uint64(i)*64, uint64(i)*64+64
	a, b := max(uint64(first), lo), min(uint64(first)+uint64(n), hi)
	if a >= b {
		return 0
	}
	w := b - a
	if w == 64 {
		return ^uint64(0)
	}
	return (uint64(1)<<w - 1) << (a - lo)
}

// claimAt takes exactly chunks [first, first+n) if every one is free. The
// words are claimed in order; when one has a taken chunk, the words claimed
// before it are given back.
func (p *Pool) claimAt(first, n uint32) bool {
	if n == 0 || uint64(first)+uint64(n) > uint64(p.l.Chunks) {
		return false
	}
	lw, hw := first/64, (first+n-1)/64
	for i := lw; i <= hw; i++ {
		m := runMask(i, first, n)
		w := &p.extmap[i]
		for {
			// Ordering: a successful CAS here is the claim; the chunks'
			// bytes are written only after it, by the claimer.
			old := w.Load()
			if old&m != 0 {
				for j := lw; j < i; j++ {
					p.extmap[j].And(^runMask(j, first, n))
				}
				return false
			}
			if w.CompareAndSwap(old, old|m) {
				break
			}
		}
	}
	p.h.used.Add(int64(n))
	return true
}

// release gives back chunks [first, first+n), which the caller owns.
func (p *Pool) release(first, n uint32) {
	if n == 0 || uint64(first)+uint64(n) > uint64(p.l.Chunks) {
		return // a header scribbled over: never clear what it may not own
	}
	for i := first / 64; i <= (first+n-1)/64; i++ {
		p.extmap[i].And(^runMask(i, first, n))
	}
	p.h.used.Add(-int64(n))
}

// freeRun returns the lowest chunk of word w (free bits are 0) that starts
// a run of n free chunks inside w.
func freeRun(w uint64, n uint32) (uint32, bool) {
	x := ^w // 1 = free
	for k := uint32(1); k < n; {
		s := min(k, n-k)
		x &= x >> s
		k += s
	}
	if x == 0 {
		return 0, false
	}
	return uint32(bits.TrailingZeros64(x)), true
}

// claim takes a run of n chunks and returns its first: the lowest free
// run (first fit). First fit keeps payloads in the pages used before: the
// memory the region commits (pages stay committed once written) follows
// the most payloads held at once, not the traffic, and a payload lands in
// pages already mapped instead of faulting in fresh ones. (Next fit, which
// this was, walked the whole region: a 2 GiB pool serving one 256 MiB
// body at a time committed all of it, each body faulting in new pages.) A
// second pass finds what racing claims made it skip.
func (p *Pool) claim(n uint32) (uint32, bool) {
	nw := uint32(len(p.extmap))
	if n == 0 || n > p.l.Chunks || nw == 0 {
		return 0, false
	}
	for pass := 0; pass < 2; pass++ {
		var runStart, runLen uint32 // a run of free chunks reaching the word's low end
		for i := uint32(0); i < nw; i++ {
			w := p.extmap[i].Load()
			if w == 0 {
				if runLen == 0 {
					runStart = i * 64
				}
				runLen += 64
			} else {
				runLen += uint32(bits.TrailingZeros64(w))
				if runLen < n && n <= 64 {
					if pos, ok := freeRun(w, n); ok {
						runStart, runLen = i*64+pos, n
					}
				}
			}
			if runLen >= n {
				if p.claimAt(runStart, n) {
					return runStart, true
				}
				runLen = 0 // another process was first: look further on
				continue
			}
			if w != 0 {
				lz := uint32(bits.LeadingZeros64(w))
				runStart, runLen = i*64+64-lz, lz
			}
		}
	}
	return 0, false
}

// segsOf returns buffer b's segments (bounded: the header is shared memory).
func (b *BufHeader) segsOf() []Seg { return b.segs[:min(int(b.nseg), MaxSegs)] }

// segBytes returns the bytes of segment s, clamped to the region.
func (p *Pool) segBytes(s Seg) []byte {
	a := uint64(s.First) * ChunkSize
	e := a + uint64(s.Count)*ChunkSize
	if a > uint64(len(p.ext)) {
		a = uint64(len(p.ext))
	}
	e = min(e, uint64(len(p.ext)))
	return p.ext[a:e:e]
}

// addSeg appends a segment of n chunks to buffer idx's payload area, or,
// when grow is set and the chunks right after its last segment are free,
// lengthens that segment in place. It reports false when the region has no
// room or the header has no segment left.
func (p *Pool) addSeg(b *BufHeader, n uint32, grow bool) bool {
	if k := int(b.nseg); grow && k > 0 && k <= MaxSegs {
		last := &b.segs[k-1]
		if p.claimAt(last.First+last.Count, n) {
			last.Count += n
			return true
		}
	}
	if int(b.nseg) >= MaxSegs {
		return false
	}
	first, ok := p.claim(n)
	if !ok {
		p.h.extFails.Add(1)
		return false
	}
	// Recorded right after the claim: a process that dies in between leaks
	// the chunks (ExtentLeaks), never owns what it did not claim.
	b.segs[b.nseg] = Seg{First: first, Count: n}
	b.nseg++
	return true
}

// dropSegs releases buffer b's segments. It forgets them first: a process
// that dies in between leaks them (ExtentLeaks) rather than have Free
// release them a second time.
func (p *Pool) dropSegs(b *BufHeader) {
	n := min(int(b.nseg), MaxSegs)
	if n == 0 {
		return
	}
	segs := b.segs
	b.nseg = 0
	for _, s := range segs[:n] {
		p.release(s.First, s.Count)
	}
}

// Reserve gives buffer idx, which the caller holds and which has no
// payload area but its own yet, room for n bytes: its own area when n fits
// it, else the extent region, in one segment when a run of free chunks is
// long enough, else (when split) in up to MaxSegs. The payload's length is
// set to n. Nothing is claimed when it fails (ErrNoRoom).
func (p *Pool) Reserve(idx uint32, n uint64, split bool) error {
	b := p.buf(idx)
	if b == nil {
		return ErrRange
	}
	if n > MaxPayload {
		return ErrPayloadTooLarge
	}
	p.dropSegs(b)
	b.off, b.length = 0, uint32(n)
	if n <= uint64(p.l.BufferSize) {
		return nil
	}
	need := chunks(n)
	if need > uint64(p.l.Chunks) {
		p.h.extFails.Add(1)
		return ErrNoRoom
	}
	if p.addSeg(b, uint32(need), false) {
		return nil
	}
	if split {
		// Halve the run asked for until pieces fit, up to MaxSegs of them.
		left, size := uint32(need), uint32(need)/2
		for left > 0 && size > 0 && int(b.nseg) < MaxSegs {
			take := min(size, left)
			if first, ok := p.claim(take); ok {
				b.segs[b.nseg] = Seg{First: first, Count: take}
				b.nseg++
				left -= take
				continue
			}
			size /= 2
		}
		if left == 0 {
			return nil
		}
	}
	p.dropSegs(b)
	b.length = 0
	return ErrNoRoom
}

// Clear makes buffer idx's payload empty and its own: the extents it
// lists are released, its reference to a shared payload and a join's
// inputs dropped. holder holds it.
func (p *Pool) Clear(idx uint32, holder uint16) {
	b := p.buf(idx)
	if b == nil || b.Owner() != holder {
		return
	}
	p.dropSegs(b)
	p.dropRef(b, holder)
	p.dropInputs(b, holder)
	b.off, b.length = 0, 0
}

// Extended reports whether buffer idx's payload is in the extent region.
func (p *Pool) Extended(idx uint32) bool {
	b := p.buf(idx)
	return b != nil && b.nseg > 0
}

// Trim gives back the chunks of buffer idx's segments past its payload's
// end (a body of unknown length, once it ended). The caller holds it.
// Like dropSegs it shortens the header before it releases.
func (p *Pool) Trim(idx uint32) {
	b := p.buf(idx)
	if b == nil || b.nseg == 0 {
		return
	}
	left := uint64(b.off) + uint64(b.length)
	n := min(int(b.nseg), MaxSegs)
	segs := b.segs
	keep := 0 // whole segments kept
	for ; keep < n; keep++ {
		c := uint64(segs[keep].Count) * ChunkSize
		if left < c {
			break
		}
		left -= c
	}
	if keep == n {
		return
	}
	if part := uint32(chunks(left)); part > 0 {
		// Segment keep is partly used: shorten it.
		s := segs[keep]
		b.segs[keep].Count = part
		b.nseg = uint8(keep + 1)
		p.release(s.First+part, s.Count-part)
		keep++
	} else {
		b.nseg = uint8(keep)
	}
	for _, s := range segs[keep:n] {
		p.release(s.First, s.Count)
	}
}

// Filler writes a payload of unknown length into a buffer, growing it from
// the buffer's own area into the extent region as it fills: the gateway
// reading a chunked body, a function writing its output piece by piece.
// The bytes written into the own area before it outgrew it are copied once
// into the first extent (at most BufferSize bytes); nothing else is copied.
//
//	f := p.Fill(idx, limit)
//	for more {
//		room, err := f.Room() // ErrPayloadTooLarge past limit, ErrNoRoom when the pool is full
//		k := read(room)
//		f.Wrote(k)
//	}
//	f.Done() // the payload is what was written; unused chunks are given back
type Filler struct {
	p     *Pool
	b     *BufHeader
	idx   uint32
	n     uint64 // bytes written
	limit uint64
	seg   int    // segment being written (when extended)
	segAt uint64 // payload offset where segment seg starts
}

// Fill starts writing buffer idx's payload (held by the caller) from its
// start, up to limit bytes in all. It drops any extents the buffer had.
func (p *Pool) Fill(idx uint32, limit uint64) Filler {
	b := p.buf(idx)
	p.dropSegs(b)
	b.off, b.length = 0, 0
	return Filler{p: p, b: b, idx: idx, limit: min(limit, MaxPayload)}
}

// Len returns the bytes written so far.
func (f *Filler) Len() uint64 { return f.n }

// firstExtent is the size of the first extent a growing payload gets:
// four buffers' worth, at least 1 MiB.
func (f *Filler) firstExtent() uint64 { return max(4*uint64(f.p.l.BufferSize), 1<<20) }

// Room returns where the next bytes go: a non-empty slice, growing the
// payload's area when it is full.
func (f *Filler) Room() ([]byte, error) {
	p, b := f.p, f.b
	if f.n >= f.limit {
		return nil, ErrPayloadTooLarge
	}
	if b.nseg == 0 {
		own := p.Buffer(f.idx)
		if f.n < uint64(len(own)) {
			return own[f.n:min(uint64(len(own)), f.limit)], nil
		}
		// Outgrew the own area: move what it holds into a first extent.
		size := min(max(f.firstExtent(), 2*f.n), f.limit)
		if !p.addSeg(b, uint32(chunks(size)), false) {
			return nil, ErrNoRoom
		}
		copy(p.segBytes(b.segs[0]), own[:f.n])
		f.seg, f.segAt = 0, 0
	}
	for {
		s := p.segBytes(b.segs[f.seg])
		if at := f.n - f.segAt; at < uint64(len(s)) {
			return s[at:min(uint64(len(s)), at+f.limit-f.n)], nil
		}
		if f.seg+1 < int(b.nseg) {
			f.segAt += uint64(len(s))
			f.seg++
			continue
		}
		// Full: double the payload's room, in place when the chunks
		// after the last segment are free.
		more := uint32(chunks(min(max(f.n, f.firstExtent()), f.limit-f.n)))
		before := b.nseg
		if !p.addSeg(b, more, true) {
			return nil, ErrNoRoom
		}
		if b.nseg != before {
			f.segAt += uint64(len(s))
			f.seg++
		}
	}
}

// Wrote records that k bytes of the last Room were written.
func (f *Filler) Wrote(k int) {
	f.n += uint64(k)
	f.b.length = uint32(min(f.n, MaxPayload))
}

// Done ends the payload at what was written and gives back the chunks
// past it.
func (f *Filler) Done() {
	f.b.off, f.b.length = 0, uint32(f.n)
	f.p.Trim(f.idx)
}

// Abort gives back the payload's extents (the write failed).
func (f *Filler) Abort() {
	f.p.dropSegs(f.b)
	f.b.off, f.b.length = 0, 0
}

// ExtentLeaks returns the chunks taken in the bitmap that no buffer header
// lists (a process died between claiming them and recording them, or
// between forgetting them and releasing them). Like Orphans it is exact
// only while nobody claims or releases: the daemon calls it when the app
// has nothing in flight, and gives the chunks back with ReleaseLeaks.
func (p *Pool) ExtentLeaks() []Seg {
	if p.l.Chunks == 0 {
		return nil
	}
	listed := make([]uint64, len(p.extmap))
	for i := range p.bufs {
		b := &p.bufs[i]
		if b.Owner() == OwnerFree {
			continue
		}
		for _, s := range b.segsOf() {
			if uint64(s.First)+uint64(s.Count) > uint64(p.l.Chunks) || s.Count == 0 {
				continue
			}
			for w := s.First / 64; w <= (s.First+s.Count-1)/64; w++ {
				listed[w] |= runMask(w, s.First, s.Count)
			}
		}
	}
	var out []Seg
	for w := range p.extmap {
		taken := p.extmap[w].Load()
		if c := p.l.Chunks; uint32(w) == uint32(len(p.extmap))-1 && c%64 != 0 {
			taken &^= ^uint64(0) << (c % 64) // the bits past the region
		}
		lost := taken &^ listed[w]
		for lost != 0 {
			i := uint32(bits.TrailingZeros64(lost))
			n := uint32(bits.TrailingZeros64(^(lost >> i)))
			out = append(out, Seg{First: uint32(w)*64 + i, Count: n})
			if i+n >= 64 {
				break
			}
			lost &^= (uint64(1)<<n - 1) << i
		}
	}
	return out
}

// ExtentClaimed counts the chunks the bitmap says are taken, and sets the
// chunks-claimed counter to it (a process of the app may have written
// over the counter; the bitmap is the truth). The daemon calls it now and
// then.
func (p *Pool) ExtentClaimed() uint64 {
	if p.l.Chunks == 0 {
		return 0
	}
	n := 0
	for w := range p.extmap {
		v := p.extmap[w].Load()
		if c := p.l.Chunks; w == len(p.extmap)-1 && c%64 != 0 {
			v &^= ^uint64(0) << (c % 64)
		}
		n += bits.OnesCount64(v)
	}
	p.h.used.Store(int64(n))
	return uint64(n) * ChunkSize
}

// ReleaseLeaks gives back chunks ExtentLeaks found.
func (p *Pool) ReleaseLeaks(leaks []Seg) {
	for _, s := range leaks {
		p.release(s.First, s.Count)
	}
}
