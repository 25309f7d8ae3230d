// Package hist is a latency histogram with fixed buckets whose counters are
// plain atomics, so it can live on the heap of the gateway or in the shared
// memory of a pool, be updated from the data path without locks or
// allocations, and be read at any time by the daemon (for /metrics and the
// control plane).
package hist

import (
	"math"
	"sync/atomic"
	"time"
)

// Bounds are the upper bounds of the finite buckets, in nanoseconds. A
// last, implicit bucket counts everything above.
var Bounds = [...]int64{
	int64(50 * time.Microsecond), int64(100 * time.Microsecond), int64(250 * time.Microsecond),
	int64(500 * time.Microsecond), int64(time.Millisecond), int64(2500 * time.Microsecond),
	int64(5 * time.Millisecond), int64(10 * time.Millisecond), int64(25 * time.Millisecond),
	int64(50 * time.Millisecond), int64(100 * time.Millisecond), int64(250 * time.Millisecond),
	int64(500 * time.Millisecond), int64(time.Second), int64(2500 * time.Millisecond),
	int64(10 * time.Second),
}

// Buckets is the number of counters: one per bound and one above them.
const Buckets = len(Bounds) + 1

// H is a histogram. The zero value is empty and ready. Its size is fixed
// (Buckets+1 words), so it can be embedded in shared-memory structures.
type H struct {
	counts [Buckets]atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
}

// Observe records one latency of d nanoseconds (negative counts as 0).
// It allocates nothing.
func (h *H) Observe(d int64) {
	d = max(d, 0)
	i := 0
	// Linear: 16 compares of a sorted array that sits in two cache lines
	// beats a binary search's branches at this size.
	for i < len(Bounds) && d > Bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(uint64(d))
}

// Snapshot is a histogram's counts at one moment.
type Snapshot struct {
	Counts [Buckets]uint64
	Sum    uint64 // nanoseconds
}

// Snapshot reads the counters. Concurrent observations may be half seen
// (a count without its sum); the error is one observation at most.
func (h *H) Snapshot() (s Snapshot) {
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = h.sum.Load()
	return s
}

// Count returns the number of observations.
func (s *Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Sub returns the observations made between old and s.
func (s Snapshot) Sub(old Snapshot) Snapshot {
	for i := range s.Counts {
		s.Counts[i] -= old.Counts[i]
	}
	s.Sum -= old.Sum
	return s
}

// Quantile estimates the q-quantile (0 < q <= 1) in nanoseconds,
// interpolating linearly inside the bucket it falls in. It returns 0 for
// an empty snapshot, and the last bound for quantiles in the open bucket.
func (s *Snapshot) Quantile(q float64) int64 {
	n := s.Count()
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var seen float64
	for i, c := range s.Counts {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			if i == len(Bounds) {
				return Bounds[len(Bounds)-1]
			}
			lo := int64(0)
			if i > 0 {
				lo = Bounds[i-1]
			}
			frac := (rank - seen) / float64(c)
			return lo + int64(math.Round(frac*float64(Bounds[i]-lo)))
		}
		seen += float64(c)
	}
	return Bounds[len(Bounds)-1]
}

// Below estimates the fraction of observations at or below d nanoseconds
// (1 for an empty snapshot), interpolating inside d's bucket.
func (s *Snapshot) Below(d int64) float64 {
	n := s.Count()
	if n == 0 {
		return 1
	}
	var below float64
	lo := int64(0)
	for i, c := range s.Counts {
		if i == len(Bounds) {
			break
		}
		hi := Bounds[i]
		switch {
		case d >= hi:
			below += float64(c)
		case d > lo:
			below += float64(c) * float64(d-lo) / float64(hi-lo)
		}
		lo = hi
	}
	return below / float64(n)
}
