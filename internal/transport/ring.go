package transport

import (
	"errors"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/desc"
)

// A ring is a bounded multi-producer, single-consumer queue of
// descriptors in one endpoint table entry, shared by every process of the
// app (after D. Vyukov's bounded queue, with a sequence number per slot):
//
//	off   0  tail   owner<<48 | next position producers reserve
//	off  64  head   next position the consumer takes (published per batch)
//	off 128  sleep  1 while the consumer sleeps or is about to (it alone writes it)
//	off 132  wake   futex word: senders bump it to wake a sleeping consumer
//	off 256  slots  cap × {seq, descriptor}
//
// Each group sits on its own cache line: producers write tail, the
// consumer writes head, sleep and wake change only around sleeps.
//
// Positions count modulo 2^48 and map to slot pos&mask. A slot's seq holds
// a position in its low 48 bits and a tag in the top 16:
//
//	pos            free for the producer that reserves pos
//	pos | id<<48   claimed by producer id, which is writing the descriptor
//	pos+1          holds the descriptor for pos
//	pos+1 | skip   holds nothing for pos: the consumer passes over it
//
// and the consumer sets pos+cap after taking a slot, freeing it for the
// next lap. A producer reserves pos by a CAS of the tail word that also
// checks the owner, claims the slot by a CAS pos → pos|id, writes the
// descriptor, and publishes by a CAS of its claim to pos+1.
//
// A producer can stop for good anywhere (killed), and the consumer must not
// wait behind it forever (a hole: later descriptors, and every sender once
// the ring has gone round, would be stuck). The claim makes holes safe to
// pass: a reservation not yet claimed is one no producer is writing, and
// the consumer skips it after holeUnclaimed (a live producer whose claim
// then fails reserves again); a claimed slot is skipped by the daemon as
// soon as the claimer is known dead (skipDead), or by the consumer after
// holeClaimed. A producer whose claim was skipped under it sees its
// publish fail and sends again. Descriptors are hints and buffers are
// owned by their ownership words (pool/own.go), so even a torn or lost
// descriptor loses no buffer.
type ringHdr struct {
	tail  atomic.Uint64
	_     [56]byte
	head  atomic.Uint64
	_     [56]byte
	sleep atomic.Uint32
	wake  atomic.Uint32
	_     [56]byte
	_     [64]byte
}

// Tags in the top 16 bits of a slot's seq.
const (
	tagShift = 48
	tagSkip  = uint64(0xffff) << tagShift
)

// How long a consumer waits at a hole before it skips it.
const (
	holeUnclaimed = int64(time.Millisecond)
	holeClaimed   = int64(time.Second)
)

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

