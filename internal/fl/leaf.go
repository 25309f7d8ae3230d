package fl

import (
	"errors"
	"os"
	"time"

	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/sdkhook"
	"github.com/spry-dev/spry/sdk"
)

// Leaf is the fl-leaf builtin: a leaf aggregator. It runs as the second
// step of the update chain, after the top admitted the update and lent it
// a place in the job's round table (the step data), and folds the update,
// where the gateway wrote it in the pool, into one of the job's partial
// sums in the pool. Its output is a 16-byte record for the top's commit
// step (with the fold's time); the update's buffer is freed as soon as it returns.
//
// Leaves keep nothing between requests: the partial sums are the top's
// (shared buffers), so the control plane adds and removes leaves as the
// load asks, and a leaf that dies loses at most the sum it was writing.
func Leaf(req *sdk.Request, res *sdk.Response) error {
	p, self, buf := sdkhook.Pool(req)
	l, ok := lendOf(p.Header(buf).StepData())
	if !ok {
		return sdk.Errorf(502, "fl-leaf: the update has no lend from fl-top (fl-leaf runs after fl-top in the update chain)")
	}
	rec := fold(p, self, req, l)
	var b [recordLen]byte
	_, err := res.Write(rec.put(&b))
	return err
}

// leafPid is this process's id, as the table's lock words and claims name
// it.
var leafPid = os.Getpid()

// errBusy: every partial sum stayed locked until the request's deadline.
var errBusy = errors.New("fl: no partial sum came free")

func fold(p *pool.Pool, self uint16, req *sdk.Request, l lend) record {
	// Pin the table: it stays whatever happens to the top meanwhile.
	ttok, ok := p.Pin(l.table, l.tableGen, self)
	if !ok {
		return record{outcome: outGone}
	}
	defer p.Free(ttok, self)
	t, ok := tableOf(p.Data(l.table))
	if !ok || t.magic.Load() != tableMagic {
		return record{outcome: outGone}
	}
	// Claim the update before anything else (the top tells a leaf that
	// died before its fold by it).
	// A claim is taken once: an update handed to a second leaf (the
	// first died after it took it) is not folded twice.
	if !t.claims[l.ticket].CompareAndSwap(0, uint32(leafPid)) && t.claims[l.ticket].Load() != uint32(leafPid) {
		return record{outcome: outTaken}
	}
	if int(t.round.Load()) != l.round || t.sealed.Load() != 0 {
		return record{outcome: outClosed}
	}
	_, _, buf := sdkhook.Pool(req)
	if n := int(p.Size(buf)); n != 4*l.params {
		return record{outcome: outRefused, bad: -1, value: float32(n)}
	}
	start := time.Now()
	s, slot, err := lock(t, l, req)
	wait := time.Since(start)
	switch {
	case errors.Is(err, errBusy):
		return record{outcome: outBusy}
	case err != nil:
		return record{outcome: outLate}
	}
	defer s.lock.Store(0)
	// Ordering: the lock (a CAS) came before these loads; the top seals
	// the table before it reads the locks, so either it sees this lock
	// and waits, or this sees the seal.
	if int(t.round.Load()) != l.round || t.sealed.Load() != 0 || int(s.round.Load()) != l.round {
		return record{outcome: outClosed}
	}
	if req.Remaining() <= 0 {
		// Past the deadline the top may count this update lost: do not
		// fold it (the top reads the locks only after the deadline).
		return record{outcome: outLate}
	}
	atok, ok := p.Pin(s.acc.Load(), s.accGen.Load(), self)
	if !ok {
		return record{outcome: outGone}
	}
	defer p.Free(atok, self)
	acc, ok := Floats(p.Data(s.acc.Load()))
	if !ok || len(acc) < l.params {
		return record{outcome: outGone}
	}
	acc = acc[:l.params]
	if bad, v, ok := foldPieces(p, buf, acc, float32(l.samples), s.empty.Load() != 0); !ok {
		return record{outcome: outRefused, bad: bad, value: v}
	}
	s.empty.Store(0)
	s.folds.Add(1)
	s.addSamples(l.samples)
	// The bit last, before the unlock: with it set, the fold is whole.
	s.bits[l.ticket/64].Or(1 << (l.ticket % 64))
	// The fold's own time (not the wait for a free sum), for the
	// control plane's plan (control.PlanAggregation).
	return record{outcome: outFolded, slot: slot, value: float32((time.Since(start) - wait).Seconds())}
}

// foldPieces folds (or, into an empty sum, stores) w times the update in
// buffer buf into acc, reading it where it lies: in one piece, or in the
// extents the gateway wrote a large body into (each a whole number of
// chunks, so of float32s). On a value that is not finite it takes back
// what it folded and returns the value's index and the value.
func foldPieces(p *pool.Pool, buf uint32, acc []float32, w float32, empty bool) (bad int, v float32, ok bool) {
	off := 0
	for i := range p.Pieces(buf) {
		u, ok := Floats(p.Piece(buf, i))
		if !ok || off+len(u) > len(acc) {
			undoPieces(p, buf, acc[:off], w, empty)
			return -1, float32(p.Size(buf)), false
		}
		dst := acc[off : off+len(u)]
		var at int
		if empty {
			at, ok = Store(dst, u, w)
		} else {
			at, ok = Fold(dst, u, w)
		}
		if !ok {
			undoPieces(p, buf, acc[:off], w, empty)
			if at >= 0 && at < len(u) {
				v = u[at]
			}
			return off + at, v, false
		}
		off += len(u)
	}
	if off != len(acc) {
		undoPieces(p, buf, acc[:off], w, empty)
		return -1, float32(p.Size(buf)), false
	}
	return 0, 0, true
}

// undoPieces takes w times the update's first len(acc) values out of acc
// again (nothing to do when they were stored into an empty sum: it holds
// nothing of value).
func undoPieces(p *pool.Pool, buf uint32, acc []float32, w float32, empty bool) {
	if empty {
		return
	}
	off := 0
	for i := 0; off < len(acc); i++ {
		u, _ := Floats(p.Piece(buf, i))
		n := min(len(u), len(acc)-off)
		undo(acc[off:off+n], u[:n], w)
		off += n
	}
}

// lock takes a free slot of the table, starting at the ticket's, waiting
// for one while every slot is busy (a leaf that came up before the top
// made a slot for it), until the request's deadline.
func lock(t *table, l lend, req *sdk.Request) (*slotHdr, int, error) {
	w := lockWord(l.ticket, leafPid)
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 2*time.Millisecond) {
		n := int(t.nslots.Load())
		for k := range n {
			i := (l.ticket + k) % n
			s := &t.slots[i]
			if s.lock.Load() == 0 && s.lock.CompareAndSwap(0, w) {
				return s, i, nil
			}
		}
		if req.Remaining() <= wait {
			return nil, 0, errBusy
		}
		time.Sleep(wait)
	}
}
