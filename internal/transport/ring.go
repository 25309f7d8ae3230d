package transport

import (
	"errors"
	"sync/atomic"
	"unsafe"

	"github.com/spry-dev/spry/internal/desc"
)

// A ring is a bounded multi-producer, single-consumer queue of
// descriptors in one endpoint table entry, shared by every process of the
// app (D. Vyukov's bounded queue with a sequence number per slot):
//
//	off   0  tail   owner<<48 | next position producers reserve
//	off  64  head   next position the consumer takes (published per batch)
//	off 128  sleep  futex word: 1 while the consumer sleeps or is about to
//	off 256  slots  cap × {seq, descriptor}
//
// Each field sits on its own cache line: producers write tail, the
// consumer writes head, sleep changes only around sleeps.
//
// Positions count modulo 2^48 (the low bits of the tail word) and map to
// slot pos&mask. Slot seq says what the slot is ready for: seq == pos: free
// for the producer that reserves pos; seq == pos+1: holds the descriptor
// for pos; the consumer then sets seq = pos+cap, freeing it for the next
// lap. A producer reserves pos by a CAS of the tail word that also checks
// the owner, writes the descriptor, then publishes seq = pos+1.
type ringHdr struct {
	tail  atomic.Uint64
	_     [56]byte
	head  atomic.Uint64
	_     [56]byte
	sleep atomic.Uint32
	_     [60]byte
	_     [64]byte
}

type ringSlot struct {
	seq atomic.Uint64
	_   uint64
	d   [desc.Size]byte
}

const (
	ringHdrBytes  = int(unsafe.Sizeof(ringHdr{}))
	ringSlotBytes = int(unsafe.Sizeof(ringSlot{}))
)

var _ [256 - ringHdrBytes]byte // the header is exactly four cache lines
var _ [ringHdrBytes - 256]byte
var _ [32 - ringSlotBytes]byte

// RingBytes returns the endpoint table entry size of a ring that holds n
// descriptors (n a power of two).
func RingBytes(n uint32) uint32 { return uint32(ringHdrBytes) + n*uint32(ringSlotBytes) }

// ringCap returns the capacity of rings in entries of b bytes: the
// largest power of two that fits (0 if not even 2 fit).
func ringCap(b uint32) uint64 {
	if b < RingBytes(2) {
		return 0
	}
	n := uint64(b-uint32(ringHdrBytes)) / uint64(ringSlotBytes)
	c := uint64(1)
	for c*2 <= n {
		c *= 2
	}
	return c
}

// dist48 returns a-b modulo 2^48, as a signed number.
func dist48(a, b uint64) int64 { return int64((a-b)<<16) >> 16 }

// ringView reads rings out of a table whose entries all have capacity cap.
type ringView struct {
	tab  *table
	cap  uint64
	mask uint64
}

func (v *ringView) hdr(i uint32) *ringHdr { return (*ringHdr)(v.tab.entry(i)) }

func (v *ringView) slot(i uint32, pos uint64) *ringSlot {
	return (*ringSlot)(unsafe.Add(v.tab.entry(i), uintptr(ringHdrBytes)+uintptr(pos&v.mask)*uintptr(ringSlotBytes)))
}

// errMoved: the ring no longer belongs to the destination (the sender
// looks it up again).
var errMoved = errors.New("transport: ring changed hands")

// maxPushTries bounds a producer's retries when other producers keep
// winning the tail: Send never blocks, so past it the ring counts as full.
const maxPushTries = 256

// push appends d to ring i if it belongs to d.Dst.
func (v *ringView) push(i uint32, d *desc.Desc) error {
	h := v.hdr(i)
	for range maxPushTries {
		t := h.tail.Load()
		if ownerOf(t) != d.Dst {
			return errMoved
		}
		pos := t & lowMask
		s := v.slot(i, pos)
		switch dif := dist48(s.seq.Load(), pos); {
		case dif == 0:
			// Ordering: the CAS reserves pos for us alone and fails if
			// the owner changed since we read it. The descriptor bytes are
			// plain writes, published by the sequentially consistent seq
			// store: a consumer that loads seq == pos+1 sees them.
			if h.tail.CompareAndSwap(t, t&^lowMask|(pos+1)&lowMask) {
				d.Encode(s.d[:])
				s.seq.Store((pos + 1) & lowMask)
				return nil
			}
		case dif < 0:
			return ErrFull // the slot still holds the descriptor of the last lap
		}
		// dif > 0: another producer took pos; look at the new tail.
	}
	return ErrFull
}

// pop takes up to len(ds) descriptors from ring i, starting at *head, and
// advances *head. Descriptors not addressed to self (written by a broken
// or hostile producer of the app) are skipped and counted in *foreign.
func (v *ringView) pop(i uint32, head *uint64, self uint16, ds []desc.Desc, foreign *uint64) int {
	pos := *head
	n := 0
	for range v.cap {
		if n == len(ds) {
			break
		}
		s := v.slot(i, pos)
		// Ordering: seq is loaded before the descriptor bytes, and the
		// producer stored them before seq (see push).
		if s.seq.Load() != (pos+1)&lowMask {
			break
		}
		d, _ := desc.Decode(s.d[:])
		// The bytes are copied out; the slot may go to the next lap.
		s.seq.Store((pos + v.cap) & lowMask)
		pos = (pos + 1) & lowMask
		if d.Dst != self {
			*foreign++
			continue
		}
		ds[n] = d
		n++
	}
	if pos != *head {
		*head = pos
		v.hdr(i).head.Store(pos)
	}
	return n
}

// quiet reports whether ring i has no reservation in flight: no producer
// reserved a position and has yet to publish it. Only a quiet ring may be
// reset for a new owner; a late publish into a reset ring would corrupt it.
func (v *ringView) quiet(i uint32) bool {
	h := v.hdr(i)
	tail := h.tail.Load() & lowMask
	pos := h.head.Load() & lowMask
	if d := dist48(tail, pos); d < 0 || uint64(d) > v.cap {
		pos = (tail - v.cap) & lowMask // head is garbage: check the whole ring
	}
	for ; pos != tail; pos = (pos + 1) & lowMask {
		if v.slot(i, pos).seq.Load() == pos {
			return false
		}
	}
	return true
}

// reset empties ring i, which must be ownerless and quiet, and gives it to
// owner. Positions continue from where the ring stopped.
func (v *ringView) reset(i uint32, owner uint16) {
	h := v.hdr(i)
	pos := h.tail.Load() & lowMask
	for k := range v.cap {
		p := (pos + k) & lowMask
		v.slot(i, p).seq.Store(p)
	}
	h.head.Store(pos)
	h.sleep.Store(0)
	// Ordering: published last, sequentially consistent: a producer that
	// sees the new owner sees the reset slots.
	h.tail.Store(uint64(owner)<<ownerShift | pos)
}

// disown takes ring i away from its owner: producers' CAS fail from now on.
func (v *ringView) disown(i uint32) {
	h := v.hdr(i)
	for {
		t := h.tail.Load()
		if h.tail.CompareAndSwap(t, t&lowMask) {
			return
		}
	}
}
