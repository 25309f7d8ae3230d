package pool

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Errors returned by the pool.
var (
	ErrNotSupported = errors.New("pool: not supported on this platform")
	ErrCorrupt      = errors.New("pool: not a valid spry pool")
	ErrRange        = errors.New("pool: index out of range")
)

// header is page 0 of the pool. Fields up to the free list are written once
// by Create before any other process maps the pool.
type header struct {
	magic   uint64
	version uint32
	_       uint32
	layout  Layout // 8 × uint32
	route   uint64
	stats   uint64
	ring    uint64
	hdr     uint64
	arena   uint64
	extmap  uint64
	ext     uint64
	total   uint64
	stride  uint64
	_       [8]byte // to 128

	// The free list. head packs (tag<<32 | index+1); index+1 == 0 is the
	// empty list. The tag grows on every successful push and pop, so a CAS
	// against a head read before another process popped and re-pushed the
	// same buffer fails (ABA protection). free counts buffers on the list
	// and sits on the same cache line: both change together.
	head atomic.Uint64
	free atomic.Int64
	_    [48]byte

	allocFails atomic.Uint64 // Alloc found the list empty
	reclaimed  atomic.Uint64 // buffers taken back from dead owners
	stale      atomic.Uint64 // stale descriptors dropped by the gateway
	_          [40]byte

	// The large-extent region (extent.go): a word no longer used (claims
	// are first fit; kept so that the offsets stay those of layout 6),
	// chunks claimed, and claims that found no room.
	cursor   atomic.Uint64
	used     atomic.Int64
	extFails atomic.Uint64
	_        [40]byte
}

// Pool is one app's shared-memory pool as mapped by one process.
//
// The daemon makes it with Create; an instance maps the same memory with
// Attach from the file descriptor it inherited. All methods are safe for
// concurrent use from any number of goroutines and processes unless noted.
type Pool struct {
	mem    []byte
	fd     int
	l      Layout
	r      regions
	h      *header
	route  *routeHeader
	fns    []fnEntry    // the daemon's own copy (see bind), else shared
	chains []chainEntry // the daemon's own copy, else shared
	slots  []slotInfo   // the daemon's own copy, else shared
	// The routing table as instances see it (the daemon only): what the
	// daemon writes goes to both; what it reads comes from its own copy,
	// out of the instances' reach.
	shRoute  *routeHeader
	shFns    []fnEntry
	shChains []chainEntry
	shSlots  []slotInfo
	routeMu  sync.Mutex // orders the daemon's writes of the shared table
	stats    []SlotStats
	bufs     []BufHeader
	arena    []byte
	extmap   []atomic.Uint64 // one bit per chunk of the extent region: 1 = taken
	ext      []byte          // the extent region
	daemon   bool
}

// at returns a pointer into the mapping.
func at[T any](mem []byte, off uint64) *T { return (*T)(unsafe.Pointer(&mem[off])) }

func slice[T any](mem []byte, off uint64, n uint32) []T {
	if n == 0 {
		return nil
	}
	return unsafe.Slice(at[T](mem, off), n)
}

// bind points p's views at its mapping, using the offsets in the header.
func (p *Pool) bind() {
	r := p.r
	p.h = at[header](p.mem, 0)
	p.route = at[routeHeader](p.mem, r.route)
	off := r.route + uint64(unsafe.Sizeof(routeHeader{}))
	p.fns = slice[fnEntry](p.mem, off, p.l.Functions)
	off += uint64(p.l.Functions) * uint64(unsafe.Sizeof(fnEntry{}))
	p.chains = slice[chainEntry](p.mem, off, p.l.Chains)
	off += uint64(p.l.Chains) * uint64(unsafe.Sizeof(chainEntry{}))
	p.slots = slice[slotInfo](p.mem, off, p.l.Slots)
	p.stats = slice[SlotStats](p.mem, r.stats, p.l.Slots)
	p.bufs = slice[BufHeader](p.mem, r.hdr, p.l.Buffers)
	p.arena = p.mem[r.arena:r.extmap]
	p.extmap = slice[atomic.Uint64](p.mem, r.extmap, extWords(p.l.Chunks))
	p.ext = p.mem[r.ext:r.total]
	if p.daemon {
		// An instance can write the routing region (its read-only mapping
		// is its own doing, and can be undone): the daemon indexes with
		// nothing it reads there.
		p.shRoute, p.shFns, p.shChains, p.shSlots = p.route, p.fns, p.chains, p.slots
		p.route = new(routeHeader)
		p.fns = make([]fnEntry, len(p.shFns))
		p.chains = make([]chainEntry, len(p.shChains))
		p.slots = make([]slotInfo, len(p.shSlots))
	}
}

