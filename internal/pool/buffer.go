package pool

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"unsafe"
)

// Offsets inside a buffer header (HeaderSize bytes).
const (
	offCtype = 400
	offTimes = offCtype + MaxContentType + 1
	offMeta  = offTimes + MaxHops*16
)

// BufHeader is the header of one buffer, in shared memory.
//
// own, next and held are shared between processes and only accessed
// atomically; own is the buffer's ownership word (see own.go), held the
// references to a shared buffer (see share.go). The other fields belong to
// whoever holds the buffer: the holder writes them, then hands the buffer
// on (Transfer, then a descriptor). The receiver's Accept is a
// compare-and-swap on own after the transfer's, so it sees every write the
// previous holder made before its Transfer.
type BufHeader struct {
	own      atomic.Uint64 // generation | holder<<32 | transit destination<<48
	next     atomic.Uint32 // free-list link: index+1 of the next free buffer
	length   uint32        // payload bytes
	reqID    uint64        // gateway request id
	off      uint32        // payload offset inside the buffer (or its first segment)
	status   uint16        // HTTP status the chain answers with (0 = 200)
	flags    uint8         // Flag*
	hops     uint8         // 1 + the highest node with timestamps
	chain    uint16        // chain index
	ctypeLen uint8
	_        uint8
	metaLen  uint16
	_        uint16
	ingress  int64 // gateway receive time, mono ns
	deadline int64 // chain deadline, mono ns
	sent     int64 // when the buffer was sent to its node, mono ns

	// Where the buffer is in its chain's graph (graph.go): headed to,
	// running at, or finished at node (phase), which successors a
	// handler chose, the join frames of the fan-outs it is a branch of,
	// and, for a call, whom to return to.
	node   uint8         // graph node (CallNode for a call)
	phase  uint8         // Phase*
	nseg   uint8         // segments of the payload in segs; 0: the buffer's own area
	depth  uint8         // join frames in frames
	kind   uint8         // Kind*
	refBit uint8         // this buffer's bit in its data buffer's held word
	chosen uint16        // successors the handler chose (bit i: next[i]); 0: the graph's default
	ref    uint32        // index+1 of the shared buffer whose payload this one reads (0: its own)
	refGen uint32        // that buffer's generation
	held   atomic.Uint64 // a shared buffer's references: gen<<32 | one bit per reference
	call   CallFrame
	frames [MaxDepth]Frame
	segs   [MaxSegs]Seg
	// A join's inputs (KindJoin, see join.go): input i is the branch of the
	// fan-out's i-th successor, owned through this buffer.
	inputs  [MaxNext]Ref
	width   uint8 // inputs listed (the fan-out's successors)
	of      uint8 // branches the fan-out sent
	arrived uint8 // inputs that arrived before the join ran
	okays   uint8 // inputs that succeeded
	_       [4]byte

	ctype [MaxContentType + 1]byte
	times [MaxHops][2]int64 // per node: start, end (mono ns)
	meta  [MaxMeta]byte
}

// Buffer flags, kept in the header.
const (
	// FlagStop: a step ended the chain early (an error or an explicit status).
	FlagStop uint8 = 1 << iota
	// FlagContentType: a function (or the daemon) chose the content type
	// of the payload; without it the gateway answers with
	// application/octet-stream rather than the request's own type.
	FlagContentType
)

// SetReplyContentType sets the content type a step chose for its output.
func (b *BufHeader) SetReplyContentType(ct string) {
	b.SetContentTypeString(ct)
	b.flags |= FlagContentType
}

// Phases of a buffer at its node (BufHeader.Phase): what the daemon does
// with a buffer it takes back from a dead process depends on it.
const (
	// PhaseQueued: sent to node (or about to be); no handler ran on it
	// there. It can go to another instance of the node's function.
	PhaseQueued uint8 = iota
	// PhaseRunning: a handler runs on it at node. Running it again could
	// repeat its effects: its request is failed (502).
	PhaseRunning
	// PhaseDone: the output of node, on its way to what follows node.
	PhaseDone
)

