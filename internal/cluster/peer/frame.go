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
