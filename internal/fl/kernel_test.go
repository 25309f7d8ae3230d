package fl

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Sizes of the kernel benchmarks: in cache, and ResNet-18's update (11.7M
// parameters, 46.8 MB), far past any cache.
var benchSizes = []int{64 << 10, 11_700_000}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1fMB", float64(n*4)/1e6)
	}
	return fmt.Sprintf("%dKiB", n*4>>10)
}

// BenchmarkCopy is the yardstick: copy of an update of the same size (read
// n floats, write n floats). SetBytes counts the update's bytes, so MB/s
// compare directly with BenchmarkFold's.
func BenchmarkCopy(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			dst, src := make([]float32, n), randVec(n, 1)
			b.SetBytes(int64(n * 4))
			b.ReportAllocs()
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}

// BenchmarkFold folds an update into an accumulator (read the update, read
// and write the accumulator).
func BenchmarkFold(b *testing.B) {
	benchKernel(b, false, func(acc, u []float32) { Fold(acc, u, 0.5) })
}

// BenchmarkFoldGo is Fold's Go loop, without the vector unit.
func BenchmarkFoldGo(b *testing.B) {
	benchKernel(b, false, func(acc, u []float32) { foldGo(acc, u, 0.5) })
}

// BenchmarkStore is the first fold into an empty accumulator.
func BenchmarkStore(b *testing.B) {
	benchKernel(b, true, func(acc, u []float32) { Store(acc, u, 0.5) })
}

// benchKernel runs kernel(acc, u) on each of benchSizes, with an update u
// and an accumulator acc that is zero when empty (else already folded
// into: random).
func benchKernel(b *testing.B, empty bool, kernel func(acc, u []float32)) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			var acc []float32
			if empty {
				acc = make([]float32, n)
			} else {
				acc = randVec(n, 1)
			}
			u := randVec(n, 2)
			b.SetBytes(int64(n * 4))
			b.ReportAllocs()
			for b.Loop() {
				kernel(acc, u)
			}
		})
	}
}

func randVec(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 0))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

var _ = math.Pi

// TestFold checks the kernels against float64 sums at every length around
// the vector unit's groups of 32 (tails, in-cache, unaligned views).
func TestFold(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 31, 32, 33, 63, 64, 65, 100, 1000, BlockFloatsForTest*4 + 5} {
		acc, u := randVec(n, uint64(n)+1), randVec(n, uint64(n)+2)
		want := make([]float64, n)
		for i := range want {
			want[i] = float64(acc[i]) + 3*float64(u[i])
		}
		if bad, ok := Fold(acc, u, 3); !ok {
			t.Fatalf("n=%d: Fold refused finite values at %d", n, bad)
		}
		for i := range want {
			if d := math.Abs(float64(acc[i]) - want[i]); d > 1e-6*(1+math.Abs(want[i])) {
				t.Fatalf("n=%d: acc[%d] = %v, want %v", n, i, acc[i], want[i])
			}
		}
		dst := make([]float32, n)
		if _, ok := Store(dst, u, -2); !ok {
			t.Fatalf("n=%d: Store refused", n)
		}
		for i := range dst {
			if dst[i] != -2*u[i] {
				t.Fatalf("n=%d: Store: dst[%d] = %v, want %v", n, i, dst[i], -2*u[i])
			}
		}
	}
}

const BlockFloatsForTest = 4096

// TestFoldRefuses: a NaN, an infinity or an overflow anywhere (in the first
// group, in the middle, in the scalar tail) refuses the update, reports
// where, and leaves the accumulator as it was (to float32 rounding).
func TestFoldRefuses(t *testing.T) {
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	for _, n := range []int{5, 32, 97, 1000} {
		for _, at := range []int{0, n / 2, n - 1} {
			for _, c := range []struct {
				name string
				v    float32
				w    float32
			}{{"nan", nan, 2}, {"+inf", inf, 2}, {"-inf", -inf, 2}, {"overflow", 3e38, 4}} {
				acc, u := randVec(n, 1), randVec(n, 2)
				orig := append([]float32(nil), acc...)
				u[at] = c.v
				bad, ok := Fold(acc, u, c.w)
				if ok || bad != at {
					t.Fatalf("n=%d at=%d %s: Fold = (%d, %v), want (%d, false)", n, at, c.name, bad, ok, at)
				}
				for i := range acc {
					if d := math.Abs(float64(acc[i] - orig[i])); d > 4e-7*(1+math.Abs(float64(orig[i]))) {
						t.Fatalf("n=%d at=%d %s: acc[%d] = %v after the refusal, was %v", n, at, c.name, i, acc[i], orig[i])
					}
				}
				if bad, ok := Store(make([]float32, n), u, c.w); ok || bad != at {
					t.Fatalf("n=%d at=%d %s: Store = (%d, %v), want (%d, false)", n, at, c.name, bad, ok, at)
				}
				b := Bytes(u)
				acc2 := append([]float32(nil), orig...)
				if bad, ok := FoldBytes(acc2, b, c.w, false); ok || bad != at {
					t.Fatalf("n=%d at=%d %s: FoldBytes = (%d, %v)", n, at, c.name, bad, ok)
				}
			}
		}
	}
	// A sum that overflows (each term finite) is refused too.
	acc, u := []float32{3e38, 1}, []float32{3e38, 1}
	if bad, ok := Fold(acc, u, 1); ok || bad != 0 {
		t.Fatalf("overflowing sum: Fold = (%d, %v), want (0, false)", bad, ok)
	}
}

