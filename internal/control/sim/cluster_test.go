package sim

import (
	"testing"

	"github.com/spry-dev/spry/internal/control"
)

// TestClusterSmall runs the cluster simulation small and checks what its
// report promises: every policy, in order, figures in range, and DRF
// fairer than the spreading baseline.
func TestClusterSmall(t *testing.T) {
	rep, err := Cluster(ClusterConfig{Nodes: 20, Functions: 200, Ticks: 60, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Policies) != len(control.Strategies) {
		t.Fatalf("%d policies", len(rep.Policies))
	}
	by := map[string]PolicyResult{}
	for i, p := range rep.Policies {
		if p.Policy != control.Strategies[i] {
			t.Errorf("policy %d is %q", i, p.Policy)
		}
		for name, v := range map[string]float64{"jain": p.JainFairness, "held": p.ResourcesHeld, "local": p.LocalHopFraction, "slo": p.SLOMetFraction} {
			if !(v >= 0 && v <= 1+1e-9) {
				t.Errorf("%s: %s = %v, want in [0, 1]", p.Policy, name, v)
			}
		}
		if p.Unfairness < 0 || p.DecisionMsP99 < p.DecisionMsP50 || p.MemoryBytes == 0 || p.Instances <= 0 {
			t.Errorf("%s: %+v", p.Policy, p)
		}
		by[p.Policy] = p
		t.Logf("%+v", p)
	}
	if d, s := by[control.StrategyAlignment], by[control.StrategySpread]; d.Unfairness >= s.Unfairness || d.LocalHopFraction <= s.LocalHopFraction {
		t.Errorf("drf-alignment unfairness %.3f local %.3f, spread %.3f %.3f", d.Unfairness, d.LocalHopFraction, s.Unfairness, s.LocalHopFraction)
	}
}

func TestClusterBadConfig(t *testing.T) {
	for _, c := range []ClusterConfig{{Nodes: 0, Functions: 1}, {Nodes: 1, Functions: 0}, {Nodes: 1, Functions: 1, Ticks: -1}, {Nodes: 1, Functions: 1, Overcommit: -1}} {
		if _, err := Cluster(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
