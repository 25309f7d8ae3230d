package peer

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/spry-dev/spry/internal/pool"
)

// The wire. A link is one TCP connection from the node that dials it (its
// requests go out on it, their replies come back) to the node that
// accepted it. After the handshake (handshake.go) both sides write frames:
// a fixed 32-byte head, little-endian, then variable parts in the order
// listed.
//
//	off size  request (type 1)              reply (type 2)
//	0   1     type                          type
//	1   1     hop: the step to start at     reply flags (replyRefused)
//	2   2     metaLen                       metaLen
//	4   4     bodyLen                       bodyLen
//	8   8     tag (the sender's; echoed)    tag
//	16  8     ns left before the deadline   0
//	24  1     ctypeLen                      ctypeLen
//	25  1     buffer flags (pool.Flag*)     buffer flags
//	26  1     hops with times               0
//	27  1     appLen                        0
//	28  1     chainLen                      0
//	29  1     fnLen                         0
//	30  2     status (0: none set)          status
//
// then, for a request: app, chain, function (the step's, as a check that
// both nodes run the same spec), content type, metadata (pool.BufHeader's,
// as it is laid out: pool.BufHeader.RawMeta), the hops' times (start, end as
// nanoseconds relative to the moment the frame was written; timeNone for
// none), the body. For a reply: content type, metadata, body.
//
// A ping (type 3) is answered by a pong (type 4) with its tag; neither has
// more than the head. A load report (type 5), sent by the accepting side
// now and then, has a body of: per app, u8 nameLen | name | u16 count |
// count × (u32 waiting | u16 ready | u16 0), the load of each function
// (requests queued at and running in its ready instances, and how many
// are ready), in the app's function order.
const (
	frameRequest = 1
	frameReply   = 2
	framePing    = 3
	framePong    = 4
	frameLoad    = 5
)

// headSize is the size of a frame's fixed head.
const headSize = 32

// replyRefused marks a reply by which the receiving node refused a request
// before any step of it ran there (its admission said no, or it does not
// serve the chain): the sender may try another node.
const replyRefused = 1

// timeNone stands for a time that was not recorded.
const timeNone = math.MinInt64

// maxExtra bounds a request's variable parts before its body: three names,
// a content type, the metadata and the hops' times.
const maxExtra = 3*255 + pool.MaxContentType + pool.MaxMeta + pool.MaxHops*16

// maxLoad bounds a load report's body.
const maxLoad = 1 << 20

// head is a frame's fixed part.
type head struct {
	typ      uint8
	hop      uint8 // request: the step to start at; reply: reply flags
	metaLen  uint16
	bodyLen  uint32
	tag      uint64
	left     int64 // request: ns left before the deadline
	ctypeLen uint8
	flags    uint8 // pool.Flag* of the buffer
	times    uint8 // request: hops with times
	appLen   uint8
	chainLen uint8
	fnLen    uint8
	status   uint16
}

func (h *head) put(b []byte) {
	_ = b[headSize-1]
	b[0], b[1] = h.typ, h.hop
	binary.LittleEndian.PutUint16(b[2:], h.metaLen)
	binary.LittleEndian.PutUint32(b[4:], h.bodyLen)
	binary.LittleEndian.PutUint64(b[8:], h.tag)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.left))
	b[24], b[25], b[26], b[27], b[28], b[29] = h.ctypeLen, h.flags, h.times, h.appLen, h.chainLen, h.fnLen
	binary.LittleEndian.PutUint16(b[30:], h.status)
}

// errFrame is a frame no Spry node writes: the link is closed.
var errFrame = errors.New("peer: malformed frame")

