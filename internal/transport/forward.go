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
	d, ok := transfer(p, c, d, to)
	if !ok {
		return ErrLost
	}
	crash.Point("send.transferred")
	err := c.Send(d)
	if err == nil {
		crash.Point("send.sent")
		return nil
	}
	if !p.Cancel(d.Buf, d.Gen, d.Src, to) {
		return ErrLost
	}
	return err
}

// transfer marks buffer d.Buf, held by c, in transit to instance to and
// returns d from c with the transfer's generation; false: c did not hold
// the buffer (the daemon took it back).
func transfer(p *pool.Pool, c Conn, d desc.Desc, to uint16) (desc.Desc, bool) {
	d.Src = c.ID()
	gen, ok := p.Transfer(d.Buf, d.Src, to)
	d.Gen = gen
	return d, ok
}

// An Outbox gathers buffers handed on to one endpoint and sends their
// descriptors together (Conn.SendBatch): one message and one wake-up of
// the receiver for the lot, where Pass makes one system call and one
// wake-up per buffer. Each buffer is in transit from Add on
// (pool.Transfer), exactly as in Pass, so a sender that dies between Add
// and Flush leaves buffers the daemon's Reclaim finds, and a descriptor
// that does not go is cancelled buffer by buffer: a batch never leaves a
// buffer with no owner or two. An Outbox is not safe for concurrent use;
// its zero value is unusable (Init).
type Outbox struct {
	p  *pool.Pool
	c  Conn
	n  int
	ds [MaxBatch]desc.Desc
	to [MaxBatch]uint16 // each buffer's transit: its receiving instance
}

// Init makes o an empty outbox of endpoint c in pool p.
func (o *Outbox) Init(p *pool.Pool, c Conn) { *o = Outbox{p: p, c: c} }

// Len returns how many descriptors o holds.
func (o *Outbox) Len() int { return o.n }

// Room reports whether a descriptor for endpoint dst can join o without
// a Flush first: o is empty, or holds fewer than MaxBatch, all for dst.
func (o *Outbox) Room(dst uint16) bool {
	return o.n == 0 || o.n < MaxBatch && o.ds[0].Dst == dst
}

// Add marks buffer d.Buf, held by o's endpoint, in transit to instance to
// (d.Dst itself, unless d.Dst is the sandbox host that runs to) and
// queues d for endpoint d.Dst. The caller checks Room first. ErrLost: the
// endpoint did not hold the buffer (the daemon took it back); nothing is
// queued.
func (o *Outbox) Add(d desc.Desc, to uint16) error {
	if !o.Room(d.Dst) {
		panic("transport: Outbox.Add without room")
	}
	d, ok := transfer(o.p, o.c, d, to)
	if !ok {
		return ErrLost
	}
	o.ds[o.n], o.to[o.n] = d, to
	o.n++
	crash.Point("outbox.added")
	return nil
}

// Flush sends what o holds and empties it. It returns the descriptors
// that did not go, whose buffers o's endpoint holds again (the transfer
// cancelled), and why (ErrFull, ErrGone, …): the caller retries them or
// gives up on them. A buffer whose cancel failed (its destination died
// under way; the daemon has it) is in neither. The slice is o's: valid
// until the next Add.
func (o *Outbox) Flush() ([]desc.Desc, error) {
	n := o.n
	o.n = 0
	if n == 0 {
		return nil, nil
	}
	sent, err := o.c.SendBatch(o.ds[:n])
	if sent > 0 {
		crash.Point("outbox.sent")
	}
	back := 0
	for i := sent; i < n; i++ {
		d := o.ds[i]
		if o.p.Cancel(d.Buf, d.Gen, d.Src, o.to[i]) {
			o.ds[back] = d
			back++
		}
	}
	if back == 0 {
		return nil, err
	}
	return o.ds[:back], err
}
