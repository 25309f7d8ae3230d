package pool

import (
	"errors"
	"fmt"
	"unsafe"
)

// Magic and Version identify a Spry pool; an instance refuses any other.
const (
	Magic uint64 = 0x4c4f4f5059525053 // "SPRYPOOL", little-endian
	// Version 3: ownership word (own.go), ring claims and wake counter.
	// Version 4: request metadata ends in tagged sections (route
	// parameters, response headers), BufHeader flag FlagContentType, and
	// SlotStats.ClientErrors (see docs/contract.md).
	// Version 5: a slot's id word names the endpoint its descriptors go
	// to (instances in a sandbox host, route.go).
	// Version 6: 4 KiB buffer headers; payloads larger than a buffer in a
	// large-extent region (extent.go); shared buffers (share.go) and joins'
	// inputs (join.go); the routing table holds each chain's graph and the
	// functions' names; buffer headers say where the buffer is in its
	// graph (node, phase, join frames, call frame).
	Version uint32 = 6
)

// Fixed sizes of the layout.
const (
	PageSize = 4096
	// HeaderSize is the size of one buffer header.
	HeaderSize = 4096
	// MaxHops is how many nodes of a chain's graph have timestamps (a
	// node's stamps are at its index).
	MaxHops = 32
	// MaxNodes is the most steps (graph nodes) a chain has.
	MaxNodes = 32
	// MaxSteps is the most steps of a chain (MaxNodes; the name is older).
	MaxSteps = MaxNodes
	// MaxNext is the most successors one node has (a fan-out's width).
	MaxNext = 16
	// MaxName is the longest step or function name the routing table holds.
	MaxName = 64
	// MaxDepth is how deeply fan-outs nest (join frames a buffer carries).
	MaxDepth = 4
	// MaxJoins is the most join nodes of one chain.
	MaxJoins = 8
	// MaxSegs is the most segments (extents) one payload has.
	MaxSegs = 12
	// ChunkSize is the unit of the large-extent region.
	ChunkSize = 64 << 10
	// StatsSize is the size of one instance slot's counters.
	StatsSize = 512
	// MaxContentType is the longest content type a buffer carries.
	MaxContentType = 127
	// MaxMeta is the room for request metadata (method, path, query,
	// selected headers) in a buffer header.
	MaxMeta = HeaderSize - offMeta
)

// Layout gives the sizes of one app's pool. Create derives every region's
// offset from it; the offsets are written into the pool header so an
// instance maps exactly what the daemon created.
type Layout struct {
	Buffers    uint32 // number of buffers
	BufferSize uint32 // payload bytes per buffer
	Functions  uint32 // functions in the routing table
	Chains     uint32 // chains in the routing table
	Slots      uint32 // instance slots (sum over functions of their maximum instances)
	Endpoints  uint32 // descriptor endpoints with a ring (slots + gateways); 0 when RingBytes is 0
	RingBytes  uint32 // bytes of one endpoint's ring (transports that use rings); 0 = none
	// Chunks sizes the large-extent region, in ChunkSize units (0: none):
	// payloads larger than a buffer live there, in runs of chunks
	// (extent.go). Its memory is committed only as it is written.
	Chunks uint32
}

// Limits on a Layout.
const (
	MinBuffers    = 2
	MaxBuffers    = 1 << 20
	MinBufferSize = 1 << 10
	MaxBufferSize = 64 << 20
	MaxFunctions  = 1024
	MaxChains     = 1024
	MaxSlots      = 1 << 14
	maxRingBytes  = 1 << 24
	// MaxChunks bounds the large-extent region (1 TiB).
	MaxChunks = 1 << 24
)

// ErrLayout is returned for a Layout outside the limits.
var ErrLayout = errors.New("pool: bad layout")

// regions are the byte offsets of a pool's parts, all page-aligned, in order.
type regions struct {
	route, stats, ring, hdr, arena, extmap, ext, total uint64
	stride                                             uint64 // distance between buffer payloads
}

// routeBytes is the size of the routing region for l (before page rounding).
func routeBytes(l Layout) uint64 {
	return uint64(unsafe.Sizeof(routeHeader{})) +
		uint64(l.Functions)*uint64(unsafe.Sizeof(fnEntry{})) +
		uint64(l.Chains)*uint64(unsafe.Sizeof(chainEntry{})) +
		uint64(l.Slots)*uint64(unsafe.Sizeof(slotInfo{}))
}

func (l Layout) check() error {
	switch {
	case l.Buffers < MinBuffers || l.Buffers > MaxBuffers:
		return fmt.Errorf("%w: %d buffers, want %d..%d", ErrLayout, l.Buffers, MinBuffers, MaxBuffers)
	case l.BufferSize < MinBufferSize || l.BufferSize > MaxBufferSize:
		return fmt.Errorf("%w: buffer size %d, want %d..%d", ErrLayout, l.BufferSize, MinBufferSize, MaxBufferSize)
	case l.Functions == 0 || l.Functions > MaxFunctions:
		return fmt.Errorf("%w: %d functions, want 1..%d", ErrLayout, l.Functions, MaxFunctions)
	case l.Chains == 0 || l.Chains > MaxChains:
		return fmt.Errorf("%w: %d chains, want 1..%d", ErrLayout, l.Chains, MaxChains)
	case l.Slots == 0 || l.Slots > MaxSlots:
		return fmt.Errorf("%w: %d slots, want 1..%d", ErrLayout, l.Slots, MaxSlots)
	case l.RingBytes > maxRingBytes || l.RingBytes%64 != 0:
		return fmt.Errorf("%w: ring of %d bytes, want a multiple of 64 up to %d", ErrLayout, l.RingBytes, maxRingBytes)
	case l.RingBytes != 0 && (l.Endpoints == 0 || l.Endpoints > MaxSlots+1024):
		return fmt.Errorf("%w: %d ring endpoints", ErrLayout, l.Endpoints)
	case l.Chunks > MaxChunks:
		return fmt.Errorf("%w: %d chunks of large extents, want at most %d", ErrLayout, l.Chunks, MaxChunks)
	}
	return nil
}

func pageUp(n uint64) uint64 { return (n + PageSize - 1) &^ (PageSize - 1) }

func (l Layout) regions() regions {
	var r regions
	r.route = PageSize // page 0 is the pool header
	r.stats = r.route + pageUp(routeBytes(l))
	r.ring = r.stats + pageUp(uint64(l.Slots)*StatsSize)
	rings := uint64(0)
	if l.RingBytes != 0 {
		rings = uint64(l.Endpoints) * uint64(l.RingBytes)
	}
	r.hdr = r.ring + pageUp(rings)
	r.arena = r.hdr + pageUp(uint64(l.Buffers)*HeaderSize)
	r.stride = (uint64(l.BufferSize) + 63) &^ 63
	r.extmap = r.arena + pageUp(uint64(l.Buffers)*r.stride)
	// The extent region starts on a 2 MiB boundary (huge pages, if the
	// kernel uses them for the memfd, map it whole).
	r.ext = (r.extmap + pageUp(uint64(extWords(l.Chunks))*8) + extAlign - 1) &^ (extAlign - 1)
	r.total = r.ext + uint64(l.Chunks)*ChunkSize
	if l.Chunks == 0 {
		r.ext = r.extmap
		r.total = r.extmap
	}
	return r
}

// extAlign aligns the extent region.
const extAlign = 2 << 20

// extWords returns the bitmap words for chunks chunks.
func extWords(chunks uint32) uint32 { return (chunks + 63) / 64 }

// Size returns the total bytes of a pool with layout l.
func (l Layout) Size() int64 { return int64(l.regions().total) }
