package controller

import (
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/control"
)

// TestObservationOverHeartbeatTime: a round's counters are the nodes'
// rates over the time their heartbeats cover, scaled to the round's
// interval — not the raw delta since the heartbeat the last round saw,
// which with heartbeats every 250 ms covers 0.75–1.25 s of a 1 s round,
// or nothing when a round sees the same heartbeat again.
func TestObservationOverHeartbeatTime(t *testing.T) {
	ctl, err := NewController(nil, ControllerConfig{Period: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const fn = "ns/app/step"
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	nodes := map[string]*nodeState{}
	pending := map[string]*SpryNode{}
	// beat writes node's heartbeat at agent time at, with arrivals at
	// rps since t0 (completions alike, 2 ms busy each).
	beat := func(node string, at time.Duration, rps float64) {
		st := nodes[node]
		if st == nil {
			st = &nodeState{up: true, last: map[string]api.FunctionCounts{}, rates: map[string]fnRates{}, obs: map[string]control.Observation{}}
			nodes[node] = st
			ctl.nodes[node] = st
		}
		n := uint64(rps * at.Seconds())
		hb := t0.Add(at)
		pending[node] = &SpryNode{Status: api.NodeStatus{Heartbeat: &hb, Boot: "b1", Functions: []api.FunctionCounts{{
			App: "ns/app", Function: "step", Arrivals: n, Completions: n, BusyNanos: n * 2e6, Ready: 1}}}}
	}
	// round runs the controller's per-round bookkeeping at controller
	// time at and returns the function's observation.
	round := func(at time.Duration) (arrivals uint64, busy time.Duration) {
		now := t0.Add(at)
		ctl.begin(now)
		for name, st := range nodes {
			ctl.observe(pending[name], st, now)
		}
		o := ctl.observation(fn)
		return o.Arrivals, o.Busy
	}
	ms := time.Millisecond

	beat("n1", 250*ms, 100)
	beat("n2", 100*ms, 300)
	if a, _ := round(1000 * ms); a != 0 {
		t.Fatalf("first round: %d arrivals, want 0 (no rate yet)", a)
	}
	// The next round sees heartbeats 0.75 s (n1) and 1.25 s (n2) later:
	// 75 and 375 arrivals, but the nodes ran at 100 and 300 req/s.
	beat("n1", 1000*ms, 100)
	beat("n2", 1350*ms, 300)
	if a, busy := round(2000 * ms); a != 400 || busy != 800*ms {
		t.Fatalf("round 2: %d arrivals, busy %v; want 400 (100 + 300 req/s over 1 s), 800ms", a, busy)
	}
	// A round that sees n1's heartbeat again keeps its rate.
	beat("n2", 2350*ms, 300)
	if a, _ := round(3000 * ms); a != 400 {
		t.Fatalf("round 3 (n1's heartbeat unchanged): %d arrivals, want 400", a)
	}
	// A longer round scales the rates to its length.
	beat("n1", 3250*ms, 100)
	beat("n2", 3600*ms, 300)
	if a, _ := round(4500 * ms); a != 600 {
		t.Fatalf("round of 1.5 s: %d arrivals, want 600", a)
	}
	// n1 stops writing heartbeats (its lease still fresh): after
	// staleRounds periods its rate no longer counts.
	for i, at := range []time.Duration{5500, 6500, 7500, 8500} {
		beat("n2", (at-100)*ms, 300)
		a, _ := round(at * ms)
		want := uint64(400)
		if i == 3 {
			want = 300
		}
		if a != want {
			t.Fatalf("round at %v with n1 silent: %d arrivals, want %d", at*ms, a, want)
		}
	}
}