// Kinds of buffer.
const (
	// KindData: a payload (the default).
	KindData uint8 = iota
	// KindJoin: the buffer a join step runs on: its header lists the
	// join's inputs (join.go); made by the gateway.
	KindJoin
)

// CallNode is the node of a call's buffer: a call runs one function, not a
// node of the chain's graph.
const CallNode = 0xff

// CallFrame says where a call's answer goes: the calling endpoint, and the
// tag that matches it to the waiting call there.
type CallFrame struct {
	Caller uint16 // endpoint id of the caller (0: not a call)
	Callee uint16 // the called function
	Depth  uint8  // calls nested above this one
	_      [3]uint8
	Tag    uint32 // the caller's, returned with the answer
}

// Frame is one fan-out a buffer is a branch of: its output goes to Join
// once the branch ends, as input Slot of Of.
type Frame struct {
	At    int64 // when the fan-out sent the branch (mono ns)
	Join  uint8 // the join node
	_     uint8
	Slot  uint16 // which branch (the fan-out's successor index)
	Of    uint16 // how many branches the fan-out sent
	Width uint16 // the fan-out's successors (Slot < Width)
}

// Seg is one extent of a payload: Count chunks from chunk First of the
// extent region.
type Seg struct {
	First, Count uint32
}

var _ [HeaderSize - unsafe.Sizeof(BufHeader{})]byte // BufHeader fits its slot
var _ [unsafe.Sizeof(BufHeader{}) - HeaderSize]byte
var _ [offCtype - unsafe.Offsetof(BufHeader{}.ctype)]byte // the offsets above are the struct's
var _ [unsafe.Offsetof(BufHeader{}.ctype) - offCtype]byte

// reset clears what a new owner must not inherit from the last one.
func (b *BufHeader) reset() {
	b.length, b.reqID, b.off, b.status, b.flags, b.hops = 0, 0, 0, 0, 0, 0
	b.chain, b.ctypeLen, b.metaLen, b.ingress, b.deadline, b.sent = 0, 0, 0, 0, 0, 0
	b.node, b.phase, b.nseg, b.depth, b.kind, b.refBit, b.chosen = 0, 0, 0, 0, 0, 0, 0
	b.ref, b.refGen, b.call = 0, 0, CallFrame{}
	b.width, b.of, b.arrived, b.okays = 0, 0, 0, 0
}

// Header returns buffer idx's header. idx must be < Buffers.
func (p *Pool) Header(idx uint32) *BufHeader { return &p.bufs[idx] }

// Buffer returns buffer idx's whole payload area (BufferSize bytes).
func (p *Pool) Buffer(idx uint32) []byte {
	off := uint64(idx) * p.r.stride
	end := off + uint64(p.l.BufferSize)
	return p.arena[off:end:end]
}

// holder returns the index of the buffer that holds buffer idx's payload:
// idx itself, or the shared buffer it reads (following at most MaxDepth+1
// links, each checked: the header is shared memory).
func (p *Pool) holder(idx uint32) uint32 {
	for k := 0; k <= MaxDepth; k++ {
		r := p.bufs[idx].ref
		if r == 0 || r > p.l.Buffers {
			break
		}
		idx = r - 1
	}
	return idx
}

// Data returns the payload of buffer idx when it is contiguous (in the
// buffer's own area, or in one extent), else its first piece (see Pieces):
// a slice of the pool, clamped so that a corrupt header cannot reach past
// the payload's area.
func (p *Pool) Data(idx uint32) []byte { return p.Piece(idx, 0) }

// Pieces returns how many contiguous pieces buffer idx's payload has: 1,
// or its number of extents when it has several.
func (p *Pool) Pieces(idx uint32) int {
	b := &p.bufs[p.holder(idx)]
	return max(min(int(b.nseg), MaxSegs), 1)
}

