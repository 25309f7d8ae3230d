package control

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"
)

// capacitiesRef is the specification of Capacities in exact arithmetic:
// unmeasured rates take the mean of the measured ones; capacity is the
// integer c in [1, CapacityScale] nearest to CapacityScale·rate/fastest,
// found by trying every c (ties to the larger).
func capacitiesRef(rates []float64) []uint32 {
	var sum big.Rat
	n := 0
	var fastest *big.Rat
	for _, r := range rates {
		if r > 0 && !math.IsInf(r, 1) {
			x := new(big.Rat).SetFloat64(r)
			sum.Add(&sum, x)
			n++
			if fastest == nil || x.Cmp(fastest) > 0 {
				fastest = x
			}
		}
	}
	out := make([]uint32, len(rates))
	for i, r := range rates {
		if n == 0 {
			out[i] = CapacityScale
			continue
		}
		var x *big.Rat
		if r > 0 && !math.IsInf(r, 1) {
			x = new(big.Rat).SetFloat64(r)
		} else {
			x = new(big.Rat).Quo(&sum, big.NewRat(int64(n), 1))
		}
		target := new(big.Rat).Quo(new(big.Rat).Mul(x, big.NewRat(CapacityScale, 1)), fastest)
		best, bestD := uint32(0), (*big.Rat)(nil)
		for c := uint32(1); c <= CapacityScale; c++ {
			d := new(big.Rat).Sub(target, new(big.Rat).SetInt64(int64(c)))
			d.Abs(d)
			if bestD == nil || d.Cmp(bestD) <= 0 {
				best, bestD = c, d
			}
		}
		out[i] = best
	}
	return out
}

func randomServiceRates(rng *rand.Rand) []float64 {
	rates := make([]float64, rng.IntN(12))
	for i := range rates {
		switch rng.IntN(10) {
		case 0:
			rates[i] = 0 // no measurement yet
		case 1:
			rates[i] = []float64{math.NaN(), math.Inf(1), -3}[rng.IntN(3)]
		default:
			// Fast and slow instances across three orders of magnitude.
			rates[i] = math.Exp(rng.Float64()*7) * (1 + rng.Float64())
		}
	}
	return rates
}

func TestCapacitiesMatchReference(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(31, 32))
	var dst []uint32
	for i := range 400 {
		rates := randomServiceRates(rng)
		dst = Capacities(dst, rates)
		want := capacitiesRef(rates)
		for j := range want {
			if dst[j] != want[j] {
				t.Fatalf("case %d: rates %v\n got %v\nwant %v", i, rates, dst, want)
			}
		}
	}
}

// Routing by the data path's rule — pick the instance minimising
// (queued + 1)/capacity — with these capacities gives each instance a share
// of requests proportional to its service rate.
func TestCapacitiesFairShare(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(33, 34))
	for i := range 200 {
		n := 1 + rng.IntN(8)
		rates := make([]float64, n)
		sum := 0.0
		for j := range rates {
			rates[j] = 10 + 990*rng.Float64() // within 100× of each other
			sum += rates[j]
		}
		caps := Capacities(nil, rates)
		const m = 20000
		q := make([]uint64, n)
		for range m {
			best := 0
			for j := 1; j < n; j++ {
				// (q[j]+1)/caps[j] < (q[best]+1)/caps[best], cross-multiplied as Pick does.
				if (q[j]+1)*uint64(caps[best]) < (q[best]+1)*uint64(caps[j]) {
					best = j
				}
			}
			q[best]++
		}
		for j := range rates {
			share, fair := float64(q[j])/m, rates[j]/sum
			if math.Abs(share-fair) > 0.01*fair+float64(n)/m {
				t.Fatalf("case %d: instance %d (rate %.1f of %v, cap %d of %v) got share %.4f, fair %.4f",
					i, j, rates[j], rates, caps[j], caps, share, fair)
			}
		}
	}
}

func TestCapacitiesEdges(t *testing.T) {
	t.Parallel()
	if c := Capacities(nil, nil); len(c) != 0 {
		t.Fatalf("empty: %v", c)
	}
	if c := Capacities(nil, []float64{0, math.NaN()}); c[0] != CapacityScale || c[1] != CapacityScale {
		t.Fatalf("no measurement: %v", c)
	}
	// A new instance gets the mean: rates 100 and 300, new → 200.
	if c := Capacities(nil, []float64{100, 300, 0}); c[0] != 333 || c[1] != 1000 || c[2] != 667 {
		t.Fatalf("mean for the new instance: %v", c)
	}
	// A very slow instance still gets capacity 1, never 0.
	if c := Capacities(nil, []float64{1e6, 1}); c[1] != 1 {
		t.Fatalf("slow instance: %v", c)
	}
	// Huge rates do not overflow the mean.
	if c := Capacities(nil, []float64{math.MaxFloat64, math.MaxFloat64 / 2, 0}); c[0] != 1000 || c[1] != 500 || c[2] != 750 {
		t.Fatalf("huge rates: %v", c)
	}
}

func TestCapacitiesAllocs(t *testing.T) {
	rates := []float64{10, 20, 0, 35.5, 7}
	dst := make([]uint32, 0, 8)
	if n := testing.AllocsPerRun(100, func() { dst = Capacities(dst, rates) }); n != 0 {
		t.Fatalf("Capacities allocates %v times with room in dst, want 0", n)
	}
}

func TestServiceRate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		done uint64
		busy time.Duration
		conc int
		want float64
	}{
		{100, 10 * time.Second, 1, 10},
		{100, 10 * time.Second, 4, 40},
		{0, time.Second, 1, 0},
		{10, 0, 1, 0},
		{10, time.Second, 0, 0},
	} {
		if got := ServiceRate(c.done, c.busy, c.conc); got != c.want {
			t.Errorf("ServiceRate(%d, %v, %d) = %v, want %v", c.done, c.busy, c.conc, got, c.want)
		}
	}
}
