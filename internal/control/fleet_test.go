package control

import (
	"testing"
	"time"
)

// A function at zero instances gets one at once when a request waits for
// it (Wake), without an autoscaler tick; one that has instances, or is
// unknown or removed, is left alone. The next tick sizes it as usual.
func TestFleetWake(t *testing.T) {
	t.Parallel()
	f, err := NewFleet(PlacementConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f.Placer().SetNode("n1", Resources{4000, 8 << 30})
	scale := Config{MinInstances: 0, MaxInstances: 5, SLO: 100 * time.Millisecond}
	for _, name := range []string{"a/cold", "a/warm", "a/gone"} {
		if err := f.SetFunction(FleetFunction{Name: name, Demand: Resources{250, 128 << 20}, Scale: scale}); err != nil {
			t.Fatal(err)
		}
	}
	f.Placer().SetDesired("a/warm", 2)
	f.Placer().Place()
	f.RemoveFunction("a/gone")

	if ch := f.Wake("a/warm", "a/gone", "nope"); len(ch) != 0 {
		t.Fatalf("wake of placed, removed and unknown functions: %v", ch)
	}
	ch := f.Wake("a/cold", "a/cold")
	if len(ch) != 1 || ch[0].Function != "a/cold" || ch[0].Node != "n1" || ch[0].Delta != 1 || f.Placer().Placed("a/cold") != 1 {
		t.Fatalf("wake: %v, placed %d", ch, f.Placer().Placed("a/cold"))
	}
	if f.Decision("a/cold") != (Decision{}) {
		t.Fatalf("wake ticked the autoscaler: %v", f.Decision("a/cold"))
	}
	// The tick sees the waiting request (queued) on the instance starting
	// and keeps it.
	f.Tick(time.Second, func(name string) Observation {
		if name == "a/cold" {
			return Observation{Queued: 1, Starting: 1}
		}
		return Observation{Ready: f.Placer().Placed(name)}
	})
	if d := f.Decision("a/cold"); d.Desired < 1 || f.Placer().Placed("a/cold") < 1 {
		t.Fatalf("after the tick: %v, placed %d", d, f.Placer().Placed("a/cold"))
	}
}
