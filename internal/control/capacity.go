package control

import (
	"math"
	"time"
)

// CapacityScale is the capacity of the fastest measured instance. The data
// path's Pick weighs instances by (queued + in flight + 1) / capacity, so
// only ratios matter; 1000 keeps them within 0.05% for any instance at
// least a tenth as fast as the fastest, and readable in `spry top`.
const CapacityScale = 1000

// Capacities turns measured per-instance service rates (requests per second
// an instance completes when busy, see [ServiceRate]) into the integer
// load-balancing capacities the pool's routing table holds, so that each
// instance's share of new requests is proportional to its rate.
//
// An instance whose rate is not a positive finite number has no
// measurement yet (just started); it gets the mean of the measured rates.
// The fastest instance gets CapacityScale and every other instance
// round(CapacityScale × rate / fastest), at least 1. With no measured
// instance at all, every instance gets CapacityScale.
//
// The result is written to dst[:len(rates)] (reallocated only if too
// short) and returned; with a large enough dst it allocates nothing.
func Capacities(dst []uint32, rates []float64) []uint32 {
	if cap(dst) < len(rates) {
		dst = make([]uint32, len(rates))
	}
	dst = dst[:len(rates)]
	sum, n, fastest := 0.0, 0, 0.0
	for _, r := range rates {
		if measured(r) {
			sum += r
			n++
			fastest = max(fastest, r)
		}
	}
	if n == 0 {
		for i := range dst {
			dst[i] = CapacityScale
		}
		return dst
	}
	mean := sum / float64(n)
	if math.IsInf(sum, 0) { // rates near MaxFloat64: average without overflow
		mean = 0
		for _, r := range rates {
			if measured(r) {
				mean += r / float64(n)
			}
		}
	}
	for i, r := range rates {
		if !measured(r) {
			r = mean
		}
		c := math.Floor(CapacityScale*(r/fastest) + 0.5)
		dst[i] = uint32(max(c, 1))
	}
	return dst
}

func measured(r float64) bool { return r > 0 && !math.IsInf(r, 1) }

// ServiceRate is the rate at which an instance running concurrency
// requests at once completes them while busy: concurrency × completions /
// busy time. It returns 0 (not measured) when there are no completions or
// no busy time.
func ServiceRate(completions uint64, busy time.Duration, concurrency int) float64 {
	if completions == 0 || busy <= 0 || concurrency < 1 {
		return 0
	}
	return float64(concurrency) * float64(completions) / busy.Seconds()
}