// Piece returns piece i of buffer idx's payload (see Pieces), nil past the
// last.
func (p *Pool) Piece(idx uint32, i int) []byte {
	h := p.holder(idx)
	b := &p.bufs[h]
	off, n := uint64(b.off), uint64(b.length)
	if b.nseg == 0 {
		if i != 0 {
			return nil
		}
		buf := p.Buffer(h)
		off = min(off, uint64(len(buf)))
		n = min(n, uint64(len(buf))-off)
		return buf[off : off+n : off+n]
	}
	for k, s := range b.segsOf() {
		seg := p.segBytes(s)
		if k == 0 {
			off = min(off, uint64(len(seg)))
			seg = seg[off:]
		}
		take := min(n, uint64(len(seg)))
		if k == i {
			return seg[:take:take]
		}
		n -= take
	}
	return nil
}

// Size returns the length of buffer idx's payload.
func (p *Pool) Size(idx uint32) uint64 { return uint64(p.bufs[p.holder(idx)].length) }

// Room returns the area buffer idx's payload may be written in, in place:
// the buffer's own area, or its first extent. It is nil for a buffer that
// reads a shared buffer's payload (that one is read-only to it).
func (p *Pool) Room(idx uint32) []byte {
	b := &p.bufs[idx]
	if b.ref != 0 {
		return nil
	}
	if b.nseg == 0 {
		return p.Buffer(idx)
	}
	return p.segBytes(b.segs[0])
}

// Node returns the graph node the buffer is headed to, runs at, or
// finished at (see Phase); pool.CallNode for a call.
func (b *BufHeader) Node() uint8 { return b.node }

// Phase returns the buffer's phase at its node.
func (b *BufHeader) Phase() uint8 { return b.phase }

// SetPlace records the buffer's node and phase.
func (b *BufHeader) SetPlace(node, phase uint8) { b.node, b.phase = node, phase }

// Chosen returns the successors a handler chose (bit k: the node's k-th).
func (b *BufHeader) Chosen() uint16 { return b.chosen }

// SetChosen records the successors a handler chose.
func (b *BufHeader) SetChosen(m uint16) { b.chosen = m }

// Kind returns the buffer's kind (KindData, KindJoin).
func (b *BufHeader) Kind() uint8 { return b.kind }

// SetKind sets the buffer's kind.
func (b *BufHeader) SetKind(k uint8) { b.kind = k }

// Call returns the buffer's call frame (Caller 0: not a call).
func (b *BufHeader) Call() CallFrame { return b.call }

// SetCall sets the buffer's call frame.
func (b *BufHeader) SetCall(c CallFrame) { b.call = c }

// Depth returns how many fan-outs the buffer is a branch of.
func (b *BufHeader) Depth() int { return min(int(b.depth), MaxDepth) }

// TopFrame returns the innermost fan-out the buffer is a branch of.
func (b *BufHeader) TopFrame() (Frame, bool) {
	d := b.Depth()
	if d == 0 {
		return Frame{}, false
	}
	return b.frames[d-1], true
}

// Frames returns the join frames of the fan-outs the buffer is a branch
// of, outermost first (a view of the header).
func (b *BufHeader) Frames() []Frame { return b.frames[:b.Depth()] }

// PushFrame makes the buffer a branch of one more fan-out. It reports
// false when MaxDepth fan-outs nest already.
func (b *BufHeader) PushFrame(f Frame) bool {
	d := b.Depth()
	if d >= MaxDepth {
		return false
	}
	b.frames[d] = f
	b.depth = uint8(d + 1)
	return true
}

// PopFrame ends the innermost fan-out the buffer is a branch of (its join
// ran).
func (b *BufHeader) PopFrame() {
	if d := b.Depth(); d > 0 {
		b.depth = uint8(d - 1)
	}
}

// ClearFrames makes the buffer a branch of no fan-out (a call's buffer).
func (b *BufHeader) ClearFrames() { b.depth = 0 }

