package bench

import (
	"math"
	"slices"
	"time"

	"github.com/spry-dev/spry/internal/bench/load"
)

// Accounting of a trace replay. Times are wall-clock offsets from the start
// of the load (load.Sample, scale events, status polls); the trace starts at
// origin and each of its seconds lasts sec of wall time (1 s / speedup).
// These functions are pure, so that the definitions below are tested
// directly.

// secondStat is one trace second: the requests that completed in it.
type secondStat struct {
	Requests int           // completed (answered or failed) in this second
	Failed   int           // of which failed
	Over     int           // of which over the threshold (failures count as over)
	P99      time.Duration // nearest-rank 99th percentile of their latency; failures are +∞
	Violated bool          // P99 > threshold
}

// failedLatency stands for a failed request's latency: worse than any.
const failedLatency = time.Duration(math.MaxInt64)

// perSecond buckets the measured samples (due at or after origin) by the
// trace second they completed in, and marks the seconds whose p99 latency
// exceeds threshold. The result has at least n seconds, and more when
// requests completed after the trace ended (their queue drained late). A
// second without completions is not a violation.
func perSecond(samples []load.Sample, origin, sec time.Duration, n int, threshold time.Duration) []secondStat {
	lat := make([][]time.Duration, n)
	for _, s := range samples {
		if s.Due < origin {
			continue // warm-up
		}
		k := max(int((s.Done-origin)/sec), 0)
		for k >= len(lat) {
			lat = append(lat, nil)
		}
		l := s.Done - s.Due
		if s.Failed {
			l = failedLatency
		}
		lat[k] = append(lat[k], l)
	}
	out := make([]secondStat, len(lat))
	for k, ls := range lat {
		st := &out[k]
		st.Requests = len(ls)
		for _, l := range ls {
			if l == failedLatency {
				st.Failed++
			}
			if l > threshold {
				st.Over++
			}
		}
		if len(ls) > 0 {
			slices.Sort(ls)
			st.P99 = nearestRank(ls, 0.99)
			st.Violated = st.P99 > threshold
		}
	}
	return out
}

// nearestRank returns the q-quantile of sorted values: the smallest value
// with at least q of all values at or below it. Under 100 values its 0.99
// is the maximum.
func nearestRank(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// latencyQuantiles returns the p50 and p99 of the measured samples that
// were answered (failures are counted elsewhere), and how many there were.
func latencyQuantiles(samples []load.Sample, origin time.Duration) (p50, p99 time.Duration, n int) {
	ls := make([]time.Duration, 0, len(samples))
	for _, s := range samples {
		if s.Due >= origin && !s.Failed {
			ls = append(ls, s.Done-s.Due)
		}
	}
	slices.Sort(ls)
	return nearestRank(ls, 0.5), nearestRank(ls, 0.99), len(ls)
}

// countStep is a step of a piecewise-constant count: from At on, N.
type countStep struct {
	At time.Duration
	N  int
}

// integrate returns ∫ count dt over [from, to) in seconds, for the count
// that is initial before the first step and steps[i].N from steps[i].At on
// (steps sorted by time).
func integrate(steps []countStep, initial int, from, to time.Duration) float64 {
	if to <= from {
		return 0
	}
	total := 0.0
	cur, at := initial, from
	for _, s := range steps {
		if s.At <= from {
			cur = s.N
			continue
		}
		if s.At >= to {
			break
		}
		total += float64(cur) * (s.At - at).Seconds()
		cur, at = s.N, s.At
	}
	return total + float64(cur)*(to-at).Seconds()
}

// countAt returns the count at time t (see integrate).
func countAt(steps []countStep, initial int, t time.Duration) int {
	cur := initial
	for _, s := range steps {
		if s.At > t {
			break
		}
		cur = s.N
	}
	return cur
}

// scaleEvent is a change of a function's wanted instance count, from the
// node's log.
type scaleEvent struct {
	At       time.Duration
	From, To int
	Reason   string // the autoscaler's reason, or "cold-start"
}

// countEvents counts the changes within [from, to): all, up and down.
func countEvents(evs []scaleEvent, from, to time.Duration) (all, up, down int) {
	for _, e := range evs {
		if e.At < from || e.At >= to || e.To == e.From {
			continue
		}
		all++
		if e.To > e.From {
			up++
		} else {
			down++
		}
	}
	return all, up, down
}

// eventSteps turns scale events into the count they set.
func eventSteps(evs []scaleEvent) []countStep {
	out := make([]countStep, len(evs))
	for i, e := range evs {
		out[i] = countStep{e.At, e.To}
	}
	return out
}
