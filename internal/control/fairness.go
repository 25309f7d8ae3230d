package control

import (
	"math"
	"slices"
)

// FairShares returns each function's max-min fair share of a cluster of
// the given total capacity, as a fraction of that capacity per resource:
// the divisible DRF allocation, in which every function's allocation is
// proportional to its demand (the resources its wanted instances hold) and
// all dominant shares rise together until a function has all it wants or
// a resource it uses runs out (progressive filling). out is reused if it
// has room.
func FairShares(out [][NumResources]float64, total Resources, demand []Resources) [][NumResources]float64 {
	out = slices.Grow(out[:0], len(demand))[:len(demand)]
	// Each function's demand as fractions of the cluster, and its
	// dominant share if it got all of it.
	type fn struct {
		d    [NumResources]float64
		full float64 // dominant share of the whole demand
		i    int
	}
	fs := make([]fn, 0, len(demand))
	for i, d := range demand {
		out[i] = [NumResources]float64{}
		var f fn
		f.i = i
		for r := range d {
			if total[r] > 0 {
				f.d[r] = float64(d[r]) / float64(total[r])
			} else if d[r] > 0 {
				f.d[r] = math.Inf(1)
			}
			f.full = max(f.full, f.d[r])
		}
		if f.full > 0 && !math.IsInf(f.full, 1) {
			fs = append(fs, f)
		}
	}
	slices.SortFunc(fs, func(a, b fn) int {
		if a.full != b.full {
			if a.full < b.full {
				return -1
			}
			return 1
		}
		return a.i - b.i
	})
	// At dominant level t, an active function holds (t/full)·d. Usage of
	// r grows at rate[r] = Σ_active d[r]/full per unit of t.
	var used, rate [NumResources]float64
	for _, f := range fs {
		for r := range rate {
			rate[r] += f.d[r] / f.full
		}
	}
	active := make([]bool, len(fs))
	for k := range active {
		active[k] = true
	}
	t := 0.0
	next := 0 // the next function to be satisfied, in order of full
	for {
		for next < len(fs) && !active[next] {
			next++
		}
		if next == len(fs) {
			break
		}
		// The level at which the next function is satisfied, or a
		// resource runs out, whichever comes first.
		stop, sat := fs[next].full, -1
		for r := range rate {
			if rate[r] > 0 {
				if at := t + (1-used[r])/rate[r]; at < stop {
					stop, sat = at, r
				}
			}
		}
		for r := range used {
			used[r] += (stop - t) * rate[r]
		}
		t = stop
		freeze := func(k int) {
			active[k] = false
			f := fs[k]
			for r := range rate {
				rate[r] -= f.d[r] / f.full
				out[f.i][r] = t / f.full * f.d[r]
			}
		}
		if sat < 0 {
			freeze(next)
			continue
		}
		// Resource sat is exhausted: every function using it stops here.
		for k := range fs {
			if active[k] && fs[k].d[sat] > 0 {
				freeze(k)
			}
		}
		used[sat] = 1
	}
	return out
}

// Unfairness is Mu's measure of a placement: the sum over functions and
// resources of |fair share − allocation|, both as fractions of the
// cluster's capacity of that resource. 0 is perfectly fair.
func Unfairness(fair, alloc [][NumResources]float64) float64 {
	u := 0.0
	for i := range fair {
		for r := range fair[i] {
			u += math.Abs(fair[i][r] - alloc[i][r])
		}
	}
	return u
}

// Jain returns Jain's fairness index (Σx)²/(n·Σx²) of each function's
// dominant share relative to its fair dominant share (1 when every
// function gets its fair share, 1/n when one gets everything), over the
// functions with a non-zero fair share.
func Jain(fair, alloc [][NumResources]float64) float64 {
	var sum, sq float64
	n := 0
	for i := range fair {
		fd, ad := 0.0, 0.0
		for r := range fair[i] {
			fd, ad = max(fd, fair[i][r]), max(ad, alloc[i][r])
		}
		if fd <= 0 {
			continue
		}
		x := ad / fd
		sum += x
		sq += x * x
		n++
	}
	if n == 0 || sq == 0 {
		return 1
	}
	return sum * sum / (float64(n) * sq)
}