// MergeTimes takes the stamps of nodes src has and b has not (a join's
// list gathers its branches' timings).
func (b *BufHeader) MergeTimes(src *BufHeader) {
	for i := range src.Hops() {
		if b.times[i][0] == 0 && src.times[i][0] != 0 {
			b.times[i] = src.times[i]
		}
	}
	b.hops = max(b.hops, min(src.hops, MaxHops))
}

// Len returns the payload length.
func (b *BufHeader) Len() uint32 { return b.length }

// Off returns the payload offset inside the buffer.
func (b *BufHeader) Off() uint32 { return b.off }

// SetData records where the payload lies in the buffer.
func (b *BufHeader) SetData(off, n uint32) { b.off, b.length = off, n }

// ReqID returns the gateway's request id.
func (b *BufHeader) ReqID() uint64 { return b.reqID }

// SetReqID sets the gateway's request id.
func (b *BufHeader) SetReqID(id uint64) { b.reqID = id }

// Status returns the HTTP status set by a step (0 = not set).
func (b *BufHeader) Status() uint16 { return b.status }

// SetStatus sets the HTTP status to answer with.
func (b *BufHeader) SetStatus(s uint16) { b.status = s }

// Flags returns the buffer flags.
func (b *BufHeader) Flags() uint8 { return b.flags }

// SetFlags sets the buffer flags.
func (b *BufHeader) SetFlags(f uint8) { b.flags = f }

// Chain returns the chain index.
func (b *BufHeader) Chain() uint16 { return b.chain }

// SetChain sets the chain index.
func (b *BufHeader) SetChain(c uint16) { b.chain = c }

// Ingress returns when the gateway received the request (mono ns).
func (b *BufHeader) Ingress() int64 { return b.ingress }

// Deadline returns the chain deadline (mono ns; 0 = none).
func (b *BufHeader) Deadline() int64 { return b.deadline }

// Sent returns when the buffer was sent to its node (mono ns; 0: by the
// gateway, at Ingress).
func (b *BufHeader) Sent() int64 { return b.sent }

// SetSent records when the buffer was sent to its node.
func (b *BufHeader) SetSent(t int64) { b.sent = t }

// SetTimes sets the ingress time and the deadline.
func (b *BufHeader) SetTimes(ingress, deadline int64) { b.ingress, b.deadline = ingress, deadline }

// ContentType returns the content type (a view into shared memory).
func (b *BufHeader) ContentType() []byte {
	n := int(b.ctypeLen)
	if n > MaxContentType {
		n = MaxContentType
	}
	return b.ctype[:n:n]
}

// SetContentType sets the content type, truncated to MaxContentType bytes.
func (b *BufHeader) SetContentType(ct []byte) {
	n := copy(b.ctype[:MaxContentType], ct)
	b.ctypeLen = uint8(n)
}

// SetContentTypeString is SetContentType for a string, without converting.
func (b *BufHeader) SetContentTypeString(ct string) {
	n := copy(b.ctype[:MaxContentType], ct)
	b.ctypeLen = uint8(n)
}

// Hops returns how many hops have timestamps.
func (b *BufHeader) Hops() int { return min(int(b.hops), MaxHops) }

// HopStart records that hop started at t. Hops beyond MaxHops are not timed.
func (b *BufHeader) HopStart(hop int, t int64) {
	if hop < 0 || hop >= MaxHops {
		return
	}
	b.times[hop] = [2]int64{t, 0}
	if int(b.hops) < hop+1 {
		b.hops = uint8(hop + 1)
	}
}

// HopEnd records that hop ended at t.
func (b *BufHeader) HopEnd(hop int, t int64) {
	if hop >= 0 && hop < MaxHops {
		b.times[hop][1] = t
	}
}

// HopTimes returns the start and end of hop (mono ns; 0 when not recorded).
func (b *BufHeader) HopTimes(hop int) (start, end int64) {
	if hop < 0 || hop >= MaxHops {
		return 0, 0
	}
	return b.times[hop][0], b.times[hop][1]
}

