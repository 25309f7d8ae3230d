package baseline

import (
	"errors"
	"math"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/spry-dev/spry/internal/fl"
)

// The serverful FL baseline's gRPC service, spry.fl.Aggregator, as Flower's
// and Flame's servers speak it: protobuf messages (encoded with protowire,
// no generated code), the model's weights a bytes field:
//
//	rpc Create(Json) returns (Json)        // the job, as fl.Job JSON; its fl.Status
//	rpc Update(Update) returns (Json)      // an fl.Ack
//	rpc Model(ModelRequest) returns (Model)
//	rpc Status(Json) returns (Json)        // {"id": job} → fl.Status
//	rpc Delete(Json) returns (Json)
//	message Json { bytes json = 1; }
//	message Update { string job = 1; uint32 round = 2; string client = 3; double samples = 4; bytes weights = 5; }
//	message ModelRequest { string job = 1; uint32 round = 2; }
//	message Model { uint32 round = 1; bytes weights = 2; }
const (
	FLService = "spry.fl.Aggregator"
)

// FLJSON is a Json message.
type FLJSON struct{ JSON []byte }

// FLUpdate is an Update message. Decoded on the server, Weights is a view
// of a pooled buffer, 4-byte aligned so the fold reads it in place;
// Release gives the buffer back.
type FLUpdate struct {
	Job     string
	Round   uint32
	Client  string
	Samples float64
	Weights []byte
	buf     *[]float32
}

// Release gives the update's buffer back to the pool (server side).
func (u *FLUpdate) Release() {
	if u.buf != nil {
		updateBufs.Put(u.buf)
		u.buf = nil
	}
}

// FLModelRequest is a ModelRequest message; without Has (the round field
// absent) it asks for the latest model.
type FLModelRequest struct {
	Job   string
	Round uint32
	Has   bool
}

// FLModel is a Model message. On the client, Into (when set) receives the
// weights (copied); Weights is then left empty.
type FLModel struct {
	Round   uint32
	Weights []byte
	Into    []byte
	N       int // bytes of weights received
}

// updateBufs holds the buffers updates are received into: each update is
// 10s to 100s of MB, and allocating one per message would have the
// garbage collector scan and free them all (sync.Pool of pointers, so
// Put does not allocate).
var updateBufs sync.Pool

// FLCodec is the service's codec (gRPC CodecV2): encoding sends the
// weights as their own buffer, with no copy; decoding an Update copies the
// message once, out of gRPC's frame buffers, into a pooled buffer placed
// so that the weights start 4-byte aligned.
type FLCodec struct{}

// Name is the content subtype ("proto": these are protobuf messages).
func (FLCodec) Name() string { return "proto" }

var errFLMessage = errors.New("bench: malformed spry.fl message")

// Marshal encodes a message; a bytes field of weights is not copied.
func (FLCodec) Marshal(v any) (mem.BufferSlice, error) {
	var head []byte
	var tail []byte
	switch m := v.(type) {
	case *FLJSON:
		head = protowire.AppendTag(head, 1, protowire.BytesType)
		head = protowire.AppendVarint(head, uint64(len(m.JSON)))
		tail = m.JSON
	case *FLUpdate:
		head = protowire.AppendTag(head, 1, protowire.BytesType)
		head = protowire.AppendString(head, m.Job)
		head = protowire.AppendTag(head, 2, protowire.VarintType)
		head = protowire.AppendVarint(head, uint64(m.Round))
		head = protowire.AppendTag(head, 3, protowire.BytesType)
		head = protowire.AppendString(head, m.Client)
		head = protowire.AppendTag(head, 4, protowire.Fixed64Type)
		head = protowire.AppendFixed64(head, math.Float64bits(m.Samples))
		head = protowire.AppendTag(head, 5, protowire.BytesType)
		head = protowire.AppendVarint(head, uint64(len(m.Weights)))
		tail = m.Weights
	case *FLModelRequest:
		head = protowire.AppendTag(head, 1, protowire.BytesType)
		head = protowire.AppendString(head, m.Job)
		if m.Has {
			head = protowire.AppendTag(head, 2, protowire.VarintType)
			head = protowire.AppendVarint(head, uint64(m.Round))
		}
	case *FLModel:
		head = protowire.AppendTag(head, 1, protowire.VarintType)
		head = protowire.AppendVarint(head, uint64(m.Round))
		head = protowire.AppendTag(head, 2, protowire.BytesType)
		head = protowire.AppendVarint(head, uint64(len(m.Weights)))
		tail = m.Weights
	default:
		return nil, errFLMessage
	}
	out := mem.BufferSlice{mem.SliceBuffer(head)}
	if len(tail) > 0 {
		out = append(out, mem.SliceBuffer(tail))
	}
	return out, nil
}