// push appends d to ring i if it belongs to d.Dst; self is the sending
// endpoint (it names the claim).
func (v *ringView) push(i uint32, d *desc.Desc, self uint16) error {
	h := v.hdr(i)
	for range maxPushTries {
		t := h.tail.Load()
		if ownerOf(t) != d.Dst {
			return errMoved
		}
		pos := t & lowMask
		s := v.slot(i, pos)
		seq := s.seq.Load()
		switch dif := dist48(seq&lowMask, pos); {
		case dif == 0 && seq>>tagShift == 0:
			// Ordering: the tail CAS reserves pos for us alone and fails
			// if the owner changed since we read it. The claim CAS fails
			// if the consumer skipped the reservation meanwhile. The
			// descriptor bytes are plain writes, published by the
			// sequentially consistent CAS of the claim: a consumer that
			// loads seq == pos+1 sees them.
			if !h.tail.CompareAndSwap(t, t&^lowMask|(pos+1)&lowMask) {
				continue
			}
			crash.Point("ring.reserved")
			claim := pos | uint64(self)<<tagShift
			if !s.seq.CompareAndSwap(pos, claim) {
				continue // skipped as a hole: reserve again
			}
			d.Encode(s.d[:])
			crash.Point("ring.claimed")
			if s.seq.CompareAndSwap(claim, (pos+1)&lowMask) {
				return nil
			}
			// The claim was skipped (we were taken for dead): the
			// descriptor is not delivered; send it again.
		case dif < 0:
			return ErrFull // the slot still holds the descriptor of the last lap
		}
		// Another producer took pos; look at the new tail.
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
		seq := s.seq.Load()
		next := (pos + 1) & lowMask
		if seq != next {
			if seq != next|tagSkip {
				break
			}
			s.seq.Store((pos + v.cap) & lowMask) // a skipped hole
			pos = next
			continue
		}
		d, _ := desc.Decode(s.d[:])
		// The bytes are copied out; the slot may go to the next lap.
		s.seq.Store((pos + v.cap) & lowMask)
		pos = next
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

// hole describes what keeps the consumer of ring i at position head: ok is
// false when nothing does (the ring is empty, or the slot is ready). Else
// seq is the slot's word and wait how long to let it be before skipping
// it; sane is false when the ring's words make no sense (written by a
// hostile or broken process of the app).
func (v *ringView) hole(i uint32, head uint64) (seq uint64, wait int64, sane, ok bool) {
	h := v.hdr(i)
	tail := h.tail.Load() & lowMask
	d := dist48(tail, head)
	if d < 0 || uint64(d) > v.cap {
		return 0, holeUnclaimed, false, true
	}
	seq = v.slot(i, head).seq.Load()
	next := (head + 1) & lowMask
	switch {
	case seq == next || seq == next|tagSkip:
		return seq, 0, true, false // ready
	case d == 0:
		// Empty: the slot must be free for the next producer (unless one
		// reserved and claimed it since tail was loaded).
		if seq == head || h.tail.Load()&lowMask != tail {
			return seq, 0, true, false
		}
		return seq, holeUnclaimed, false, true
	case seq == head:
		return seq, holeUnclaimed, true, true // reserved, not claimed
	case seq&lowMask == head:
		return seq, holeClaimed, true, true // claimed, not published
	}
	return seq, holeUnclaimed, false, true
}

// skip marks the slot at pos, whose word is seq, as a hole to pass over.
// It reports false when the word changed meanwhile (published or claimed).
func (v *ringView) skip(i uint32, pos, seq uint64) bool {
	return v.slot(i, pos).seq.CompareAndSwap(seq, (pos+1)&lowMask|tagSkip)
}

// skipDead passes over every slot of ring i claimed by id, which is dead:
// it will never publish them. It returns how many it skipped.
func (v *ringView) skipDead(i uint32, id uint16) int {
	h := v.hdr(i)
	tail := h.tail.Load() & lowMask
	n := 0
	for k := range v.cap {
		pos := (tail - v.cap + k) & lowMask
		s := v.slot(i, pos)
		if seq := s.seq.Load(); seq>>tagShift == uint64(id) && seq&lowMask == pos {
			if v.skip(i, pos, seq) {
				n++
			}
		}
	}
	return n
}

// rebuild makes ring i empty at position head and owned by owner, whatever
// its words said: the consumer's way out of a ring a hostile or broken
// process scribbled on. Descriptors in it are lost; their buffers stay in
// transit, where the daemon's sweep finds them.
func (v *ringView) rebuild(i uint32, owner uint16, head uint64) {
	for k := range v.cap {
		p := (head + k) & lowMask
		v.slot(i, p).seq.Store(p)
	}
	h := v.hdr(i)
	h.head.Store(head)
	h.tail.Store(uint64(owner)<<ownerShift | head)
}

// quiet reports whether ring i has no claim in flight: no producer is
// writing a descriptor into it. Only a quiet ring may be reset for a new
// owner: a late write into a reset ring would tear a descriptor. (A
// reservation not yet claimed does not count: its claim fails after the
// reset. A claim of a dead producer was skipped by skipDead.)
func (v *ringView) quiet(i uint32) bool {
	tail := v.hdr(i).tail.Load() & lowMask
	for k := range v.cap {
		pos := (tail - v.cap + k) & lowMask
		if seq := v.slot(i, pos).seq.Load(); seq>>tagShift != 0 && seq>>tagShift != 0xffff && seq&lowMask == pos {
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
	h.wake.Add(1)
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