// init writes a fresh header and free list. Only Create calls it, before the
// pool is shared.
func (p *Pool) init() {
	h := p.h
	h.magic = Magic
	h.version = Version
	h.layout = p.l
	r := p.r
	h.route, h.stats, h.ring, h.hdr, h.arena, h.total, h.stride = r.route, r.stats, r.ring, r.hdr, r.arena, r.total, r.stride
	h.extmap, h.ext = r.extmap, r.ext
	// Bits past the last chunk are taken for good, so no search finds them.
	if c := p.l.Chunks; c%64 != 0 {
		p.extmap[len(p.extmap)-1].Store(^uint64(0) << (c % 64))
	}
	// Chain every buffer: 0 -> 1 -> ... -> n-1.
	for i := range p.bufs {
		b := &p.bufs[i]
		b.own.Store(ownWord(Own{Gen: 1}))
		if i+1 < len(p.bufs) {
			b.next.Store(uint32(i + 2))
		}
	}
	h.head.Store(1)
	h.free.Store(int64(p.l.Buffers))
}

// validate checks a header read from a mapping of size bytes.
func validate(mem []byte) (Layout, regions, error) {
	if len(mem) < PageSize {
		return Layout{}, regions{}, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(mem))
	}
	h := at[header](mem, 0)
	if h.magic != Magic {
		return Layout{}, regions{}, fmt.Errorf("%w: bad magic %#x", ErrCorrupt, h.magic)
	}
	if h.version != Version {
		return Layout{}, regions{}, fmt.Errorf("%w: version %d, this binary speaks %d", ErrCorrupt, h.version, Version)
	}
	l := h.layout
	if err := l.check(); err != nil {
		return Layout{}, regions{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	r := l.regions()
	if r.route != h.route || r.stats != h.stats || r.ring != h.ring || r.hdr != h.hdr ||
		r.arena != h.arena || r.extmap != h.extmap || r.ext != h.ext || r.total != h.total || r.stride != h.stride {
		return Layout{}, regions{}, fmt.Errorf("%w: region offsets disagree with layout", ErrCorrupt)
	}
	if r.total != uint64(len(mem)) {
		return Layout{}, regions{}, fmt.Errorf("%w: %d bytes mapped, layout needs %d", ErrCorrupt, len(mem), r.total)
	}
	return l, r, nil
}

// Layout returns the pool's layout.
func (p *Pool) Layout() Layout { return p.l }

// Fd returns the memfd backing the pool (for handing to instances).
func (p *Pool) Fd() int { return p.fd }

// Buffers returns the number of buffers.
func (p *Pool) Buffers() uint32 { return p.l.Buffers }

// BufferSize returns the payload capacity of one buffer.
func (p *Pool) BufferSize() uint32 { return p.l.BufferSize }

// FreeBuffers returns the number of buffers on the free list.
func (p *Pool) FreeBuffers() int { return int(p.h.free.Load()) }

// AllocFails returns how often Alloc found the pool empty.
func (p *Pool) AllocFails() uint64 { return p.h.allocFails.Load() }

// Reclaimed returns how many buffers were taken back from dead owners.
func (p *Pool) Reclaimed() uint64 { return p.h.reclaimed.Load() }

// CountStale records a stale descriptor dropped outside any slot (the gateway).
func (p *Pool) CountStale() { p.h.stale.Add(1) }

// Stale returns the stale descriptors counted by CountStale.
func (p *Pool) Stale() uint64 { return p.h.stale.Load() }

// Ring returns endpoint e's ring memory, or nil when the layout has none.
func (p *Pool) Ring(e uint32) []byte {
	if p.l.RingBytes == 0 || e >= p.l.Endpoints {
		return nil
	}
	off := p.r.ring + uint64(e)*uint64(p.l.RingBytes)
	return p.mem[off : off+uint64(p.l.RingBytes) : off+uint64(p.l.RingBytes)]
}