// TestFloatsView: Floats views aligned bytes in place (writes show through)
// and refuses unaligned or ragged ones, which FoldBytes folds the same.
func TestFloatsView(t *testing.T) {
	raw := Bytes(make([]float32, 11)) // 4-byte aligned, whatever the stack does
	f, ok := Floats(raw[:40])
	if !ok || len(f) != 10 {
		t.Fatalf("Floats(aligned 40 bytes) = %d floats, %v", len(f), ok)
	}
	f[3] = 1.5
	if got := math.Float32frombits(uint32(raw[12]) | uint32(raw[13])<<8 | uint32(raw[14])<<16 | uint32(raw[15])<<24); got != 1.5 {
		t.Fatalf("the view is not the bytes: %v", got)
	}
	if _, ok := Floats(raw[1:41]); ok {
		t.Fatal("Floats viewed an unaligned slice")
	}
	if _, ok := Floats(raw[:39]); ok {
		t.Fatal("Floats viewed a ragged slice")
	}
	u := randVec(10, 9)
	src := Bytes(make([]float32, 11))
	copy(src[1:], Bytes(u))
	a, b := randVec(10, 4), randVec(10, 4)
	FoldBytes(a, src[1:41], 0.5, false)
	Fold(b, u, 0.5)
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-6 {
			t.Fatalf("FoldBytes[%d] = %v, Fold %v", i, a[i], b[i])
		}
	}
	e := make([]float32, 10)
	FoldBytes(e, src[1:41], 2, true)
	for i := range e {
		if e[i] != 2*u[i] {
			t.Fatalf("FoldBytes(empty)[%d] = %v, want %v", i, e[i], 2*u[i])
		}
	}
}

// TestCombine: partial sums combined and scaled, with dst one of them, in
// one goroutine and in several.
func TestCombine(t *testing.T) {
	for _, n := range []int{3, 100, 1 << 17} {
		for k := 1; k <= 4; k++ {
			parts := make([][]float32, k)
			want := make([]float64, n)
			for j := range parts {
				parts[j] = randVec(n, uint64(10*j+n))
				for i, f := range parts[j] {
					want[i] += float64(f)
				}
			}
			for _, workers := range []int{1, 3} {
				ps := make([][]float32, k)
				for j := range ps {
					ps[j] = append([]float32(nil), parts[j]...)
				}
				dst := ps[0] // in place
				CombineParallel(dst, ps, 0.25, workers)
				for i := range dst {
					if d := math.Abs(float64(dst[i]) - want[i]*0.25); d > 1e-5*(1+math.Abs(want[i])) {
						t.Fatalf("n=%d k=%d workers=%d: dst[%d] = %v, want %v", n, k, workers, i, dst[i], want[i]*0.25)
					}
				}
			}
		}
	}
}

// TestCombineOverflow: a combine of one part scales every value, also past
// one whose product is not finite (the vector loop stops there).
func TestCombineOverflow(t *testing.T) {
	src := randVec(128, 1)
	src[40] = math.MaxFloat32
	dst := make([]float32, len(src))
	Combine(dst, [][]float32{src}, 2)
	for i := range dst {
		if want := src[i] * 2; dst[i] != want {
			t.Fatalf("dst[%d] = %v, want %v", i, dst[i], want)
		}
	}
}

// TestKernelsAllocateNothing locks in the per-update path: no allocation.
func TestKernelsAllocateNothing(t *testing.T) {
	acc, u := randVec(4096, 1), randVec(4096, 2)
	b := Bytes(u)
	if n := testing.AllocsPerRun(50, func() {
		v, _ := Floats(b)
		Fold(acc, v, 0.001)
		Store(acc, v, 1)
		Combine(acc, [][]float32{acc}, 1)
	}); n != 0 {
		t.Fatalf("the kernels allocate %v times a run", n)
	}
}
