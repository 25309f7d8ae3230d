// Package desc defines the 16-byte descriptor that Spry instances pass each other
// instead of payloads.
//
// A descriptor names a buffer in the app's shared-memory pool and where it goes
// next. Its wire layout is fixed, little-endian, and read by the eBPF SK_MSG
// program as well as by Go code, so the offsets below are part of Spry's
// contract:
//
//	offset size field
//	0      2    Dst    destination instance id (node-wide)
//	2      2    Src    sending instance id
//	4      4    Buf    buffer index in the app's pool
//	8      4    Gen    buffer generation the sender saw
//	12     2    Chain  chain index in the app's routing table
//	14     1    Hop    step of the chain the destination is to run
//	15     1    Flags  see Flag*
//
// Encoding and decoding allocate nothing.
package desc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Size is the encoded length of a descriptor in bytes.
const Size = 16

// Byte offsets of the fields in the encoded form. The eBPF program in
// internal/bpf reads Dst at OffDst.
const (
	OffDst   = 0
	OffSrc   = 2
	OffBuf   = 4
	OffGen   = 8
	OffChain = 12
	OffHop   = 14
	OffFlags = 15
)

// Flags carried in a descriptor.
const (
	// FlagReply marks a descriptor on its way back to the gateway: the chain
	// finished, or stopped early with the status set in the buffer header.
	FlagReply uint8 = 1 << iota
	// FlagError marks a reply whose buffer holds an error message, not output.
	FlagError
	// FlagControl marks a control message between an instance and the daemon
	// (Buf then holds a Ctl* code, not a buffer index).
	FlagControl
	// FlagJoin marks an input of a join, on its way to the gateway, which
	// collects a join's inputs (Hop is the join's node).
	FlagJoin
	// FlagCall marks a call (Hop is pool.CallNode): the receiver runs its
	// handler and returns the output to the caller named in the buffer.
	FlagCall
	// FlagReturn marks a call's answer, on its way to the caller.
	FlagReturn
	// FlagRoute marks a step's output handed to the gateway for it to route
	// on (an SDK that leaves graph routing to the gateway).
	FlagRoute
)

// Control codes, carried in Buf of a descriptor with FlagControl.
const (
	// CtlReady: the instance has mapped its pool and is about to receive.
	CtlReady uint32 = 1
	// CtlStop: asks a receive loop to return (sent by an endpoint to itself).
	CtlStop uint32 = 2
	// CtlNoInstance: the sender found no ready instance of the function
	// whose index is in Chain (sent to the app's gateway, which tells the
	// daemon: a cold start is due).
	CtlNoInstance uint32 = 3
	// CtlWake: wakes a receive loop (sent by an endpoint to itself: a
	// handler waiting for a call on the receive thread, at its deadline).
	CtlWake uint32 = 4
	// CtlLook: the sender changed what it asks of the control plane in its
	// stats slot (pool.SlotStats Keeps, Demand) between requests: the
	// daemon looks now rather than at its next tick, which may be far off
	// while the app is idle (sent to the gateway).
	CtlLook uint32 = 5
)

// None is the zero instance id: no instance has it.
const None uint16 = 0

// Desc is a decoded descriptor.
type Desc struct {
	Dst   uint16
	Src   uint16
	Buf   uint32
	Gen   uint32
	Chain uint16
	Hop   uint8
	Flags uint8
}

// ErrShort is returned by Decode for input shorter than Size.
var ErrShort = errors.New("desc: short descriptor")

// Encode writes d into b, which must be at least Size bytes long.
func (d Desc) Encode(b []byte) {
	_ = b[Size-1]
	binary.LittleEndian.PutUint16(b[OffDst:], d.Dst)
	binary.LittleEndian.PutUint16(b[OffSrc:], d.Src)
	binary.LittleEndian.PutUint32(b[OffBuf:], d.Buf)
	binary.LittleEndian.PutUint32(b[OffGen:], d.Gen)
	binary.LittleEndian.PutUint16(b[OffChain:], d.Chain)
	b[OffHop] = d.Hop
	b[OffFlags] = d.Flags
}

// Array returns d encoded in a fixed-size array (no allocation).
func (d Desc) Array() (a [Size]byte) {
	d.Encode(a[:])
	return a
}

// Decode reads a descriptor from the first Size bytes of b.
func Decode(b []byte) (Desc, error) {
	if len(b) < Size {
		return Desc{}, ErrShort
	}
	return Desc{
		Dst:   binary.LittleEndian.Uint16(b[OffDst:]),
		Src:   binary.LittleEndian.Uint16(b[OffSrc:]),
		Buf:   binary.LittleEndian.Uint32(b[OffBuf:]),
		Gen:   binary.LittleEndian.Uint32(b[OffGen:]),
		Chain: binary.LittleEndian.Uint16(b[OffChain:]),
		Hop:   b[OffHop],
		Flags: b[OffFlags],
	}, nil
}

// Is reports whether all bits of f are set.
func (d Desc) Is(f uint8) bool { return d.Flags&f == f }

func (d Desc) String() string {
	return fmt.Sprintf("desc{dst=%d src=%d buf=%d gen=%d chain=%d hop=%d flags=%#x}",
		d.Dst, d.Src, d.Buf, d.Gen, d.Chain, d.Hop, d.Flags)
}