// CopyMeta copies request metadata, content type, request id, chain,
// timestamps, deadline and the buffer's place in the graph (node, phase,
// join frames, call frame) from src: a step that writes its output into a
// fresh buffer carries the request's identity over with it. The payload
// (segments, shared data) is not copied.
func (b *BufHeader) CopyMeta(src *BufHeader) {
	b.reqID, b.chain, b.ingress, b.deadline = src.reqID, src.chain, src.ingress, src.deadline
	b.status, b.flags = src.status, src.flags
	b.ctype, b.ctypeLen = src.ctype, src.ctypeLen
	b.hops, b.times = src.hops, src.times
	b.node, b.phase, b.chosen, b.call = src.node, src.phase, src.chosen, src.call
	b.depth, b.frames = min(src.depth, MaxDepth), src.frames
	n := min(int(src.metaLen), MaxMeta)
	copy(b.meta[:n], src.meta[:n])
	b.metaLen = uint16(n)
}

// Request metadata is a byte string in the header, written once by the
// gateway, followed by tagged sections:
//
//	u8 len, method | u16 len, path | u16 len, query | u8 count |
//	count × (u8 len, name | u16 len, value) |
//	sections: (u8 tag | u16 len | len bytes)…
//
// Lengths are little-endian. A reader skips sections whose tag it does not
// know. The sections of this version:
//
//	SectionParams      the route's parameters: u8 count | count × (u8 len, name | u16 len, value)
//	SectionRespHeader  one response header a function set: u8 len, name | u16 len, value
//	                   (one section per header, in the order set)
//	SectionAttributes  the invocation's attributes: u8 count | count × (u8 len, name | u16 len, value);
//	                   several such sections read in order as one list
//
// Layout Version 4 introduced the sections (and FlagContentType); an SDK in
// another language reads them the same way.
//
// The attributes are those of a CloudEvent under their own names (id,
// source, type, specversion, …), and Spry's under names starting with
// "spry." (its activation id, cause, trigger, MQTT topic). The accessors
// decode it all in place and never read past metaLen.

// Metadata section tags.
const (
	SectionParams     = 1
	SectionRespHeader = 2
	SectionAttributes = 3
)

// Meta is a writer for request metadata. Use it in order: Reset, then
// Method, Path and Query once each, then Header for each header to forward.
// Every call reports false when the metadata does not fit; the gateway
// answers such a request with 431.
type Meta struct {
	b     *BufHeader
	n     int
	count int // offset of the header count byte
	// The attributes section being written (its offset; 0: none) and
	// where it ends; sections: one was written (headers are closed).
	attrs, attrEnd int
	sections       bool
}

// WriteMeta starts writing b's metadata.
func (b *BufHeader) WriteMeta() Meta {
	b.metaLen = 0
	return Meta{b: b, count: -1}
}

func (m *Meta) put8(s []byte) bool {
	if len(s) > 0xff || m.n+1+len(s) > MaxMeta {
		return false
	}
	m.b.meta[m.n] = byte(len(s))
	m.n += 1 + copy(m.b.meta[m.n+1:], s)
	m.b.metaLen = uint16(m.n)
	return true
}

func (m *Meta) put16(s []byte) bool {
	if len(s) > 0xffff || m.n+2+len(s) > MaxMeta {
		return false
	}
	binary.LittleEndian.PutUint16(m.b.meta[m.n:], uint16(len(s)))
	m.n += 2 + copy(m.b.meta[m.n+2:], s)
	m.b.metaLen = uint16(m.n)
	return true
}

// Request writes the method, path and query.
func (m *Meta) Request(method, path, query []byte) bool {
	if !m.put8(method) || !m.put16(path) || !m.put16(query) || m.n+1 > MaxMeta {
		return false
	}
	m.count = m.n
	m.b.meta[m.n] = 0
	m.n++
	m.b.metaLen = uint16(m.n)
	return true
}

