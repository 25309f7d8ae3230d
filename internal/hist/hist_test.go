package hist

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

func TestBucketsSorted(t *testing.T) {
	if !slices.IsSorted(Bounds[:]) {
		t.Fatal("bounds not sorted")
	}
	if unsafe.Sizeof(H{}) != uintptr(Buckets+1)*8 {
		t.Fatalf("H is %d bytes; shared-memory layouts count on %d", unsafe.Sizeof(H{}), (Buckets+1)*8)
	}
}

func TestObserve(t *testing.T) {
	var h H
	for _, d := range []time.Duration{0, 50 * time.Microsecond, 51 * time.Microsecond, time.Millisecond, time.Hour, -5} {
		h.Observe(int64(d))
	}
	s := h.Snapshot()
	want := [Buckets]uint64{0: 3, 1: 1, 4: 1, Buckets - 1: 1}
	if s.Counts != want {
		t.Fatalf("counts %v, want %v", s.Counts, want)
	}
	if s.Count() != 6 || s.Sum != uint64(50*time.Microsecond+51*time.Microsecond+time.Millisecond+time.Hour) {
		t.Fatalf("count %d sum %d", s.Count(), s.Sum)
	}
}

// Quantile and Below agree with exact values from the raw samples to
// within the resolution of the bucket they fall in.
func TestQuantileAgainstExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 50 {
		var h H
		n := 1 + rng.IntN(5000)
		samples := make([]int64, n)
		for i := range samples {
			samples[i] = int64(rng.ExpFloat64() * float64(time.Duration(1+trial)*time.Millisecond))
			h.Observe(samples[i])
		}
		slices.Sort(samples)
		s := h.Snapshot()
		for _, q := range []float64{0.5, 0.9, 0.99} {
			exact := samples[int(q*float64(n-1))]
			got := s.Quantile(q)
			lo, hi := bucketOf(exact)
			if got < lo || got > hi {
				t.Fatalf("trial %d q%.2f: %d outside [%d,%d] of exact %d", trial, q, got, lo, hi, exact)
			}
		}
		slo := int64(5 * time.Millisecond) // a bucket bound: exact there
		k, _ := slices.BinarySearch(samples, slo+1)
		if got, want := s.Below(slo), float64(k)/float64(n); got != want {
			t.Fatalf("trial %d: Below(5ms) = %v, want %v", trial, got, want)
		}
	}
}

func bucketOf(d int64) (lo, hi int64) {
	for i, b := range Bounds {
		if d <= b {
			if i > 0 {
				lo = Bounds[i-1]
			}
			return lo, b
		}
	}
	return Bounds[len(Bounds)-1], Bounds[len(Bounds)-1]
}

func TestSub(t *testing.T) {
	var h H
	h.Observe(1)
	old := h.Snapshot()
	h.Observe(int64(time.Second))
	d := h.Snapshot().Sub(old)
	if d.Count() != 1 || d.Sum != uint64(time.Second) {
		t.Fatalf("diff %+v", d)
	}
}

func TestZeroAllocs(t *testing.T) {
	var h H
	if a := testing.AllocsPerRun(1000, func() { h.Observe(12345) }); a != 0 {
		t.Fatalf("%v allocations per Observe", a)
	}
}

func BenchmarkObserve(b *testing.B) {
	var h H
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Observe(int64(i&0xfffff) * 1000)
	}
}
