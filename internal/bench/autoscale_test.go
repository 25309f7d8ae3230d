package bench

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/bench/load"
	"github.com/spry-dev/spry/internal/control/trace"
)

const ms1 = time.Millisecond

// req is a sample due at due ms, answered after lat ms.
func req(due, lat float64) load.Sample {
	d := time.Duration(due * float64(ms1))
	return load.Sample{Due: d, Done: d + time.Duration(lat*float64(ms1))}
}

func TestPerSecond(t *testing.T) {
	t.Parallel()
	// Origin 1000 ms (the warm-up before it is not counted), trace seconds
	// of 100 ms (speedup 10), threshold 50 ms.
	var s []load.Sample
	s = append(s, req(500, 500)) // warm-up: ignored, however slow
	// Second 0: 100 fast requests and one slow: the p99 of 101 is the
	// 100th value, fast.
	for i := range 100 {
		s = append(s, req(1000+float64(i)*0.5, 5))
	}
	s = append(s, req(1010, 80))
	// Second 1: 10 requests, one slow: under 100 requests the p99 is the
	// slowest, a violation.
	for i := range 9 {
		s = append(s, req(1100+float64(i), 5))
	}
	s = append(s, req(1100, 60))
	// Second 2: nothing completes (no violation). Second 3: a failure.
	s = append(s, load.Sample{Due: 1300 * ms1, Done: 1310 * ms1, Failed: true}, req(1300, 1))
	// A request due in second 3 that completes after the trace's 5
	// seconds, in second 7.
	s = append(s, req(1350, 400))
	got := perSecond(s, 1000*ms1, 100*ms1, 5, 50*ms1)
	if len(got) != 8 {
		t.Fatalf("%d seconds, want 8 (5 of the trace, and up to the late completion)", len(got))
	}
	want := []struct {
		n, over, failed int
		viol            bool
	}{{101, 1, 0, false}, {10, 1, 0, true}, {0, 0, 0, false}, {2, 1, 1, true}, {0, 0, 0, false}, {0, 0, 0, false}, {0, 0, 0, false}, {1, 1, 0, true}}
	for k, w := range want {
		g := got[k]
		if g.Requests != w.n || g.Over != w.over || g.Failed != w.failed || g.Violated != w.viol {
			t.Errorf("second %d: %+v, want %+v", k, g, w)
		}
	}
	if got[0].P99 != 5*ms1 || got[1].P99 != 60*ms1 || got[3].P99 != failedLatency {
		t.Errorf("p99s %v %v %v", got[0].P99, got[1].P99, got[3].P99)
	}

	p50, p99, n := latencyQuantiles(s, 1000*ms1)
	if n != 113 || p50 != 5*ms1 || p99 != 80*ms1 {
		t.Errorf("latencyQuantiles = %v, %v, %d", p50, p99, n)
	}
}

func TestNearestRank(t *testing.T) {
	t.Parallel()
	v := make([]time.Duration, 200)
	for i := range v {
		v[i] = time.Duration(i + 1)
	}
	for _, c := range []struct {
		n    int
		q    float64
		want time.Duration
	}{{200, 0.99, 198}, {200, 0.5, 100}, {100, 0.99, 99}, {99, 0.99, 99}, {10, 0.99, 10}, {1, 0.99, 1}, {1, 0.5, 1}} {
		if got := nearestRank(v[:c.n], c.q); got != c.want {
			t.Errorf("nearestRank(1..%d, %v) = %v, want %v", c.n, c.q, got, c.want)
		}
	}
	if nearestRank(nil, 0.99) != 0 {
		t.Error("empty")
	}
}

func TestIntegrate(t *testing.T) {
	t.Parallel()
	sec := time.Second
	steps := []countStep{{-2 * sec, 3}, {1 * sec, 5}, {2500 * time.Millisecond, 1}, {10 * sec, 7}}
	for _, c := range []struct {
		initial  int
		from, to time.Duration
		want     float64
	}{
		{1, 0, 4 * sec, 3*1 + 5*1.5 + 1*1.5},        // the step before from sets the count
		{1, -3 * sec, 0, 1*1 + 3*2},                 // initial before the first step
		{1, 1 * sec, 2 * sec, 5},                    // a step exactly at from
		{1, 3 * sec, 3 * sec, 0},                    // empty
		{1, 9 * sec, 12 * sec, 1 + 7*2},             // across the last step
		{4, 0, sec, 3},                              // initial does not matter after a step
		{2, 20 * sec, 21 * sec, 7},                  // after all steps
		{0, 2500 * time.Millisecond, 10 * sec, 7.5}, // a step exactly at from, one exactly at to
	} {
		if got := integrate(steps, c.initial, c.from, c.to); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("integrate(%v..%v, initial %d) = %v, want %v", c.from, c.to, c.initial, got, c.want)
		}
	}
	if got := integrate(nil, 2, 0, 3*sec); got != 6 {
		t.Errorf("no steps: %v", got)
	}
	if countAt(steps, 9, -5*sec) != 9 || countAt(steps, 9, sec) != 5 || countAt(steps, 9, 11*sec) != 7 {
		t.Error("countAt")
	}
}

