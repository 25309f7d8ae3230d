package fl

import (
	"encoding/binary"
	"math"
	"sync/atomic"
	"unsafe"
)

// The round table: what the top aggregator and the leaves of a job share
// in the app's pool, one per job, in a shared buffer the top keeps (leaves
// pin it while they use it, so it outlives a top that dies under them).
//
// It names the job's partial sums (slots): each an accumulator, a shared
// buffer of Params float32s that the top keeps too, and a lock that a leaf
// takes to fold an update into it. The lock word says who folds what:
//
//	lock = ticket<<32 | pid<<1 | 1     (0: free)
//
// and a bitmap per slot says which of the round's updates (by ticket) its
// sum holds: a leaf sets the bit after the fold, before it lets go of the
// lock. So the table alone tells, at any moment and after any crash, what
// each sum holds: a lock held by a dead process with its ticket's bit
// clear is a sum torn in the middle of a fold (lost, with every update in
// it); with the bit set, the fold completed. claims[ticket] is the pid of
// the leaf that took the update (before it locks anything), so the top
// tells an update whose leaf died before its fold from one still queued.
//
// Every field that both sides write, or that one reads while the other
// writes, is an atomic; the ordering arguments are at the uses (leaf.go,
// top.go).

const (
	tableMagic = 0x31544c4659525053 // "SPRYFLT1"
	// MaxPartials is the most partial sums (slots) a job's round has.
	MaxPartials = 32
	bitmapWords = MaxRoundUpdates / 64
)

type slotHdr struct {
	lock    atomic.Uint64 // ticket<<32 | pid<<1 | 1; 0: free
	acc     atomic.Uint32 // the accumulator's buffer index
	accGen  atomic.Uint32 // and generation
	empty   atomic.Uint32 // 1: it holds nothing this round (the next fold stores)
	round   atomic.Uint32 // the round its contents belong to
	folds   atomic.Uint32 // updates folded this round
	_       uint32
	samples atomic.Uint64 // float64 bits: their sample counts summed
	_       [24]byte
	bits    [bitmapWords]atomic.Uint64 // ticket i folded here: bit i
}

type table struct {
	magic  atomic.Uint64
	round  atomic.Uint32 // the open round
	sealed atomic.Uint32 // 1: no fold may start (the round is closing)
	nslots atomic.Uint32 // slots in use: [0, nslots)
	params atomic.Uint32
	_      [40]byte
	slots  [MaxPartials]slotHdr
	claims [MaxRoundUpdates]atomic.Uint32 // ticket → pid of the leaf that took it
}

// TableBytes is the size of a round table.
const TableBytes = int(unsafe.Sizeof(table{}))

var _ = [1]struct{}{}[unsafe.Sizeof(slotHdr{})%64] // slots stay cache-line aligned

// tableOf views b (a round table's payload, 8-byte aligned) as the table.
func tableOf(b []byte) (*table, bool) {
	if len(b) < TableBytes || uintptr(unsafe.Pointer(&b[0]))%8 != 0 {
		return nil, false
	}
	return (*table)(unsafe.Pointer(&b[0])), true
}

func lockWord(ticket, pid int) uint64 { return uint64(ticket)<<32 | uint64(pid)<<1 | 1 }

func lockOf(w uint64) (ticket, pid int) { return int(w >> 32), int(uint32(w) >> 1) }

func (s *slotHdr) has(ticket int) bool {
	return ticket >= 0 && ticket < MaxRoundUpdates && s.bits[ticket/64].Load()&(1<<(ticket%64)) != 0
}

// reset empties the slot for round r. Only the top calls it, with the
// table sealed and the slot unlocked.
func (s *slotHdr) reset(r int) {
	s.empty.Store(1)
	s.folds.Store(0)
	s.samples.Store(0)
	for i := range s.bits {
		s.bits[i].Store(0)
	}
	s.round.Store(uint32(r))
}

func (s *slotHdr) addSamples(v float64) {
	for {
		o := s.samples.Load()
		if s.samples.CompareAndSwap(o, math.Float64bits(math.Float64frombits(o)+v)) {
			return
		}
	}
}

// The lend: what the top writes, as the request's step data, for the leaf
// that folds an update (and for itself, at the commit):
//
//	u32 table index | u32 table generation | u32 round | u32 ticket |
//	f64 samples | u32 params | u32 magic
type lend struct {
	table, tableGen uint32
	round, ticket   int
	samples         float64
	params          int
}

const (
	lendBytes = 32
	lendMagic = 0x4c464c53 // "SLFL"
)

func (l *lend) put(b *[lendBytes]byte) []byte {
	binary.LittleEndian.PutUint32(b[0:], l.table)
	binary.LittleEndian.PutUint32(b[4:], l.tableGen)
	binary.LittleEndian.PutUint32(b[8:], uint32(l.round))
	binary.LittleEndian.PutUint32(b[12:], uint32(l.ticket))
	binary.LittleEndian.PutUint64(b[16:], math.Float64bits(l.samples))
	binary.LittleEndian.PutUint32(b[24:], uint32(l.params))
	binary.LittleEndian.PutUint32(b[28:], lendMagic)
	return b[:]
}

func lendOf(b []byte) (lend, bool) {
	if len(b) != lendBytes || binary.LittleEndian.Uint32(b[28:]) != lendMagic {
		return lend{}, false
	}
	l := lend{
		table: binary.LittleEndian.Uint32(b[0:]), tableGen: binary.LittleEndian.Uint32(b[4:]),
		round: int(binary.LittleEndian.Uint32(b[8:])), ticket: int(binary.LittleEndian.Uint32(b[12:])),
		samples: math.Float64frombits(binary.LittleEndian.Uint64(b[16:])), params: int(binary.LittleEndian.Uint32(b[24:])),
	}
	return l, l.ticket < MaxRoundUpdates
}

// A leaf's answer to the top's commit step, its output's payload:
//
//	u32 outcome | u32 slot | u32 bad index | f32 bad value
const (
	outFolded  = 1 // folded into slot
	outRefused = 2 // a value not finite: refused (bad index, value)
	outClosed  = 3 // the round closed (or moved on) before the fold
	outGone    = 4 // the job is gone (its table was freed)
	outLate    = 5 // the request's deadline passed before the fold
	outBusy    = 6 // no partial sum came free before the deadline
	outTaken   = 7 // another leaf took the update first
	recordLen  = 16
)

type record struct {
	outcome, slot, bad int
	value              float32
}

func (r record) put(b *[recordLen]byte) []byte {
	binary.LittleEndian.PutUint32(b[0:], uint32(r.outcome))
	binary.LittleEndian.PutUint32(b[4:], uint32(r.slot))
	binary.LittleEndian.PutUint32(b[8:], uint32(int32(r.bad)))
	binary.LittleEndian.PutUint32(b[12:], math.Float32bits(r.value))
	return b[:]
}

func recordOf(b []byte) (record, bool) {
	if len(b) != recordLen {
		return record{}, false
	}
	return record{outcome: int(binary.LittleEndian.Uint32(b[0:])), slot: int(binary.LittleEndian.Uint32(b[4:])),
		bad: int(int32(binary.LittleEndian.Uint32(b[8:]))), value: math.Float32frombits(binary.LittleEndian.Uint32(b[12:]))}, true
}