func (h *head) get(b []byte) error {
	_ = b[headSize-1]
	*h = head{
		typ: b[0], hop: b[1],
		metaLen:  binary.LittleEndian.Uint16(b[2:]),
		bodyLen:  binary.LittleEndian.Uint32(b[4:]),
		tag:      binary.LittleEndian.Uint64(b[8:]),
		left:     int64(binary.LittleEndian.Uint64(b[16:])),
		ctypeLen: b[24], flags: b[25], times: b[26], appLen: b[27], chainLen: b[28], fnLen: b[29],
		status: binary.LittleEndian.Uint16(b[30:]),
	}
	switch {
	case h.typ < frameRequest || h.typ > frameLoad:
		return errFrame
	case int(h.metaLen) > pool.MaxMeta || int(h.ctypeLen) > pool.MaxContentType || int(h.times) > pool.MaxHops:
		return errFrame
	case h.typ == frameLoad && h.bodyLen > maxLoad:
		return errFrame
	case (h.typ == framePing || h.typ == framePong) && (h.bodyLen != 0 || h.metaLen != 0 || h.ctypeLen != 0):
		return errFrame
	case h.typ != frameRequest && (h.appLen|h.chainLen|h.fnLen|h.times) != 0:
		return errFrame
	}
	return nil
}

// extra returns the length of a frame's variable parts before its body.
func (h *head) extra() int {
	return int(h.appLen) + int(h.chainLen) + int(h.fnLen) + int(h.ctypeLen) + int(h.metaLen) + 16*int(h.times)
}

// putTimes writes hop times relative to now (timeNone for none).
func putTimes(b []byte, hdr *pool.BufHeader, n int, now int64) []byte {
	for hop := range n {
		s, e := hdr.HopTimes(hop)
		b = binary.LittleEndian.AppendUint64(b, uint64(relTime(s, now)))
		b = binary.LittleEndian.AppendUint64(b, uint64(relTime(e, now)))
	}
	return b
}

func relTime(t, now int64) int64 {
	if t == 0 {
		return timeNone
	}
	return t - now
}

// setTimes writes hop times read by putTimes into hdr, rebased on now.
func setTimes(hdr *pool.BufHeader, b []byte, now int64) {
	for hop := 0; len(b) >= 16; hop++ {
		s, e := int64(binary.LittleEndian.Uint64(b)), int64(binary.LittleEndian.Uint64(b[8:]))
		b = b[16:]
		if s == timeNone {
			continue
		}
		hdr.HopStart(hop, s+now)
		if e != timeNone {
			hdr.HopEnd(hop, e+now)
		}
	}
}

// The graph part. A request that is not a plain step of a chain's line —
// a branch of a fan-out (or a step inside one), a join, a call — carries
// its place in its chain's graph: its head's buffer-flags byte has
// wireGraph, and after the hop times comes
//
//	u8 depth | u8 width | u8 call | u8 callDepth | u8 of | u8 arrived | u8 ok | u8 0
//	depth × (i64 fan-out time, relative like the hop times | u8 join | u8 0 |
//	         u16 slot | u16 of | u16 width)        the join frames, outermost first
//	width × (u8 arrived | u8 ctypeLen | u16 status | u32 len)   a join's inputs
//	the inputs' content types, in order
//
// depth: the fan-outs the request is a branch of; width: a join's inputs
// (0: not a join; of, arrived, ok are its counts); call: 1 for a call
// (req.Call) of the frame's function, callDepth calls deep. A join's
// inputs' bodies follow the request's own body, in order: the head's
// bodyLen counts them all.
const wireGraph = 0x80

// graphFixed is the fixed start of the graph part.
const graphFixed = 8

// maxGraph bounds the graph part.
const maxGraph = graphFixed + pool.MaxDepth*16 + pool.MaxNext*(8+pool.MaxContentType)

// wireInput is one input of a join, as the graph part lists it.
type wireInput struct {
	arrived bool
	ctLen   uint8
	status  uint16
	n       uint32
	ctype   []byte
}

// graphPart is a request's graph part, read.
type graphPart struct {
	depth, width int
	call         bool
	callDepth    uint8
	info         pool.JoinInfo
	frames       [pool.MaxDepth]pool.Frame
	in           [pool.MaxNext]wireInput
	inLen        uint64 // the inputs' bodies, together
}