// Header adds a forwarded request header. Headers come before any
// section (parameters, attributes).
func (m *Meta) Header(name, value []byte) bool {
	if m.count < 0 || m.sections || m.b.meta[m.count] == 0xff {
		return false
	}
	if !m.put8(name) || !m.put16(value) {
		return false
	}
	m.b.meta[m.count]++
	return true
}

// Attr adds an attribute of the invocation (after the headers): to the
// attributes section being written when it is the last one, else in a new
// one.
func (m *Meta) Attr(name, value []byte) bool {
	if m.count < 0 || len(name) == 0 || len(name) > 0xff || len(value) > 0xffff {
		return false
	}
	need := 1 + len(name) + 2 + len(value)
	if m.attrs == 0 || m.attrEnd != m.n || m.b.meta[m.attrs+3] == 0xff {
		if m.n+3+1+need > MaxMeta {
			return false // all or nothing: never half an entry
		}
		m.attrs, m.sections = m.n, true
		m.b.meta[m.n] = SectionAttributes
		m.b.meta[m.n+3] = 0
		m.n += 4
	} else if m.n+need > MaxMeta {
		return false
	}
	m.put8(name)
	m.put16(value)
	m.b.meta[m.attrs+3]++
	binary.LittleEndian.PutUint16(m.b.meta[m.attrs+1:], uint16(m.n-m.attrs-3))
	m.attrEnd = m.n
	m.b.metaLen = uint16(m.n)
	return true
}

// AttrString is Attr for strings, without converting.
func (m *Meta) AttrString(name, value string) bool {
	return m.Attr(unsafe.Slice(unsafe.StringData(name), len(name)), unsafe.Slice(unsafe.StringData(value), len(value)))
}

// metaReader walks the metadata without allocating.
type metaReader struct {
	m   []byte
	off int
}

func (b *BufHeader) metaBytes() []byte {
	return b.meta[:min(int(b.metaLen), MaxMeta)]
}

func (r *metaReader) get8() []byte {
	if r.off+1 > len(r.m) {
		return nil
	}
	n := int(r.m[r.off])
	if r.off+1+n > len(r.m) {
		r.off = len(r.m)
		return nil
	}
	s := r.m[r.off+1 : r.off+1+n : r.off+1+n]
	r.off += 1 + n
	return s
}

func (r *metaReader) get16() []byte {
	if r.off+2 > len(r.m) {
		r.off = len(r.m)
		return nil
	}
	n := int(binary.LittleEndian.Uint16(r.m[r.off:]))
	if r.off+2+n > len(r.m) {
		r.off = len(r.m)
		return nil
	}
	s := r.m[r.off+2 : r.off+2+n : r.off+2+n]
	r.off += 2 + n
	return s
}

// Request returns the request's method, path and raw query.
func (b *BufHeader) Request() (method, path, query []byte) {
	r := metaReader{m: b.metaBytes()}
	method = r.get8()
	path = r.get16()
	query = r.get16()
	return
}

// NumHeaders returns how many forwarded headers the metadata holds.
func (b *BufHeader) NumHeaders() int {
	r := metaReader{m: b.metaBytes()}
	r.get8()
	r.get16()
	r.get16()
	if r.off >= len(r.m) {
		return 0
	}
	return int(r.m[r.off])
}

// HeaderAt returns the i-th forwarded header.
func (b *BufHeader) HeaderAt(i int) (name, value []byte) {
	r := metaReader{m: b.metaBytes()}
	r.get8()
	r.get16()
	r.get16()
	if r.off >= len(r.m) || i < 0 || i >= int(r.m[r.off]) {
		return nil, nil
	}
	r.off++
	for j := 0; ; j++ {
		name, value = r.get8(), r.get16()
		if j == i || r.off >= len(r.m) {
			if j != i {
				return nil, nil
			}
			return name, value
		}
	}
}

