package fl

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// The vector kernels. An update is read where it lies (Floats views the
// pool's bytes as float32s: no conversion, no copy) and folded into an
// accumulator in one pass, acc[i] += w·u[i], each result checked before it
// is stored. On amd64 with AVX2 and FMA the pass runs 32 floats an
// iteration (kernel_amd64.s), at the speed memory delivers the bytes
// (BenchmarkFold against BenchmarkCopy of the same size); elsewhere, and
// for the tail, Go loops do the same.

// Floats views b as little-endian float32s, without copying: the bytes of
// an update where the gateway wrote them. It reports false when b cannot
// be viewed so (its length is not a multiple of 4, or it does not start on
// a 4-byte boundary); FoldBytes handles those.
func Floats(b []byte) ([]float32, bool) {
	if len(b)%4 != 0 || (len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%4 != 0) {
		return nil, false
	}
	if len(b) == 0 {
		return nil, true
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4), true
}

// Bytes views f as its bytes (the inverse of Floats; little-endian on
// every platform Spry runs on).
func Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), len(f)*4)
}

// Fold adds w·u into acc: acc[i] += w*u[i]. len(u) must be at least
// len(acc). Every result is checked before it is stored: when one is not
// finite (u holds a NaN or an infinity, or a product or sum overflows),
// Fold takes back what it added so far (acc -= w·u over that part, which
// leaves acc as it was up to float32 rounding: an ulp or so of each value)
// and returns the index of the offending value and false.
func Fold(acc, u []float32, w float32) (bad int, ok bool) {
	u = u[:len(acc)]
	done, at := fold32(acc, u, w)
	if at < 0 {
		at = foldGo(acc[done:], u[done:], w)
		if at < 0 {
			return -1, true
		}
		at += done
	}
	// Refused at group or element at: find the value, undo [0, at).
	bad = at
	for i := at; i < len(acc); i++ {
		if !finite(acc[i] + w*u[i]) {
			bad = i
			break
		}
	}
	undo(acc[:at], u[:at], w)
	return bad, false
}

// undo takes w·u out of acc again (after a refused Fold).
func undo(acc, u []float32, w float32) {
	done, _ := fold32(acc, u, -w)
	for i := done; i < len(acc); i++ {
		acc[i] -= w * u[i]
	}
}

// Store sets acc to w·u: the first fold into an empty accumulator, which so
// needs no zeroing and reads nothing of it. It checks each result as Fold
// does; on a refusal acc holds nothing of value (it was empty).
func Store(acc, u []float32, w float32) (bad int, ok bool) {
	u = u[:len(acc)]
	done, at := store32(acc, u, w)
	if at < 0 {
		for i := done; i < len(acc); i++ {
			r := w * u[i]
			if !finite(r) {
				return i, false
			}
			acc[i] = r
		}
		return -1, true
	}
	for i := at; i < len(acc); i++ {
		if !finite(w * u[i]) {
			return i, false
		}
	}
	return at, false
}

// Combine sets dst to (Σ parts)·s: the leaves' partial sums added and
// turned into the mean (s = 1/Σ weights), in ⌈(len(parts)−1)/1⌉ passes
// over dst, the last of which also scales. dst may be parts[0].
func Combine(dst []float32, parts [][]float32, s float32) {
	switch len(parts) {
	case 0:
		clear(dst)
		return
	case 1:
		mul(dst, parts[0], s)
		return
	}
	a := parts[0]
	for _, p := range parts[1 : len(parts)-1] {
		add2Scale(dst, a, p, 1)
		a = dst
	}
	add2Scale(dst, a, parts[len(parts)-1], s)
}

// mul sets dst to src·s.
func mul(dst, src []float32, s float32) {
	src = src[:len(dst)]
	done, bad := store32(dst, src, s)
	if bad >= 0 {
		// store32 stops at a group with a result that is not finite
		// (its check is Store's): this loop writes that group and the rest.
		done = bad
	}
	for i := done; i < len(dst); i++ {
		dst[i] = src[i] * s
	}
}

// add2Scale sets dst to (a + b)·s; dst may be a or b.
func add2Scale(dst, a, b []float32, s float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	done := add2Scale32(dst, a, b, s)
	for i := done; i < len(dst); i++ {
		dst[i] = (a[i] + b[i]) * s
	}
}

// foldGo is Fold's loop in Go: eight results at a time, checked, then
// stored. It returns the start of the group it stopped at, or -1.
func foldGo(acc, u []float32, w float32) int {
	n := len(acc)
	u = u[:n]
	i := 0
	for ; i+8 <= n; i += 8 {
		a := acc[i : i+8 : i+8]
		x := u[i : i+8 : i+8]
		r0, r1, r2, r3 := a[0]+w*x[0], a[1]+w*x[1], a[2]+w*x[2], a[3]+w*x[3]
		r4, r5, r6, r7 := a[4]+w*x[4], a[5]+w*x[5], a[6]+w*x[6], a[7]+w*x[7]
		if notFinite(r0)|notFinite(r1)|notFinite(r2)|notFinite(r3)|
			notFinite(r4)|notFinite(r5)|notFinite(r6)|notFinite(r7) != 0 {
			return i
		}
		a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7] = r0, r1, r2, r3, r4, r5, r6, r7
	}
	for ; i < n; i++ {
		r := acc[i] + w*u[i]
		if !finite(r) {
			return i
		}
		acc[i] = r
	}
	return -1
}

func finite(f float32) bool { return notFinite(f) == 0 }

// notFinite is 1 when f is a NaN or an infinity (exponent bits all ones),
// else 0, without a branch.
func notFinite(f float32) uint32 {
	e := (math.Float32bits(f) >> 23) & 0xff
	return (e + 1) >> 8 // 0xff+1 = 0x100 → 1; anything less → 0
}

// FoldBytes is Fold for an update given as little-endian bytes that Floats
// could not view in place (unaligned, or split across pieces of a
// payload): the slow path, decoding each float. With empty set it stores
// (Store) instead of adding.
func FoldBytes(acc []float32, b []byte, w float32, empty bool) (bad int, ok bool) {
	at := func(i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])) }
	for i := range acc {
		r := w * at(i)
		if !empty {
			r += acc[i]
		}
		if !finite(r) {
			if !empty {
				for j := range i {
					acc[j] -= w * at(j)
				}
			}
			return i, false
		}
		acc[i] = r
	}
	return -1, true
}
