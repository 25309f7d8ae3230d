package control

import (
	"fmt"
	"math"
	"time"
)

// AggregationLoad is what the control plane sees of one federated-learning
// job (docs/fl.md): how fast its updates arrive, how large they are, how
// many a round takes, and what folding and combining them costs here.
// The FL top aggregator measures it; [PlanAggregation] turns it into the
// hierarchy: how many leaf aggregators, and how many updates each takes.
type AggregationLoad struct {
	// Rate is the updates' arrival rate, per second: the round's so far,
	// or the rounds' before (0: not measured yet).
	Rate float64
	// Bytes is one update's size.
	Bytes int64
	// Goal is how many updates a round takes: its count goal, else what
	// the rounds before took (0: not known yet).
	Goal int
	// Fold is a leaf's measured time to fold one update of this size
	// (request handling included); 0: not measured yet, FoldRate says.
	Fold time.Duration
	// FoldRate is the bytes per second a leaf folds when Fold is not
	// measured yet (0: DefaultFoldRate).
	FoldRate float64
	// CombineRate is the bytes per second at which the top adds a partial
	// sum into the round's model (0: DefaultCombineRate).
	CombineRate float64
	// Cores is how many CPUs the leaves can fold on at once.
	Cores int
	// MaxLeaves is the most leaf instances the function may run (its
	// scale.max).
	MaxLeaves int
	// Room is how many bytes of the pool the job's partial sums may take,
	// counting the ones it has (0: no bound).
	Room int64
}

// AggregationPlan is the hierarchy for a job's next updates.
type AggregationPlan struct {
	// Leaves is how many leaf aggregators to run: each folds into its
	// own partial sum, so it is also how many partial sums the round's
	// model is combined from.
	Leaves int
	// PerLeaf is how many updates each leaf takes in a round (0: the
	// round's goal is not known).
	PerLeaf int
	// Tail is the expected time from a round's last update to its model:
	// the folds still waiting, the last fold, the combine.
	Tail time.Duration
	// Reason says what bounded the choice.
	Reason string
}

// Defaults of AggregationLoad's rates: one core's fold of float32s near
// memory bandwidth (a read of the update and a read-modify-write of the
// sum), and the top's combine of a partial sum into the model.
const (
	DefaultFoldRate    = 4e9
	DefaultCombineRate = 4e9
	// foldOverhead is a fold's cost besides its bytes when Fold is not
	// measured: the request's two hops and the round table's bookkeeping.
	foldOverhead = 200 * time.Microsecond
	// maxSums bounds the partial sums of a job (the round table's).
	maxSums = 32
)

// Reasons of an AggregationPlan.
const (
	ReasonAggIdle    = "no load measured yet: one leaf"
	ReasonAggTail    = "fewest leaves for the shortest tail"
	ReasonAggCores   = "bounded by the cores"
	ReasonAggMax     = "bounded by scale.max"
	ReasonAggMemory  = "bounded by the pool's room for partial sums"
	ReasonAggKeepsUp = "as many leaves as keep up with the arrivals"
)

// PlanAggregation sizes the aggregation hierarchy of a job from its load.
//
// A round of G updates arriving at rate λ spans D = G/λ; folding them costs
// W = G·t_fold leaf-seconds, t_fold growing with the update's size. With L
// leaves folding at once, the folds end max(D, W/L) + t_fold after the
// round's first update, and the top then adds L partial sums into the
// model, t_comb = size/CombineRate each. So the time from the last update
// to the model is
//
//	tail(L) = max(0, W/L − D) + t_fold + L·t_comb
//
// More leaves shorten the backlog a burst leaves (the first term) and
// lengthen the combine (the last): a burst of large updates wants several
// leaves, a trickle of any size one, and small updates (t_comb tiny, the
// fold's fixed cost large) more than large ones at the same rate. The plan
// is the L in [1, bound] with the shortest tail (ties: fewer leaves, less
// memory and fewer warm processes), at least the leaves that keep up with
// the arrivals (λ·t_fold/L < 1), where bound is the least of the cores
// (a leaf folds on one; more leaves than cores fold no faster), scale.max,
// the partial sums the pool has room for, and 32.
//
// With no rate measured yet (a job's first updates), one leaf: the top
// plans again as the arrivals are measured.
func PlanAggregation(l AggregationLoad) AggregationPlan {
	fold := l.Fold
	if fold <= 0 {
		rate := l.FoldRate
		if rate <= 0 {
			rate = DefaultFoldRate
		}
		fold = foldOverhead + time.Duration(float64(l.Bytes)/rate*1e9)
	}
	comb := l.CombineRate
	if comb <= 0 {
		comb = DefaultCombineRate
	}
	tf, tc := fold.Seconds(), float64(l.Bytes)/comb

	bound, why := maxSums, ReasonAggTail
	if l.Cores > 0 && l.Cores < bound {
		bound, why = l.Cores, ReasonAggCores
	}
	if l.MaxLeaves > 0 && l.MaxLeaves < bound {
		bound, why = l.MaxLeaves, ReasonAggMax
	}
	if l.Room > 0 && l.Bytes > 0 && l.Room/l.Bytes < int64(bound) {
		bound, why = int(max(l.Room/l.Bytes, 1)), ReasonAggMemory
	}
	plan := func(n int, reason string) AggregationPlan {
		p := AggregationPlan{Leaves: n, Reason: reason}
		if l.Goal > 0 {
			p.PerLeaf = (l.Goal + n - 1) / n
		}
		p.Tail = time.Duration(tail(n, l.Goal, l.Rate, tf, tc) * 1e9)
		return p
	}
	if l.Rate <= 0 {
		return plan(1, ReasonAggIdle)
	}

	goal := l.Goal
	if goal <= 0 {
		// A round's size unknown: a second's arrivals stand for it.
		goal = max(int(math.Ceil(l.Rate)), 1)
	}
	best, bestTail := 1, math.Inf(1)
	for n := 1; n <= bound; n++ {
		if t := tail(n, goal, l.Rate, tf, tc); t < bestTail*(1-1e-9) {
			best, bestTail = n, t
		}
	}
	// Keep up: below this many leaves the backlog grows for as long as
	// the arrivals last.
	keep := int(math.Floor(l.Rate*tf*(1+1e-9))) + 1
	reason := ReasonAggTail
	if keep > best {
		best, reason = min(keep, bound), ReasonAggKeepsUp
	}
	if best == bound && (reason == ReasonAggKeepsUp || tail(bound+1, goal, l.Rate, tf, tc) < bestTail*(1-1e-9)) {
		reason = why // more would have helped
	}
	return plan(best, reason)
}

// tail is the expected time from a round's last update to its model with
// n leaves (see PlanAggregation); with no rate or goal, the last fold and
// the combine.
func tail(n, goal int, rate, tf, tc float64) float64 {
	backlog := 0.0
	if rate > 0 && goal > 0 {
		backlog = max(0, float64(goal)*tf/float64(n)-float64(goal)/rate)
	}
	return backlog + tf + float64(n)*tc
}

// String is the plan as logs and reports show it.
func (p AggregationPlan) String() string {
	return fmt.Sprintf("%d leaves × %d updates (tail %v: %s)", p.Leaves, p.PerLeaf, p.Tail.Round(time.Microsecond), p.Reason)
}
