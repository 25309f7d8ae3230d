package trace

import (
	"math"
	"math/rand/v2"
)

// The generators return one-second traces of n samples. Each is a pure
// function of its arguments: the same seed gives the same trace on every
// run and platform (math/rand/v2's PCG is specified bit for bit). Rates are
// rounded to whole requests per second, as in the Azure traces.

func newRand(seed uint64, kind uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, kind))
}

// noisy returns r with ±noise relative jitter, never negative, rounded.
func noisy(rng *rand.Rand, r, noise float64) float64 {
	r *= 1 + noise*(2*rng.Float64()-1)
	return math.Round(max(r, 0))
}

// Bursty is traffic at a base rate with sudden bursts: bursts begin on
// average every 90 s, last 5–30 s, and multiply the rate by 3–8, with a
// step (no ramp) at both ends. ±10% noise throughout.
func Bursty(seed uint64, n int, base float64) Trace {
	rng := newRand(seed, 1)
	rps := make([]float64, max(n, 0))
	burstLeft, mult := 0, 1.0
	for i := range rps {
		if burstLeft == 0 {
			mult = 1
			if rng.Float64() < 1.0/90 {
				burstLeft = 5 + rng.IntN(26)
				mult = 3 + 5*rng.Float64()
			}
		}
		if burstLeft > 0 {
			burstLeft--
		}
		rps[i] = noisy(rng, base*mult, 0.1)
	}
	return Trace{RPS: rps, Interval: 1}
}

// IdleGaps is traffic in active periods of 30–180 s at 0.5–1.5 × rate,
// separated by idle gaps of 60–300 s with no requests at all. It starts
// active.
func IdleGaps(seed uint64, n int, rate float64) Trace {
	rng := newRand(seed, 2)
	rps := make([]float64, max(n, 0))
	for i := 0; i < len(rps); {
		active := 30 + rng.IntN(151)
		level := rate * (0.5 + rng.Float64())
		for ; active > 0 && i < len(rps); active-- {
			rps[i] = noisy(rng, level, 0.1)
			i++
		}
		i += 60 + rng.IntN(241) // idle: already zero
	}
	return Trace{RPS: rps, Interval: 1}
}

// Ramp goes linearly from one rate to another over n samples, with ±5%
// noise.
func Ramp(seed uint64, n int, from, to float64) Trace {
	rng := newRand(seed, 3)
	rps := make([]float64, max(n, 0))
	for i := range rps {
		f := 0.0
		if n > 1 {
			f = float64(i) / float64(n-1)
		}
		rps[i] = noisy(rng, from+(to-from)*f, 0.05)
	}
	return Trace{RPS: rps, Interval: 1}
}

// Diurnal is a compressed day: a sinusoid between 10% and 100% of peak with
// the given period in samples (a "day"), starting at the trough, with ±10%
// noise.
func Diurnal(seed uint64, n int, peak float64, period int) Trace {
	rng := newRand(seed, 4)
	period = max(period, 2)
	rps := make([]float64, max(n, 0))
	for i := range rps {
		phase := 2 * math.Pi * float64(i) / float64(period)
		level := peak * (0.55 - 0.45*math.Cos(phase))
		rps[i] = noisy(rng, level, 0.1)
	}
	return Trace{RPS: rps, Interval: 1}
}
