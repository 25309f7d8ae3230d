package pool

// RawMeta returns the buffer's request metadata as the gateway encoded it
// (see Meta), a view into shared memory: for runners that hand it on
// whole, such as the wasm sandbox host copying it into a guest.
func (b *BufHeader) RawMeta() []byte { return b.metaBytes() }
