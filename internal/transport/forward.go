package transport

import (
	"errors"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
)

// Errors Forward returns besides those of Send.
var (
	// ErrNoInstance: the function has no ready instance right now.
	ErrNoInstance = errors.New("transport: no ready instance")
	// ErrLost: the destination died between the transfer of the buffer
	// and the send, and the daemon reclaimed the buffer (and answers its
	// request). The caller must not touch the buffer again.
	ErrLost = errors.New("transport: buffer reclaimed by the daemon")
)

// Forward hands buffer d.Buf, held by c, to the least-loaded ready instance
// of function fn: it picks the instance (see pool.Pick; rot rotates ties),
// counts the descriptor in that instance's queue, makes the instance the
// buffer's owner and sends d to it. This is direct function routing, used
// alike by the gateway for a chain's first step and by instances for the
// steps after theirs.
//
// On ErrFull or ErrGone the transfer is undone and c holds the buffer again:
// try later or elsewhere. On ErrLost it does not. Forward allocates nothing.
func Forward(p *pool.Pool, c Conn, fn uint16, d desc.Desc, rot uint32) error {
	slot, id, ok := p.Pick(fn, rot)
	if !ok {
		return ErrNoInstance
	}
	h := p.Header(d.Buf)
	st := p.Stats(slot)
	// The queue count goes up before the send so that a receiver, which
	// decrements it, never drives it below zero.
	st.Queue.Add(1)
	// Ownership moves before the send: the receiver checks it, and the
	// send (a system call or a release store on a ring) orders this store
	// before the receiver's check.
	h.SetOwner(id)
	d.Dst = id
	err := c.Send(d)
	if err == nil {
		return nil
	}
	st.Queue.Add(-1)
	// Take the buffer back. If that fails the destination died and the
	// daemon's Reclaim took it meanwhile.
	if !h.SwapOwner(id, c.ID()) {
		return ErrLost
	}
	return err
}