func TestCountEventsAndAccount(t *testing.T) {
	t.Parallel()
	sec := time.Second
	evs := []scaleEvent{
		{At: -sec, From: 1, To: 2, Reason: "load"}, // before the trace
		{At: 1 * sec, From: 2, To: 4, Reason: "queue"},
		{At: 2 * sec, From: 4, To: 4, Reason: "load"}, // no change
		{At: 3 * sec, From: 4, To: 0, Reason: "idle"},
		{At: 3500 * time.Millisecond, From: 0, To: 1, Reason: "cold-start"},
		{At: 5 * sec, From: 1, To: 3, Reason: "load"}, // after the trace
	}
	all, up, down := countEvents(evs, 0, 4*sec)
	if all != 3 || up != 2 || down != 1 {
		t.Errorf("countEvents = %d (%d up, %d down), want 3 (2, 1)", all, up, down)
	}
	// A trace of 40 seconds at speedup 10 (4 s of wall time), starting 0.
	in := policyInputs{policy: "mu", events: evs, initial: 1, origin: 0, sec: 100 * time.Millisecond, n: 40, speedup: 10,
		slo: 50 * ms1, overhead: ms1, scheduled: 3,
		samples: []load.Sample{req(0, 10), req(50, 70), req(3950, 2)},
		polls:   []statusPoll{{At: 0, Ready: 2, RPS: 100, Attainment: 1}, {At: 2 * sec, Ready: 4, RPS: 100, Attainment: 0.5}, {At: 4 * sec}}}
	p := account(in)
	// Wall instance-seconds: 2×1 + 4×2 + 0×0.5 + 1×0.5 = 10.5; × 10.
	if math.Abs(p.InstanceSecondsWall-10.5) > 1e-9 || math.Abs(p.InstanceSeconds-105) > 1e-9 {
		t.Errorf("instance-seconds %v (wall %v), want 105 (10.5)", p.InstanceSeconds, p.InstanceSecondsWall)
	}
	// Polled: 2×2 + 4×2 = 12 wall.
	if math.Abs(p.InstanceSecondsPolled-120) > 1e-9 {
		t.Errorf("polled instance-seconds %v, want 120", p.InstanceSecondsPolled)
	}
	if p.ScaleEvents != 3 || p.ScaleUps != 2 || p.ScaleDowns != 1 || p.ColdStarts != 1 {
		t.Errorf("events %d (%d/%d), cold starts %d", p.ScaleEvents, p.ScaleUps, p.ScaleDowns, p.ColdStarts)
	}
	if p.MaxInstances != 4 || math.Abs(p.MeanInstances-10.5/4) > 1e-9 {
		t.Errorf("max %d mean %v", p.MaxInstances, p.MeanInstances)
	}
	// The 70 ms request (due at 50 ms, done at 120 ms) is in second 1,
	// over the threshold of 51 ms.
	if p.SLOViolationSeconds != 1 || p.Requests != 3 || math.Abs(p.RequestsOverSLOFraction-1.0/3) > 1e-9 || p.Unanswered != 0 {
		t.Errorf("violations %d, requests %d, over %v, unanswered %d", p.SLOViolationSeconds, p.Requests, p.RequestsOverSLOFraction, p.Unanswered)
	}
	if p.ThresholdMillis != 51 || p.P50 != 10 || p.P99 != 70 {
		t.Errorf("threshold %v p50 %v p99 %v", p.ThresholdMillis, p.P50, p.P99)
	}
	// Node: 100 req/s for 2 s all within, then 2 s half over: 100/400.
	if math.Abs(p.NodeOverSLOFraction-0.25) > 1e-9 {
		t.Errorf("node over SLO %v, want 0.25", p.NodeOverSLOFraction)
	}
}

