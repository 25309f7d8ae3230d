package main

import "github.com/spry-dev/spry/internal/pool"

// handoff does what handing buffer buf from self to dst does before the
// descriptor is sent: since issue 17, a transfer (the buffer in transit
// from self to dst; dst takes it when it accepts the descriptor). Before
// it, ownership moved to dst at once (BufHeader.SetOwner(dst)): a sender
// that died here left a buffer owned by a live instance that never got its
// descriptor, lost for good (defect 5).
func handoff(p *pool.Pool, buf uint32, self, dst uint16) {
	p.Transfer(buf, self, dst)
}
