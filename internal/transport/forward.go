package transport

import (
	"errors"

	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
)

// Errors Forward and Pass return besides those of Send.
var (
	// ErrNoInstance: the function has no ready instance right now.
	ErrNoInstance = errors.New("transport: no ready instance")
	// ErrLost: the daemon took the buffer back (its destination died
	// while the transfer was under way, or the sender no longer held it)
	// and answers its request. The caller must not touch the buffer again.
	ErrLost = errors.New("transport: buffer reclaimed by the daemon")
)

// Forward hands buffer d.Buf, held by c, to the least-loaded ready instance
// of function fn: it picks the instance (see pool.Pick; rot rotates ties),
// counts the descriptor in that instance's queue, marks the buffer in
// transit to it (pool.Transfer) and sends d to it. The instance becomes the
// buffer's holder when it accepts the descriptor, not before: a sender that
// dies anywhere in between leaves a buffer the daemon's Reclaim of it finds.
// This is direct function routing, used alike by the gateway for a chain's
// first step and by instances for the steps after theirs.
//
// On ErrFull or ErrGone the transfer is cancelled and c holds the buffer
// again: try later or elsewhere. On ErrLost it does not. Forward allocates
// nothing.
//
// An instance in a sandbox host (pool.StartHosted) receives through the
// host's endpoint: the descriptor goes to the host, the buffer is in
// transit to the instance, and the host reads which one from there.
func Forward(p *pool.Pool, c Conn, fn uint16, d desc.Desc, rot uint32) error {
	return ForwardExcept(p, c, fn, d, rot, 0)
}

// ForwardExcept is Forward to an instance other than endpoint except (0:
// any; see pool.PickExcept).
func ForwardExcept(p *pool.Pool, c Conn, fn uint16, d desc.Desc, rot uint32, except uint16) error {
	slot, id, ep, ok := p.PickRouteExcept(fn, rot, except)
	if !ok {
		return ErrNoInstance
	}
	st := p.Stats(slot)
	// The queue count goes up before the send so that a receiver, which
	// decrements it, never drives it below zero.
	st.Queue.Add(1)
	d.Dst = ep
	err := pass(p, c, d, id)
	if err != nil {
		st.Queue.Add(-1)
	}
	return err
}

// Pass hands buffer d.Buf, held by c, to endpoint d.Dst: Transfer, Send,
// and Cancel if the send failed. On ErrFull or ErrGone c holds the buffer
// again; on ErrLost the daemon has it.
func Pass(p *pool.Pool, c Conn, d desc.Desc) error { return pass(p, c, d, d.Dst) }

// pass sends d to endpoint d.Dst with the buffer in transit to to.
func pass(p *pool.Pool, c Conn, d desc.Desc, to uint16) error {
	d.Src = c.ID()
	gen, ok := p.Transfer(d.Buf, d.Src, to)
	if !ok {
		return ErrLost
	}
	d.Gen = gen
	crash.Point("send.transferred")
	err := c.Send(d)
	if err == nil {
		crash.Point("send.sent")
		return nil
	}
	if !p.Cancel(d.Buf, gen, d.Src, to) {
		return ErrLost
	}
	return err
}
