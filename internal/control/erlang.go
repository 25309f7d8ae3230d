package control

import "math"

// sizeForSLO returns the fewest instances, each running conc requests at
// once with mean execution time exec (seconds), such that with Poisson
// arrivals at rate lambda the probability of a request waiting longer than
// slack seconds is at most eps — Erlang C for an M/M/(N·conc) queue:
//
//	P(wait > t) = C(s, a) · exp(−(s − a)·t/exec),  s = N·conc, a = λ·exec.
//
// It is ceil(λ·exec/conc) (the plain fluid sizing, 100% utilisation) plus
// the margin that keeps queueing delay inside the SLO, roughly a square
// root of the load (Halfin–Whitt). Exponential service times make it
// conservative for the steadier execution times functions usually have.
//
// The result saturates at limit. The loop runs about a + a few √a steps
// (a = busy slots) and allocates nothing; past 10⁵ busy slots, where the
// margin is under 1% of the load, it takes the square-root-staffing bound
// a + 3√a instead of iterating.
func sizeForSLO(lambda, exec float64, conc int, slack, eps float64, limit int) int {
	a := lambda * exec // offered load, in busy slots
	if !(a > 1e-12) || !(exec > 0) {
		return 0
	}
	if a >= float64(limit*conc) {
		return limit
	}
	if a > 1e5 {
		return toCount((a+3*math.Sqrt(a))/float64(conc), limit)
	}
	b := 1.0 // Erlang B with k servers, by the stable recursion
	for k := 1; k <= limit*conc; k++ {
		b = a * b / (float64(k) + a*b)
		if k%conc != 0 || float64(k) <= a {
			continue
		}
		s := float64(k)
		c := s * b / (s - a*(1-b)) // Erlang C: P(wait > 0)
		if c*math.Exp(-(s-a)*slack/exec) <= eps {
			return k / conc
		}
	}
	return limit
}
