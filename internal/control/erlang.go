package control

import "math"

// sizeForSLO returns the fewest instances, each running conc requests at
// once with mean execution time exec (seconds), such that with Poisson
// arrivals at rate lambda the probability of a request waiting longer than
// slack seconds is within the bound — Erlang C for an M/M/(N·conc) queue:
//
//	P(wait > t) = C(s, a) · exp(−(s − a)·t/exec),  s = N·conc, a = λ·exec.
//
// The bound is min(cap, eps·s/(s − a)): eps is the share of requests that
// may wait too long when they do so independently (windowTail), and
// s/(s − a) = 1/(1 − ρ) the mean length of a run of them — once one request
// waits past the slack, those arriving behind it do too until the queue
// drains, which at utilisation ρ takes about 1/(1 − ρ) arrivals — so runs
// occur at eps/(1 − ρ)·(1 − ρ) = eps and a window sees one with the
// probability windowTail assumed. cap is the share the SLO's percentile
// allows at all. With eps = cap it is the plain per-request bound.
//
// The result is ceil(λ·exec/conc) (the plain fluid sizing, 100%
// utilisation) plus the margin that keeps queueing delay inside the SLO,
// roughly a square root of the load (Halfin–Whitt). Exponential service
// times make it conservative for the steadier execution times functions
// usually have.
//
// The result saturates at limit. The loop runs about a + a few √a steps
// (a = busy slots) and allocates nothing; past 10⁵ busy slots, where the
// margin is under 1% of the load, it takes the square-root-staffing bound
// a + 3√a instead of iterating.
func sizeForSLO(lambda, exec float64, conc int, slack, eps, cap float64, limit int) int {
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
		if c*math.Exp(-(s-a)*slack/exec) <= min(cap, eps*s/(s-a)) {
			return k / conc
		}
	}
	return limit
}

// windowTail returns the share of requests that may exceed the SLO when
// the SLO bounds the q-quantile of every window holding n requests (on
// average) and a window may miss that with probability at most miss: the
// largest p for which a window's q-quantile is over the SLO with
// probability at most miss, capped at 1 − q.
//
// A window's nearest-rank q-quantile is over the SLO when more than
// k = ⌊(1 − q)·n⌋ of its requests are. Taking exceedances as independent,
// their count is binomial: with k = 0, p = 1 − (1 − miss)^(1/n) exactly;
// above, the count is taken as Poisson with mean n·p, and p = m/n for the
// largest m with P(Poisson(m) > k) ≤ miss. Independence is conservative:
// slow requests come in runs (one queue delays its neighbours), which puts
// them into fewer windows. With k = 0 (under 1/(1 − q) requests per window:
// one slow request is the window's p99) that is p ≈ miss/n. A window of one
// request or less is over when that request is: p = miss. Allocates
// nothing; O(k) for k ≤ 200, a normal approximation above.
func windowTail(n, q, miss float64) float64 {
	delta := 1 - q
	if !(n > 1) {
		return min(miss, delta)
	}
	k := math.Floor(delta * n)
	var m float64
	switch {
	case k == 0:
		// Exactly: 1 − (1 − p)^n = miss.
		return min(-math.Expm1(math.Log1p(-miss)/n), delta)
	case k <= 200:
		// P(Poisson(m) ≤ k) falls with m; at m = k + 1 it is under
		// 0.6 < 1 − miss, so the root lies in [0, k + 1].
		lo, hi := 0.0, k+1
		for range 48 {
			mid := (lo + hi) / 2
			if poissonCDF(k, mid) >= 1-miss {
				lo = mid
			} else {
				hi = mid
			}
		}
		m = lo
	default:
		// m + z·√m = k + ½, z the standard normal's (1 − miss) quantile.
		z := normalQuantile(1 - miss)
		r := (-z + math.Sqrt(z*z+4*(k+0.5))) / 2
		m = r * r
	}
	return min(m/n, delta)
}

// poissonCDF returns P(Poisson(m) ≤ k) for k ≥ 0, m > 0.
func poissonCDF(k, m float64) float64 {
	term := math.Exp(-m)
	sum := term
	for i := 1.0; i <= k; i++ {
		term *= m / i
		sum += term
	}
	return sum
}

// normalQuantile returns z with P(Z ≤ z) = q for a standard normal Z,
// q in (0.5, 1), by bisection.
func normalQuantile(q float64) float64 {
	lo, hi := 0.0, 40.0
	for range 64 {
		mid := (lo + hi) / 2
		if 0.5*math.Erfc(-mid/math.Sqrt2) < q {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}
