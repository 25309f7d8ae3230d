package control

import (
	"testing"
	"time"
)

// Sizes of the updates in the scenarios: float32 ResNet-18 and -152, and a
// small model.
const (
	resnet18  = 11_689_512 * 4
	resnet152 = 60_192_808 * 4
	small     = 100_000 * 4
)

// The hierarchy follows the load: the arrival rate and the size of the
// updates, bounded by the cores, scale.max and the pool's room.
func TestPlanAggregationScenarios(t *testing.T) {
	for _, c := range []struct {
		name   string
		load   AggregationLoad
		leaves int
		reason string
	}{
		{"nothing measured yet", AggregationLoad{Bytes: resnet18, Goal: 100, Cores: 8, MaxLeaves: 8}, 1, ReasonAggIdle},
		{"resnet18 trickle", AggregationLoad{Rate: 5, Bytes: resnet18, Goal: 100, Cores: 8, MaxLeaves: 8}, 1, ReasonAggTail},
		{"resnet18 steady", AggregationLoad{Rate: 200, Bytes: resnet18, Goal: 100, Cores: 8, MaxLeaves: 8}, 3, ReasonAggTail},
		{"resnet18 burst, 8 cores", AggregationLoad{Rate: 2000, Bytes: resnet18, Goal: 100, Cores: 8, MaxLeaves: 16}, 8, ReasonAggCores},
		{"resnet18 burst, 2 cores", AggregationLoad{Rate: 2000, Bytes: resnet18, Goal: 100, Cores: 2, MaxLeaves: 4}, 2, ReasonAggCores},
		{"resnet18 burst, scale.max 3", AggregationLoad{Rate: 2000, Bytes: resnet18, Goal: 100, Cores: 8, MaxLeaves: 3}, 3, ReasonAggMax},
		{"resnet152 burst, room for 2 sums", AggregationLoad{Rate: 500, Bytes: resnet152, Goal: 10, Cores: 8, MaxLeaves: 8, Room: 2*resnet152 + resnet152/2}, 2, ReasonAggMemory},
		{"small at the same steady rate", AggregationLoad{Rate: 200, Bytes: small, Goal: 100, Cores: 8, MaxLeaves: 8}, 1, ReasonAggTail},
		{"small, fast arrivals", AggregationLoad{Rate: 10000, Bytes: small, Goal: 100, Cores: 8, MaxLeaves: 8}, 4, ReasonAggKeepsUp},
		{"measured fold slower than the default", AggregationLoad{Rate: 50, Bytes: small, Goal: 100, Fold: 30 * time.Millisecond, Cores: 8, MaxLeaves: 8}, 2, ReasonAggTail},
		{"deadline job, goal unknown", AggregationLoad{Rate: 400, Bytes: resnet18, Cores: 8, MaxLeaves: 8}, 5, ReasonAggTail},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := PlanAggregation(c.load)
			if p.Leaves != c.leaves || p.Reason != c.reason {
				t.Errorf("plan %v, want %d leaves (%s)", p, c.leaves, c.reason)
			}
			if c.load.Goal > 0 && p.PerLeaf*p.Leaves < c.load.Goal {
				t.Errorf("plan %v: %d leaves × %d updates < goal %d", p, p.Leaves, p.PerLeaf, c.load.Goal)
			}
			t.Logf("%s: %v", c.name, p)
		})
	}
}

// More load never means fewer leaves: the plan grows with the arrival rate
// at a size, and with the size at a rate (the folds take longer), up to
// its bound, and never leaves the arrivals outrunning the leaves when the
// bound allows more.
func TestPlanAggregationMonotone(t *testing.T) {
	rates := []float64{0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 20000}
	sizes := []int64{4 << 10, small, 4 << 20, resnet18, resnet152}
	for _, cores := range []int{1, 2, 8, 64} {
		for _, size := range sizes {
			prev := 0
			for _, r := range rates {
				l := AggregationLoad{Rate: r, Bytes: size, Goal: 100, Cores: cores, MaxLeaves: 32}
				p := PlanAggregation(l)
				if p.Leaves < prev {
					t.Errorf("cores %d size %d: rate %v: %d leaves, fewer than %d at a lower rate", cores, size, r, p.Leaves, prev)
				}
				prev = p.Leaves
				bound := min(cores, maxSums)
				if p.Leaves < 1 || p.Leaves > bound {
					t.Errorf("cores %d size %d rate %v: %d leaves", cores, size, r, p.Leaves)
				}
				tf := foldOverhead.Seconds() + float64(size)/DefaultFoldRate
				if p.Leaves < bound && r*tf >= float64(p.Leaves) {
					t.Errorf("cores %d size %d rate %v: %d leaves cannot keep up (%.2f leaf-seconds/s)", cores, size, r, p.Leaves, r*tf)
				}
			}
		}
		for _, r := range rates {
			prev := 0
			for _, size := range sizes {
				p := PlanAggregation(AggregationLoad{Rate: r, Bytes: size, Goal: 100, Cores: cores, MaxLeaves: 32})
				// Larger updates cost more to combine too: the plan may
				// level off, but a size that needs more leaves to keep
				// up gets them.
				if keep := int(r*(foldOverhead.Seconds()+float64(size)/DefaultFoldRate)) + 1; p.Leaves < min(keep, cores, maxSums) {
					t.Errorf("cores %d rate %v size %d: %d leaves, %d keep up", cores, r, size, p.Leaves, keep)
				}
				prev = max(prev, p.Leaves)
			}
		}
	}
}

// The plan is the best tail over the leaves it may use (ties: fewer).
func TestPlanAggregationIsBestTail(t *testing.T) {
	for _, l := range []AggregationLoad{
		{Rate: 300, Bytes: resnet18, Goal: 100, Cores: 32, MaxLeaves: 32},
		{Rate: 50, Bytes: resnet152, Goal: 10, Cores: 32, MaxLeaves: 32},
		{Rate: 3000, Bytes: small, Goal: 1000, Cores: 32, MaxLeaves: 32},
	} {
		p := PlanAggregation(l)
		tf := foldOverhead.Seconds() + float64(l.Bytes)/DefaultFoldRate
		tc := float64(l.Bytes) / DefaultCombineRate
		for n := 1; n <= 32; n++ {
			if n >= int(l.Rate*tf)+1 && tail(n, l.Goal, l.Rate, tf, tc) < tail(p.Leaves, l.Goal, l.Rate, tf, tc)*(1-1e-9) {
				t.Errorf("%+v: plan %v, but %d leaves have a shorter tail", l, p, n)
			}
		}
	}
}

func TestPlanAggregationAllocs(t *testing.T) {
	l := AggregationLoad{Rate: 300, Bytes: resnet18, Goal: 100, Cores: 8, MaxLeaves: 8}
	if n := testing.AllocsPerRun(100, func() { PlanAggregation(l) }); n != 0 {
		t.Errorf("%v allocations per plan", n)
	}
}
