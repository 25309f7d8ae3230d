package pool

import (
	"encoding/binary"
	"math/bits"
)

// Pinning: one more reader of a buffer that is shared already.
//
// Publish shares a buffer with the tokens made for it beforehand. A buffer
// read by many over time (a model that clients fetch, an accumulator that
// folds write into) gets its readers one at a time instead: its holder
// publishes it with one token of its own, which it keeps, so the buffer
// stays shared; each later reader Pins it, taking a free bit of its held
// word and a token of its own for it. A pin keeps the buffer's memory
// whatever else happens: should the holder of the first token die and the
// daemon free that token, the buffer lives on until its last pin is freed.
//
// A pin takes its bit (a compare-and-swap on held, only while it carries
// the expected generation and at least one bit: a buffer whose last reader
// is gone is never revived) before it names the bit in its token. A
// process that dies in between leaves a bit no token knows of: the buffer
// then outlives its readers until the daemon's audit (UnusedShares) finds
// it read by no live token and frees it. Never the other way round: a token
// never names a bit it did not take.

// Pin adds holder as a reader of shared buffer idx at generation gen: it
// returns a token for holder whose payload is idx's. ok is false when idx
// is not that shared buffer any more, every bit of its held word is taken
// (MaxShare readers), or the pool has no free buffer for the token.
func (p *Pool) Pin(idx, gen uint32, holder uint16) (tok uint32, ok bool) {
	b := p.buf(idx)
	if b == nil {
		return 0, false
	}
	tok, ok = p.Alloc(holder)
	if !ok {
		return 0, false
	}
	var bit uint8
	for {
		w := b.held.Load()
		if uint32(w>>32) != gen || uint32(w) == 0 {
			p.Free(tok, holder)
			return 0, false
		}
		free := ^uint32(w)
		if free == 0 || bits.TrailingZeros32(free) >= MaxShare {
			p.Free(tok, holder)
			return 0, false
		}
		bit = uint8(bits.TrailingZeros32(free))
		// Ordering: the bit is taken before the token names it (see
		// above); the token is the caller's alone until it sends it.
		if b.held.CompareAndSwap(w, w|1<<bit) {
			break
		}
	}
	t := &p.bufs[tok]
	t.refGen, t.refBit = gen, bit
	t.ref = idx + 1
	return tok, true
}

// Readers returns how many readers shared buffer idx at generation gen
// has (bits of its held word), or 0 when it is not that shared buffer.
func (p *Pool) Readers(idx, gen uint32) int {
	b := p.buf(idx)
	if b == nil {
		return 0
	}
	w := b.held.Load()
	if uint32(w>>32) != gen {
		return 0
	}
	return bits.OnesCount32(uint32(w))
}

// SectionStep is the metadata section in which a step leaves data for the
// steps after it in the chain (its body is the app's own: the FL app
// writes its lend of an update there). A request has at most one; it
// travels with the request's metadata to every later step.
const SectionStep = 4

// SetStepData writes body as the request's SectionStep section (replacing
// the one it had). It reports false when the metadata has no room.
func (b *BufHeader) SetStepData(body []byte) bool {
	m := b.metaBytes()
	if len(m) == 0 || len(body) > 0xffff {
		return false
	}
	// Drop a section written before (it is the last one: nothing writes a
	// section after this one but this function).
	end := len(m)
	for off := b.sections(); ; {
		tag, _, next, ok := b.nextSection(off)
		if !ok {
			break
		}
		if tag == SectionStep {
			end = off
			break
		}
		off = next
	}
	if end+3+len(body) > MaxMeta {
		return false
	}
	b.meta[end] = SectionStep
	binary.LittleEndian.PutUint16(b.meta[end+1:], uint16(len(body)))
	copy(b.meta[end+3:], body)
	b.metaLen = uint16(end + 3 + len(body))
	return true
}

// StepData returns the request's SectionStep section (a view into the
// header), or nil.
func (b *BufHeader) StepData() []byte {
	for off := b.sections(); ; {
		tag, body, next, ok := b.nextSection(off)
		if !ok {
			return nil
		}
		if tag == SectionStep {
			return body
		}
		off = next
	}
}
