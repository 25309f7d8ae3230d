package pool

// RawMeta returns the buffer's request metadata as the gateway encoded it
// (see Meta), a view into shared memory: for runners that hand it on
// whole, such as the wasm sandbox host copying it into a guest.
func (b *BufHeader) RawMeta() []byte { return b.metaBytes() }

// SetRawMeta sets the buffer's request metadata to m, as RawMeta returned
// it (truncated to MaxMeta): for a header that is a copy, such as the one
// a wasm guest's SDK reads the metadata the host handed it through.
func (b *BufHeader) SetRawMeta(m []byte) {
	n := copy(b.meta[:], m)
	b.metaLen = uint16(n)
}

// BufferOffset returns where buffer idx's payload area lies in the pool's
// memfd (Fd), for mapping it elsewhere, such as into a wasm guest's memory.
// It is page-aligned when BufferSize is a multiple of PageSize.
func (p *Pool) BufferOffset(idx uint32) int64 {
	return int64(p.r.arena + uint64(idx)*p.r.stride)
}