// Header returns the value of forwarded header name (ASCII
// case-insensitive), or nil.
func (b *BufHeader) Header(name string) []byte {
	r := metaReader{m: b.metaBytes()}
	r.get8()
	r.get16()
	r.get16()
	if r.off >= len(r.m) {
		return nil
	}
	n := int(r.m[r.off])
	r.off++
	for j := 0; j < n && r.off < len(r.m); j++ {
		k, v := r.get8(), r.get16()
		if EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// eachAttr calls fn with each attribute, in order, until it returns false.
func (b *BufHeader) eachAttr(fn func(name, value []byte) bool) {
	for off := b.sections(); ; {
		tag, body, next, ok := b.nextSection(off)
		if !ok {
			return
		}
		off = next
		if tag != SectionAttributes || len(body) == 0 {
			continue
		}
		r := metaReader{m: body, off: 1}
		for j := 0; j < int(body[0]) && r.off < len(body); j++ {
			if k, v := r.get8(), r.get16(); !fn(k, v) {
				return
			}
		}
	}
}

// AppendAttr adds an attribute to metadata written earlier (by another
// writer: the gateway's admission path writes the request, an adapter adds
// what it learns later), as a section of its own at the end. It reports
// false when it does not fit.
func (b *BufHeader) AppendAttr(name, value []byte) bool {
	r := metaReader{m: b.metaBytes()}
	r.get8()
	r.get16()
	r.get16()
	if r.off >= len(r.m) || len(name) == 0 {
		return false // no request written
	}
	n := len(r.m)
	m := Meta{b: b, n: n, count: 0, sections: true}
	return m.Attr(name, value)
}

// NumAttrs returns how many attributes the metadata holds.
func (b *BufHeader) NumAttrs() int {
	n := 0
	b.eachAttr(func(_, _ []byte) bool { n++; return true })
	return n
}

// AttrAt returns the i-th attribute.
func (b *BufHeader) AttrAt(i int) (name, value []byte) {
	j := 0
	b.eachAttr(func(k, v []byte) bool {
		if j == i {
			name, value = k, v
			return false
		}
		j++
		return true
	})
	return name, value
}

// Attr returns the value of attribute name (exact), or nil.
func (b *BufHeader) Attr(name string) (value []byte) {
	b.eachAttr(func(k, v []byte) bool {
		if string(k) == name {
			value = v
			return false
		}
		return true
	})
	return value
}

// EqualFold reports whether b and s are equal under ASCII case folding, as
// HTTP header names and tokens compare; it allocates nothing.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Params writes the route's parameters (names[i] = values[i], for i < n) as
// a SectionParams section. It reports false when they do not fit.
func (m *Meta) Params(names *[8]string, values *[8][]byte, n int) bool {
	if m.count < 0 || n == 0 {
		return m.count >= 0
	}
	start := m.n
	if start+3+1 > MaxMeta {
		return false
	}
	m.sections = true
	m.b.meta[start] = SectionParams
	m.n += 3
	m.b.meta[m.n] = byte(n)
	m.n++
	for i := range n {
		if !m.put8s(names[i]) || !m.put16(values[i]) {
			m.n = start
			m.b.metaLen = uint16(start)
			return false
		}
	}
	binary.LittleEndian.PutUint16(m.b.meta[start+1:], uint16(m.n-start-3))
	m.b.metaLen = uint16(m.n)
	return true
}

func (m *Meta) put8s(s string) bool {
	if len(s) > 0xff || m.n+1+len(s) > MaxMeta {
		return false
	}
	m.b.meta[m.n] = byte(len(s))
	m.n += 1 + copy(m.b.meta[m.n+1:], s)
	return true
}

// sections returns the offset of the first section: past the request part.
func (b *BufHeader) sections() int {
	r := metaReader{m: b.metaBytes()}
	r.get8()
	r.get16()
	r.get16()
	if r.off >= len(r.m) {
		return len(r.m)
	}
	n := int(r.m[r.off])
	r.off++
	for j := 0; j < n && r.off < len(r.m); j++ {
		r.get8()
		r.get16()
	}
	return r.off
}

// nextSection reads the section at off: its tag, body, and the offset of
// the next one. ok is false at the end (or at a malformed section).
func (b *BufHeader) nextSection(off int) (tag byte, body []byte, next int, ok bool) {
	m := b.metaBytes()
	if off+3 > len(m) {
		return 0, nil, len(m), false
	}
	n := int(binary.LittleEndian.Uint16(m[off+1:]))
	if off+3+n > len(m) {
		return 0, nil, len(m), false
	}
	return m[off], m[off+3 : off+3+n : off+3+n], off + 3 + n, true
}

// Param returns the value of route parameter name (a view into the
// header), or nil.
func (b *BufHeader) Param(name string) []byte {
	for off := b.sections(); ; {
		tag, body, next, ok := b.nextSection(off)
		if !ok {
			return nil
		}
		off = next
		if tag != SectionParams || len(body) == 0 {
			continue
		}
		r := metaReader{m: body, off: 1}
		for j := 0; j < int(body[0]) && r.off < len(body); j++ {
			k, v := r.get8(), r.get16()
			if string(k) == name {
				return v
			}
		}
	}
}

// NextRespHeader returns the first response header a function set at or
// after position pos (0 to start), and the position after it; ok is false
// when there is none. The slices are views into the header:
//
//	for name, value, pos, ok := h.NextRespHeader(0); ok; name, value, pos, ok = h.NextRespHeader(pos) {…}
func (b *BufHeader) NextRespHeader(pos int) (name, value []byte, next int, ok bool) {
	off := pos
	if off == 0 {
		off = b.sections()
	}
	for {
		tag, body, nx, ok := b.nextSection(off)
		if !ok {
			return nil, nil, nx, false
		}
		off = nx
		if tag != SectionRespHeader {
			continue
		}
		r := metaReader{m: body}
		if k, v := r.get8(), r.get16(); k != nil {
			return k, v, off, true
		}
	}
}

// ErrMetaFull is returned when a response header does not fit the
// metadata area (MaxMeta bytes, shared with the request's metadata).
var ErrMetaFull = errors.New("pool: buffer metadata full")

// SetRespHeader sets response header name to value, replacing the values
// it had (ASCII case-insensitive names); AddRespHeader adds one more
// value. The caller checks that name and value are valid header text.
func (b *BufHeader) SetRespHeader(name, value string) error {
	b.DelRespHeader(name)
	return b.AddRespHeader(name, value)
}

// AddRespHeader appends a response header (see SetRespHeader).
func (b *BufHeader) AddRespHeader(name, value string) error {
	n := int(min(b.metaLen, MaxMeta))
	need := 3 + 1 + len(name) + 2 + len(value)
	if len(name) > 0xff || n+need > MaxMeta {
		return ErrMetaFull
	}
	m := b.meta[:]
	m[n] = SectionRespHeader
	binary.LittleEndian.PutUint16(m[n+1:], uint16(need-3))
	m[n+3] = byte(len(name))
	copy(m[n+4:], name)
	binary.LittleEndian.PutUint16(m[n+4+len(name):], uint16(len(value)))
	copy(m[n+6+len(name):], value)
	b.metaLen = uint16(n + need)
	return nil
}

// DelRespHeader removes every value of response header name.
func (b *BufHeader) DelRespHeader(name string) {
	for off := b.sections(); ; {
		tag, body, next, ok := b.nextSection(off)
		if !ok {
			return
		}
		if tag == SectionRespHeader {
			r := metaReader{m: body}
			if k := r.get8(); EqualFold(k, name) {
				n := int(min(b.metaLen, MaxMeta))
				copy(b.meta[off:], b.meta[next:n])
				b.metaLen = uint16(n - (next - off))
				continue // the next section is at off now
			}
		}
		off = next
	}
}
