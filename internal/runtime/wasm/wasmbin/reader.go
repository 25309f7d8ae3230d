// Package wasmbin reads and rewrites WebAssembly binaries: just enough of
// the format for the sandbox host to prepare a function's module before
// wazero compiles it (see Prepare). It never trusts its input: every
// length is checked against what is left, and anything it does not know
// is an error rather than a guess.
package wasmbin

import (
	"errors"
	"fmt"
)

// ErrFormat wraps every problem with a module's encoding.
var ErrFormat = errors.New("wasm: malformed module")

// reader walks a byte slice, failing (sticky) on the first overrun.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: at byte %d: %s", ErrFormat, r.off, fmt.Sprintf(format, args...))
	}
	r.off = len(r.b)
}

func (r *reader) done() bool { return r.err != nil || r.off >= len(r.b) }

func (r *reader) byte() byte {
	if r.off >= len(r.b) {
		r.fail("unexpected end")
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) bytes(n uint32) []byte {
	if uint64(n) > uint64(len(r.b)-r.off) {
		r.fail("length %d past the end", n)
		return nil
	}
	s := r.b[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return s
}

// u32 reads an unsigned LEB128 of at most 32 bits.
func (r *reader) u32() uint32 {
	var v uint32
	for shift := uint(0); ; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift == 28 && c&0x70 != 0 {
			r.fail("u32 out of range")
			return 0
		}
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			return v
		}
		if shift == 28 {
			r.fail("u32 too long")
			return 0
		}
	}
}

// sleb skips a signed LEB128 of at most bits bits and returns its value
// (truncated to 64 bits).
func (r *reader) sleb(bits uint) int64 {
	var v int64
	var shift uint
	max := (bits + 6) / 7
	for i := uint(0); ; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
		if i+1 >= max {
			r.fail("signed integer too long")
			return 0
		}
	}
}

func (r *reader) name() string { return string(r.bytes(r.u32())) }

// limits reads table or memory limits: flags, min, max when flagged.
func (r *reader) limits() (flags byte, min, max uint32, hasMax bool) {
	flags = r.byte()
	if flags&^0x03 != 0 {
		// 0x04 is memory64, 0x08 custom page sizes: not supported.
		r.fail("unsupported limits flags %#x", flags)
		return
	}
	min = r.u32()
	if flags&1 != 0 {
		max, hasMax = r.u32(), true
	}
	return
}

// valType reads a value type.
func (r *reader) valType() byte {
	t := r.byte()
	switch t {
	case I32, I64, F32, F64, V128, FuncRef, ExternRef:
		return t
	}
	r.fail("unsupported value type %#x", t)
	return 0
}

// constExpr reads a constant expression up to and including its end and
// returns its bytes.
func (r *reader) constExpr() []byte {
	start := r.off
	for !r.done() {
		op := r.byte()
		switch op {
		case opEnd:
			return r.b[start:r.off:r.off]
		case opI32Const:
			r.sleb(32)
		case opI64Const:
			r.sleb(64)
		case opF32Const:
			r.bytes(4)
		case opF64Const:
			r.bytes(8)
		case opGlobalGet, opRefFunc:
			r.u32()
		case opRefNull:
			r.sleb(33)
		case opI32Add, opI32Sub, opI32Mul, opI64Add, opI64Sub, opI64Mul: // extended-const
		case opPrefixSIMD:
			if r.u32() != 12 { // v128.const
				r.fail("unsupported instruction in a constant expression")
				return nil
			}
			r.bytes(16)
		default:
			r.fail("unsupported instruction %#x in a constant expression", op)
			return nil
		}
	}
	r.fail("constant expression without end")
	return nil
}

// LEB128 encoders.

func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func appendS64(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}

func appendSection(b []byte, id byte, content []byte) []byte {
	b = append(b, id)
	b = appendU32(b, uint32(len(content)))
	return append(b, content...)
}