// Unmarshal decodes a message.
func (FLCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *FLUpdate:
		return m.decode(data)
	case *FLModel:
		return m.decode(data)
	}
	b := data.Materialize()
	switch m := v.(type) {
	case *FLJSON:
		return eachField(b, func(num protowire.Number, _ uint64, f []byte) {
			if num == 1 {
				m.JSON = append([]byte(nil), f...)
			}
		})
	case *FLModelRequest:
		return eachField(b, func(num protowire.Number, x uint64, f []byte) {
			switch num {
			case 1:
				m.Job = string(f)
			case 2:
				m.Round, m.Has = uint32(x), true
			}
		})
	}
	return errFLMessage
}

// eachField calls f for each field of a message: varints and fixed64s as
// x, bytes as b.
func eachField(b []byte, f func(num protowire.Number, x uint64, b []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errFLMessage
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errFLMessage
			}
			f(num, x, nil)
			b = b[n:]
		case protowire.Fixed64Type:
			x, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return errFLMessage
			}
			f(num, x, nil)
			b = b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errFLMessage
			}
			f(num, 0, v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errFLMessage
			}
			b = b[n:]
		}
	}
	return nil
}

// decode reads an Update: the message is copied once into a pooled
// buffer, at the offset that puts the weights on a 4-byte boundary.
func (u *FLUpdate) decode(data mem.BufferSlice) error {
	total := data.Len()
	// Where do the weights start? Parse the head from the first bytes.
	var head [512]byte
	h := head[:0]
	for _, b := range data {
		h = append(h, b.ReadOnlyData()[:min(b.Len(), cap(head)-len(h))]...)
		if len(h) == cap(head) {
			break
		}
	}
	at := 0 // the weights' offset in the message (0: not found in the head)
	rest := h
	for len(rest) > 0 {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			break
		}
		if num == 5 && typ == protowire.BytesType {
			_, k := protowire.ConsumeVarint(rest[n:])
			if k > 0 {
				at = len(h) - len(rest) + n + k
			}
			break
		}
		k := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if k < 0 {
			break
		}
		rest = rest[n+k:]
	}
	pad := (4 - at%4) % 4
	need := (total + pad + 3) / 4
	bp, _ := updateBufs.Get().(*[]float32)
	if bp == nil || cap(*bp) < need {
		b := make([]float32, need)
		bp = &b
	}
	buf := fl.Bytes((*bp)[:need])
	off := pad
	for _, b := range data {
		off += copy(buf[off:], b.ReadOnlyData())
	}
	u.buf = bp
	return eachField(buf[pad:pad+total], func(num protowire.Number, x uint64, f []byte) {
		switch num {
		case 1:
			u.Job = string(f)
		case 2:
			u.Round = uint32(x)
		case 3:
			u.Client = string(f)
		case 4:
			u.Samples = math.Float64frombits(x)
		case 5:
			u.Weights = f
		}
	})
}

// decode reads a Model as it lies in gRPC's buffers: the round from the
// head, then the weights, copied into Into when set (else counted only).
func (m *FLModel) decode(data mem.BufferSlice) error {
	var head [32]byte
	h := head[:0]
	for _, b := range data {
		h = append(h, b.ReadOnlyData()[:min(b.Len(), cap(head)-len(h))]...)
		if len(h) == cap(head) {
			break
		}
	}
	skip := -1 // bytes before the weights
	wlen := 0
	rest := h
	for len(rest) > 0 && skip < 0 {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return errFLMessage
		}
		switch {
		case num == 1 && typ == protowire.VarintType:
			x, k := protowire.ConsumeVarint(rest[n:])
			if k < 0 {
				return errFLMessage
			}
			m.Round = uint32(x)
			rest = rest[n+k:]
		case num == 2 && typ == protowire.BytesType:
			x, k := protowire.ConsumeVarint(rest[n:])
			if k < 0 {
				return errFLMessage
			}
			skip, wlen = len(h)-len(rest)+n+k, int(x)
		default:
			return errFLMessage
		}
	}
	if skip < 0 {
		return nil // no weights
	}
	if skip+wlen != data.Len() {
		return errFLMessage
	}
	m.N = wlen
	if m.Into == nil {
		return nil
	}
	off := 0
	for _, b := range data {
		d := b.ReadOnlyData()
		if skip >= len(d) {
			skip -= len(d)
			continue
		}
		off += copy(m.Into[off:], d[skip:])
		skip = 0
	}
	return nil
}