// putGraph writes the graph part of the request in buffer buf (at step
// hop, pool.CallNode for a call) into f.graph: its frames, a call's depth,
// a join's inputs. It adds the inputs' bodies to what f writes after the
// request's own (addBody) and returns their length, together: each
// input's presence, length and content type are read once, for its entry
// and its body alike. now is the frame's time.
func (f *frame) putGraph(p *pool.Pool, buf uint32, hop uint8, now int64) int {
	h := p.Header(buf)
	depth, call := h.Depth(), hop == pool.CallNode
	if call {
		depth = 0 // a call's answer goes to its caller, whatever branch that is in
	}
	info := p.Inputs(buf) // Width 0: not a join
	b := append(f.graph[:0], uint8(depth), uint8(info.Width), 0, h.Call().Depth,
		uint8(min(info.Of, 255)), uint8(min(info.Arrived, 255)), uint8(min(info.OK, 255)), 0)
	if call {
		b[len(b)-graphFixed+2] = 1
	}
	for _, fr := range h.Frames()[:depth] { // outermost first
		b = binary.LittleEndian.AppendUint64(b, uint64(relTime(fr.At, now)))
		b = append(b, fr.Join, 0)
		b = binary.LittleEndian.AppendUint16(b, fr.Slot)
		b = binary.LittleEndian.AppendUint16(b, fr.Of)
		b = binary.LittleEndian.AppendUint16(b, fr.Width)
	}
	var types [pool.MaxNext][]byte
	n := 0
	for i := range info.Width {
		in, ok := p.Input(buf, i)
		if !ok {
			b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
			continue
		}
		ih := p.Header(in)
		types[i] = ih.ContentType()
		m := f.addBody(p, in)
		n += m
		b = append(b, 1, uint8(len(types[i])))
		b = binary.LittleEndian.AppendUint16(b, ih.Status())
		b = binary.LittleEndian.AppendUint32(b, uint32(m))
	}
	for _, ct := range types[:info.Width] {
		b = append(b, ct...)
	}
	f.graph = b
	return n
}

// payloadLen returns the length of buffer buf's payload, all its pieces.
func payloadLen(p *pool.Pool, buf uint32) int {
	n := 0
	for i := range p.Pieces(buf) {
		n += len(p.Piece(buf, i))
	}
	return n
}

// getFixed reads the graph part's fixed start into g and returns the
// length of what follows up to the content types (whose length get
// learns from the inputs' table).
func (g *graphPart) getFixed(b []byte) (int, error) {
	*g = graphPart{depth: int(b[0]), width: int(b[1]), call: b[2] != 0, callDepth: b[3]}
	g.info = pool.JoinInfo{Width: g.width, Of: int(b[4]), Arrived: int(b[5]), OK: int(b[6])}
	if g.depth > pool.MaxDepth || g.width > pool.MaxNext || b[2] > 1 || (g.call && (g.depth|g.width) != 0) {
		return 0, errFrame
	}
	return g.depth*16 + g.width*8, nil
}

// get reads the frames and the inputs' table (b), rebasing the fan-out
// times on now, and returns the length of the content types that follow.
func (g *graphPart) get(b []byte, now int64) int {
	for i := range g.depth {
		x := b[16*i:]
		at := int64(binary.LittleEndian.Uint64(x))
		if at == timeNone {
			at = 0
		} else {
			at += now
		}
		g.frames[i] = pool.Frame{At: at, Join: x[8], Slot: binary.LittleEndian.Uint16(x[10:]),
			Of: binary.LittleEndian.Uint16(x[12:]), Width: binary.LittleEndian.Uint16(x[14:])}
	}
	b = b[16*g.depth:]
	ct := 0
	for i := range g.width {
		x := b[8*i:]
		in := wireInput{arrived: x[0] != 0, status: binary.LittleEndian.Uint16(x[2:]), n: binary.LittleEndian.Uint32(x[4:])}
		if in.arrived {
			in.ctLen = min(x[1], pool.MaxContentType)
			ct += int(in.ctLen)
			g.inLen += uint64(in.n)
		}
		g.in[i] = in
	}
	return ct
}

// setTypes points the inputs' content types into b (read after the table).
func (g *graphPart) setTypes(b []byte) {
	for i := range g.width {
		in := &g.in[i]
		in.ctype, b = b[:in.ctLen], b[in.ctLen:]
	}
}