func TestParseScaleLine(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		line string
		ok   bool
		want scaleEvent
	}{
		{`time=2026-11-25T09:06:05.622Z level=INFO msg=scale app=try function=step from=1 to=3 reason=load rps=3 predicted=3.0 queue=0`,
			true, scaleEvent{From: 1, To: 3, Reason: "load"}},
		{`time=2026-11-25T09:06:05.622Z level=INFO msg="cold start" app=try function=step`, true, scaleEvent{From: 0, To: 1, Reason: "cold-start"}},
		{`time=2026-11-25T09:06:05.622Z level=INFO msg=scale app=try function=other from=1 to=3 reason=load`, false, scaleEvent{}},
		{`time=2026-11-25T09:06:05.632Z level=INFO msg="instance ready" app=try function=step slot=1 id=3 pid=19093 start=4.06ms`, false, scaleEvent{}},
		{`time=2026-11-25T09:06:04.623Z level=WARN msg=autoscaler app=try function=step warning="slo not above mean execution time: x"`, false, scaleEvent{}},
		{`[try/step#2] some output of the function`, false, scaleEvent{}},
		{`time=bad level=INFO msg=scale function=step from=1 to=2`, false, scaleEvent{}},
	} {
		e, ok := parseScaleLine(c.line, "step")
		if ok != c.ok || (ok && e.scaleEvent != c.want) {
			t.Errorf("%s: %+v %v, want %+v %v", c.line, e.scaleEvent, ok, c.want, c.ok)
		}
		if ok && e.abs != time.Date(2026, 11, 25, 9, 6, 5, 622e6, time.UTC) {
			t.Errorf("%s: time %v", c.line, e.abs)
		}
	}
}

func TestTraceSchedule(t *testing.T) {
	t.Parallel()
	tr := trace.Trace{RPS: []float64{100, 0, 300, 50}, Interval: 1}
	count := func(s *traceSchedule) (n [5]int, offs []time.Duration) {
		for {
			off, ok := s.Next()
			if !ok {
				return n, offs
			}
			if len(offs) > 0 && off < offs[len(offs)-1] {
				t.Fatalf("went back in time: %v after %v", off, offs[len(offs)-1])
			}
			offs = append(offs, off)
			// Warm-up 1 s, then 4 trace seconds of 250 ms (speedup 4).
			k := 0
			if off >= time.Second {
				k = 1 + int((off-time.Second)/(250*time.Millisecond))
			}
			n[k]++
		}
	}
	// Evenly spaced, rate × 2: exactly rate × 2 × 250 ms per second.
	u, offs := count(newTraceSchedule(tr, 4, 2, time.Second, false, 1))
	if u != [5]int{200, 50, 0, 150, 25} {
		t.Errorf("uniform counts %v", u)
	}
	if offs[1]-offs[0] != 5*time.Millisecond {
		t.Errorf("uniform spacing %v at 200 req/s", offs[1]-offs[0])
	}
	// Poisson: the same in expectation, deterministic per seed.
	var tot [5]int
	for seed := range uint64(40) {
		p, _ := count(newTraceSchedule(tr, 4, 2, time.Second, true, seed+1))
		for k := range p {
			tot[k] += p[k]
		}
		if seed == 0 {
			p2, _ := count(newTraceSchedule(tr, 4, 2, time.Second, true, 1))
			if p != p2 {
				t.Errorf("same seed, different arrivals: %v %v", p, p2)
			}
		}
	}
	for k, want := range []float64{200, 50, 0, 150, 25} {
		if got := float64(tot[k]) / 40; math.Abs(got-want) > 4*math.Sqrt(want/40)+0.01 {
			t.Errorf("poisson second %d: mean %v, want %v", k, got, want)
		}
	}
	s := newTraceSchedule(tr, 4, 2, time.Second, true, 1)
	if e := s.expected(time.Second); e != 225 {
		t.Errorf("expected %v", e)
	}
}

