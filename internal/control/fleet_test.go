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

	if ch := f.Wake(0, "a/warm", "a/gone", "nope"); len(ch) != 0 {
		t.Fatalf("wake of placed, removed and unknown functions: %v", ch)
	}
	ch := f.Wake(0, "a/cold", "a/cold")
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

// Wake also wakes the steps after a woken function in its chains (the
// request needs them next), and marks every woken function active: the
// tick after a wake, with the instance placed but nothing yet counted on
// it, keeps it instead of scaling an idle function to zero again.
func TestFleetWakeChainAndIdle(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"mu", "kpa"} {
		f, err := NewFleet(PlacementConfig{})
		if err != nil {
			t.Fatal(err)
		}
		f.Placer().SetNode("n1", Resources{4000, 8 << 30})
		scale := Config{Policy: policy, MinInstances: 0, MaxInstances: 5, SLO: 100 * time.Millisecond, Tick: time.Second}
		scale.Mu.IdlePeriod, scale.KPA.StableWindow, scale.KPA.ScaleToZeroGrace = time.Second, 10*time.Second, time.Second
		for _, fn := range []FleetFunction{
			{Name: "a/front", Links: []string{"a/mid"}},
			{Name: "a/mid", Links: []string{"a/back"}},
			{Name: "a/back"},
			{Name: "a/other"},
		} {
			fn.Demand, fn.Scale = Resources{250, 128 << 20}, scale
			if err := f.SetFunction(fn); err != nil {
				t.Fatal(err)
			}
		}
		idle := func(name string) Observation { return Observation{Starting: f.Placer().Placed(name)} }
		for s := range 30 { // long idle: everything at zero
			f.Tick(time.Duration(s)*time.Second, idle)
		}
		ch := f.Wake(30*time.Second, "a/front")
		woken := map[string]bool{}
		for _, c := range ch {
			woken[c.Function] = c.Delta == 1
		}
		if len(ch) != 3 || !woken["a/front"] || !woken["a/mid"] || !woken["a/back"] {
			t.Fatalf("%s: wake of a chain's first step: %v", policy, ch)
		}
		f.Tick(30*time.Second+300*time.Millisecond, idle)
		for _, name := range []string{"a/front", "a/mid", "a/back"} {
			if n := f.Placer().Placed(name); n != 1 {
				t.Errorf("%s: %s: %d placed the tick after its wake, want 1 (%+v)", policy, name, n, f.Decision(name))
			}
		}
		for s := 32; s < 50; s++ { // no request came: idle again
			f.Tick(time.Duration(s)*time.Second, idle)
		}
		if n := f.Placer().Placed("a/front"); n != 0 {
			t.Errorf("%s: still %d placed after the idle period", policy, n)
		}
	}
}