func TestLoadTraceAndDefaults(t *testing.T) {
	t.Parallel()
	for _, g := range GeneratorNames {
		tr, name, err := LoadTrace(g+":3", 100)
		if err != nil || len(tr.RPS) != 100 || name != g+":3" {
			t.Errorf("%s: %v, %d samples, %q", g, err, len(tr.RPS), name)
		}
	}
	if _, name, err := LoadTrace("bursty", 10); err != nil || name != "bursty:1" {
		t.Errorf("default seed: %q %v", name, err)
	}
	for _, bad := range []string{"bursty:x", "nosuch", "/nonexistent/trace.json"} {
		if _, _, err := LoadTrace(bad, 10); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "t.json")
	os.WriteFile(p, []byte(`{"rps": [1, 2, 3], "interval": 1}`), 0o644)
	if tr, name, err := LoadTrace(p, 0); err != nil || len(tr.RPS) != 3 || name != "t.json" {
		t.Errorf("file: %v %q", err, name)
	}

	// The default rate scale puts the peak at 60% of the cores.
	tr := trace.Trace{RPS: []float64{100, 230}, Interval: 1}
	if s := autoRateScale(tr, 5*time.Millisecond, 2, 0.6); s != 1 {
		t.Errorf("autoRateScale = %v, want 1.0 (1.2/1.15 to two digits)", s)
	}
	if s := autoRateScale(tr, 10*time.Millisecond, 2, 0.6); s != 0.52 {
		t.Errorf("autoRateScale = %v, want 0.52", s)
	}
	// Windows: compressed by the speedup; kpa's no shorter than 10 s.
	if w, i := windows("mu", 10); w != 3*time.Second || i != 6*time.Second {
		t.Errorf("mu windows %v %v", w, i)
	}
	if w, i := windows("kpa", 10); w != 10*time.Second || i != 3*time.Second {
		t.Errorf("kpa windows %v %v", w, i)
	}
	if w, i := windows("kpa", 1); w != 60*time.Second || i != 30*time.Second {
		t.Errorf("kpa windows at speedup 1: %v %v", w, i)
	}
}

// The whole path on a real node: a short generated trace replayed fast,
// one policy. The report is complete and consistent, every request is
// answered, and no process is left.
func TestAutoscaleEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := RunAutoscale(ctx, AutoscaleOptions{
		Trace: "ramp:2", Length: 20, Policies: []string{"mu"}, Speedup: 20, RateScale: 0.5,
		StepCPU: time.Millisecond, SLO: 50 * time.Millisecond, Max: 4, Connections: 8,
		Warmup: 500 * time.Millisecond, Exe: spryBin,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Policies) != 1 {
		t.Fatalf("%d policy results", len(rep.Policies))
	}
	p := rep.Policies[0]
	if p.Policy != "mu" || p.Requests == 0 || p.Errors != 0 || p.Unanswered != 0 {
		t.Errorf("%s: %d answered, %d errors, %d unanswered: %s", p.Policy, p.Requests, p.Errors, p.Unanswered, p.FirstError)
	}
	// 20 trace seconds at 0.5 × 40..230 req/s last 1 s at speedup 20 (the
	// rate is not scaled): ~67 requests expected.
	if p.Requests < 35 || p.Requests > 110 {
		t.Errorf("%d requests measured, want ~67", p.Requests)
	}
	// At least one instance throughout 20 trace seconds.
	if p.InstanceSeconds < 20 || p.InstanceSecondsPolled <= 0 || p.MaxInstances < 1 {
		t.Errorf("instance-seconds %v (polled %v), max %d", p.InstanceSeconds, p.InstanceSecondsPolled, p.MaxInstances)
	}
	if p.Seconds < 20 || p.SLOViolationSeconds > p.Seconds || p.RequestsOverSLOFraction < 0 || p.RequestsOverSLOFraction > 1 {
		t.Errorf("%d violation seconds of %d, over %v", p.SLOViolationSeconds, p.Seconds, p.RequestsOverSLOFraction)
	}
	if !(p.P50 > 0 && p.P99 >= p.P50) || p.ThresholdMillis < 50 || p.ExecMillis <= 0 {
		t.Errorf("p50 %v p99 %v threshold %v exec %v", p.P50, p.P99, p.ThresholdMillis, p.ExecMillis)
	}
	if rep.Speedup != 20 || rep.Settings.RateScale != 0.5 || rep.Settings.TraceSamples != 20 {
		t.Errorf("settings %+v", rep.Settings)
	}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.json", "report.md", "autoscale.png", "timeline-mu.csv", "node-mu.log"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	var js struct {
		Trace    string
		Speedup  float64
		Policies []map[string]any
	}
	b, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	if js.Trace != "ramp:2" || js.Speedup != 20 || len(js.Policies) != 1 {
		t.Fatalf("report.json: %s", b[:min(len(b), 300)])
	}
	for _, k := range []string{"policy", "slo_violation_seconds", "requests_over_slo_fraction", "instance_seconds", "scale_events", "p50_ms", "p99_ms"} {
		if _, ok := js.Policies[0][k]; !ok {
			t.Errorf("report.json: no %q", k)
		}
	}
	if left := children(t); len(left) > 0 {
		t.Fatalf("processes left running: %v", left)
	}
}

// The replay on a local cluster of three agents: a short trace, one
// policy. The controller sizes on the heartbeats, the load goes to every
// node's gateway, every request is answered, the report has each node's
// share (adding up to the cluster's), and no process is left.
func TestAutoscaleCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a local cluster")
	}
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rep, err := RunAutoscale(ctx, AutoscaleOptions{
		Trace: "ramp:2", Length: 20, Policies: []string{"mu"}, Speedup: 10, RateScale: 0.3,
		StepCPU: time.Millisecond, SLO: 50 * time.Millisecond, Max: 4, Connections: 9,
		Warmup: 500 * time.Millisecond, Exe: spryBin, Nodes: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Policies[0]
	if p.Requests == 0 || p.Errors != 0 || p.Unanswered != 0 {
		t.Errorf("%d answered, %d errors, %d unanswered: %s", p.Requests, p.Errors, p.Unanswered, p.FirstError)
	}
	if rep.Settings.Nodes != 3 || len(p.Nodes) != 3 {
		t.Fatalf("nodes: settings %d, %d shares", rep.Settings.Nodes, len(p.Nodes))
	}
	sum, sent := 0.0, 0
	for _, n := range p.Nodes {
		if n.Requests == 0 {
			t.Errorf("node %s: no requests sent to its gateway", n.Node)
		}
		sum += n.InstanceSeconds
		sent += n.Requests
	}
	if p.InstanceSecondsPolled <= 0 || math.Abs(sum-p.InstanceSecondsPolled) > 0.05*p.InstanceSecondsPolled+1 {
		t.Errorf("the nodes' instance-seconds add up to %.1f, the cluster's polled %.1f", sum, p.InstanceSecondsPolled)
	}
	if p.InstanceSeconds <= 0 || p.MaxInstances < 1 {
		t.Errorf("instance-seconds %v, max %d", p.InstanceSeconds, p.MaxInstances)
	}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "nodes-mu.csv"))
	if err != nil || !strings.HasPrefix(string(b), "trace_s,offered_rps,instances,node-1,node-2,node-3\n") {
		t.Errorf("nodes-mu.csv: %v %.200s", err, b)
	}
	if md, _ := os.ReadFile(filepath.Join(dir, "report.md")); !strings.Contains(string(md), "Instances per node") {
		t.Errorf("report.md has no instances per node")
	}
	if left := children(t); len(left) > 0 {
		t.Fatalf("processes left running: %v", left)
	}
}

// Cold starts of the four kinds, once each: every answer says when its
// handler started, the node's startMillis is there, and nothing is left.
func TestColdStartEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes and builds a go: function")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := RunColdStart(ctx, ColdStartOptions{Runs: 1, GoDir: "../../bench/startprobe/fn", Exe: spryBin})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Kinds) != 4 {
		t.Fatalf("%d kinds", len(rep.Kinds))
	}
	for i, k := range rep.Kinds {
		if k.Kind != []string{"builtin", "go", "exec", "wasm"}[i] {
			t.Errorf("kind %d: %s", i, k.Kind)
		}
		// The handler started after the instance did, and the client saw
		// at least that.
		if !(k.FirstWork.Median > 0 && k.Start.Median > 0 && k.Client.Median >= k.FirstWork.Median && k.Warm.Median > 0) {
			t.Errorf("%s: %+v", k.Kind, k)
		}
	}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	if left := children(t); len(left) > 0 {
		t.Fatalf("processes left running: %v", left)
	}
}

func TestStatsOf(t *testing.T) {
	t.Parallel()
	s := statsOf([]float64{3, 1, 2, 10})
	if s.Median != 2.5 || s.Min != 1 || s.Max != 10 || len(s.Values) != 4 || s.Values[0] != 3 {
		t.Errorf("%+v", s)
	}
	if s := statsOf([]float64{5, 1, 3}); s.Median != 3 {
		t.Errorf("odd: %+v", s)
	}
	if s := statsOf(nil); s.Median != 0 {
		t.Errorf("empty: %+v", s)
	}
}
