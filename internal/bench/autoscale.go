package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spry-dev/spry/bench"
	"github.com/spry-dev/spry/internal/bench/load"
	"github.com/spry-dev/spry/internal/bench/proc"
	"github.com/spry-dev/spry/internal/control/trace"
)

// AutoscaleOptions configure `spry bench autoscale`: a request-rate trace
// replayed against a one-step chain with a CPU-bound step, on a real node per
// policy.
type AutoscaleOptions struct {
	Trace     string        // a trace file, or a generator: bursty, idlegaps, ramp, diurnal, with :SEED
	Length    int           // generated traces: seconds (default 1440, as the Azure traces)
	Policies  []string      // mu, kpa, fixed (default mu, kpa)
	Speedup   float64       // trace seconds per wall second (default 10)
	RateScale float64       // multiplies the trace's rates (0: fit the peak to the machine)
	SLO       time.Duration // the step's SLO (default 50ms)
	// Attainment is mu's scale.attainment (0: the default, 0.99).
	Attainment  float64
	StepCPU     time.Duration // CPU per request (default 5ms)
	Min, Max    int           // scale.min, scale.max (defaults 0 and 10)
	Fixed       int           // the fixed policy's instances (0: sized for the peak at 70%)
	Connections int           // load generator connections (default 128)
	Warmup      time.Duration // at the trace's first rate, not measured (default 5s)
	Uniform     bool          // evenly spaced arrivals instead of Poisson
	Seed        uint64        // of the Poisson arrivals
	Poll        time.Duration // how often /v1/status is read (default 100ms)
	// Nodes > 1 replays on a local cluster of that many node agents
	// (spry-controller local): the controller's autoscaler on the
	// agents' heartbeats, DRF placement, the load split over every
	// node's gateway. 0 or 1: one node, its own autoscaler.
	Nodes int
	Exe   string    // the spry executable (default: this one)
	Dir   string    // scratch directory (default: a temporary one, removed)
	Log   io.Writer // progress (nil: quiet)
}

// Defaults of `spry bench autoscale`.
const (
	DefaultSpeedup = 10
	DefaultSLO     = 50 * time.Millisecond
	DefaultStepCPU = 5 * time.Millisecond
	// peakShare is the share of the machine's cores the trace's peak needs
	// with the default --rate-scale: enough that the peak needs several
	// instances, with room left for the gateway, the load generator and
	// the noise of a shared machine.
	peakShare = 0.6
	// drainGrace is how long the replay waits, after the trace's last
	// arrival, for every answer.
	drainGrace = 60 * time.Second
)

// The node's control period (internal/node: controlPeriod), which the
// replay compresses the trace against.
const nodeControlPeriod = time.Second

// Policy windows in trace time (the policies' defaults, docs/config.md).
// The replay divides them by the speedup, so that they span the same part
// of the trace as they would in real time.
var policyWindows = map[string][2]time.Duration{ // window, idle
	"mu":  {30 * time.Second, 60 * time.Second},
	"kpa": {60 * time.Second, 30 * time.Second},
}

// kpaMinWindow: kpa's panic window is a tenth of its stable window and
// must hold one 1 s sample, so the stable window cannot be compressed
// below 10 s of wall time.
const kpaMinWindow = 10 * time.Second

func (o *AutoscaleOptions) defaults() error {
	if o.Length == 0 {
		o.Length = 1440
	}
	if len(o.Policies) == 0 {
		o.Policies = []string{"mu", "kpa"}
	}
	for _, p := range o.Policies {
		if p != "mu" && p != "kpa" && p != "fixed" {
			return fmt.Errorf("bench autoscale: policy %q: want mu, kpa or fixed", p)
		}
	}
	if o.Speedup == 0 {
		o.Speedup = DefaultSpeedup
	}
	if !(o.Speedup > 0 && o.Speedup <= 1000) {
		return fmt.Errorf("bench autoscale: --speedup %v: want (0, 1000]", o.Speedup)
	}
	if o.RateScale < 0 {
		return fmt.Errorf("bench autoscale: --rate-scale %v: want > 0 (or 0 for the machine's default)", o.RateScale)
	}
	if o.SLO == 0 {
		o.SLO = DefaultSLO
	}
	if o.StepCPU == 0 {
		o.StepCPU = DefaultStepCPU
	}
	if o.SLO < 0 || o.StepCPU < 0 {
		return fmt.Errorf("bench autoscale: --slo and --cpu must be positive")
	}
	if o.Max == 0 {
		o.Max = 10
	}
	if o.Min < 0 || o.Max < 1 || o.Min > o.Max || o.Max > 256 {
		return fmt.Errorf("bench autoscale: --min %d --max %d: want 0 ≤ min ≤ max, 1 ≤ max ≤ 256", o.Min, o.Max)
	}
	if o.Connections == 0 {
		o.Connections = 128
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	if o.Nodes < 0 || o.Nodes > 16 {
		return fmt.Errorf("bench autoscale: --nodes %d: want 1..16 (0: one node)", o.Nodes)
	}
	return nil
}

// RunAutoscale replays the trace against each policy in turn and reports.
func RunAutoscale(ctx context.Context, o AutoscaleOptions) (*AutoscaleReport, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	logf := lineLogger(o.Log)
	tr, name, err := LoadTrace(o.Trace, o.Length)
	if err != nil {
		return nil, err
	}
	cleanup, err := workspace(&o.Exe, &o.Dir, "spry-autoscale-")
	defer cleanup()
	if err != nil {
		return nil, err
	}

	cores := runtime.NumCPU()
	if o.RateScale == 0 {
		o.RateScale = autoRateScale(tr, o.StepCPU, cores, peakShare)
	}
	workRate := bench.Calibrate()
	w, err := bench.New("chain", bench.Options{Steps: 1, StepCPU: o.StepCPU, WorkRate: workRate})
	if err != nil {
		return nil, err
	}
	bench.Configure(w.Settings)
	reqs, _, err := prepare(w)
	if err != nil {
		return nil, err
	}

	sec := time.Duration(tr.Interval / o.Speedup * float64(time.Second)) // one trace sample, in wall time
	rep := &AutoscaleReport{
		Trace: name, Speedup: o.Speedup, Machine: machine(),
		Settings: AutoscaleSettings{
			TraceSamples: len(tr.RPS), TraceInterval: tr.Interval, TracePeak: tr.Peak(), TraceMean: tr.Mean(),
			RateScale: o.RateScale, PeakRPS: tr.Peak() * o.RateScale, MeanRPS: tr.Mean() * o.RateScale,
			StepCPUMillis: ms(o.StepCPU), WorkRate: workRate,
			PeakCores: tr.Peak() * o.RateScale * o.StepCPU.Seconds(), Cores: cores,
			SLOMillis: ms(o.SLO), Min: o.Min, Max: o.Max, Concurrency: 1, Connections: o.Connections,
			Arrivals: "poisson", Seed: o.Seed, WarmupSeconds: o.Warmup.Seconds(),
			WallSecondsPerTraceSecond:    sec.Seconds() / tr.Interval,
			TraceSecondsPerControlPeriod: nodeControlPeriod.Seconds() * o.Speedup,
			StatusPollMillis:             ms(o.Poll),
			MuSLOWindowMillis:            ms(sloWindow(o.Speedup)),
			MuAttainment:                 o.Attainment,
			WallSeconds:                  (time.Duration(len(tr.RPS)) * sec).Seconds(),
			Nodes:                        max(o.Nodes, 1),
		},
	}
	if o.Uniform {
		rep.Settings.Arrivals = "uniform"
	}
	logf("bench autoscale: trace %s (%d × %gs, %.0f–%.0f req/s, mean %.0f), × %.3g rate scale → peak %.0f req/s × %s CPU = %.2f of %d cores; speedup %g (%.0f s of wall time per policy)",
		name, len(tr.RPS), tr.Interval, minRate(tr), tr.Peak(), tr.Mean(), o.RateScale, rep.Settings.PeakRPS, o.StepCPU, rep.Settings.PeakCores, cores, o.Speedup, rep.Settings.WallSeconds)

	for _, pol := range o.Policies {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		logf("bench autoscale: %s", pol)
		run := runPolicy
		if o.Nodes > 1 {
			run = runClusterPolicy
		}
		pr, err := run(ctx, o, pol, tr, sec, w, reqs)
		if err != nil {
			return nil, fmt.Errorf("bench autoscale: %s: %w", pol, err)
		}
		logf("bench autoscale:   %s", pr.String())
		rep.Policies = append(rep.Policies, *pr)
	}
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func minRate(t trace.Trace) float64 {
	m := math.Inf(1)
	for _, r := range t.RPS {
		m = min(m, r)
	}
	return m
}

// windows returns the policy's scale.window and scale.idle for the replay:
// the defaults compressed by the speedup (see policyWindows).
func windows(policy string, speedup float64) (window, idle time.Duration) {
	d, ok := policyWindows[policy]
	if !ok {
		return 0, 0
	}
	round := func(x time.Duration) time.Duration { return max(x.Round(10*time.Millisecond), 10*time.Millisecond) }
	window = round(time.Duration(float64(d[0]) / speedup))
	idle = round(time.Duration(float64(d[1]) / speedup))
	if policy == "kpa" {
		window = max(window, kpaMinWindow)
	}
	return window, idle
}

// sloWindow is mu's scale.sloWindow in the replay: one trace second of
// wall time, the interval violation seconds are counted over.
func sloWindow(speedup float64) time.Duration {
	return max(time.Duration(float64(time.Second)/speedup).Round(time.Millisecond), time.Millisecond)
}

// autoscaleYAML is the replay's app: one function, the chain's CPU-bound
// step, scaled by policy.
func autoscaleYAML(w *bench.Workload, o AutoscaleOptions, policy string, fixed int) string {
	var b strings.Builder
	f := w.Functions[0]
	c := w.Chains[0]
	fmt.Fprintf(&b, "app: autoscale\npool:\n  buffers: 1024\n  bufferSize: 16KiB\nlimits:\n  inflight: 512\nfunctions:\n")
	fmt.Fprintf(&b, "  %s:\n    builtin: %s\n    concurrency: 1\n    timeout: 1m\n    env:\n", f.Name, f.Builtin)
	env := w.Settings.Env()
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "      %s: %q\n", k, env[k])
	}
	if policy == "fixed" {
		fmt.Fprintf(&b, "    instances: %d\n    scale: {min: %d, max: %d, policy: fixed}\n", fixed, min(o.Min, fixed), max(o.Max, fixed))
	} else {
		win, idle := windows(policy, o.Speedup)
		fmt.Fprintf(&b, "    scale: {min: %d, max: %d, slo: %s, policy: %s, window: %s, idle: %s", o.Min, o.Max, o.SLO, policy, win, idle)
		if policy == "mu" {
			// The SLO is judged per trace second, as violation seconds
			// count it: one trace second of wall time.
			fmt.Fprintf(&b, ", sloWindow: %s", sloWindow(o.Speedup))
			if o.Attainment != 0 {
				fmt.Fprintf(&b, ", attainment: %g", o.Attainment)
			}
		}
		b.WriteString("}\n")
	}
	fmt.Fprintf(&b, "chains:\n  %s:\n    route: %s\n    steps: [%s]\n    methods: [POST]\n    timeout: 1m\n", c.Name, c.Route, f.Name)
	return b.String()
}

// runPolicy replays the trace on a fresh node scaled by policy.
func runPolicy(ctx context.Context, o AutoscaleOptions, policy string, tr trace.Trace, sec time.Duration, w *bench.Workload, reqs []load.Request) (_ *PolicyResult, err error) {
	dir := filepath.Join(o.Dir, policy)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fixed := o.Fixed
	if fixed == 0 {
		fixed = max(int(math.Ceil(tr.Peak()*o.RateScale*o.StepCPU.Seconds()/0.7)), 1)
	}
	node, err := startNode(o.Exe, dir, "spry node ("+policy+")", autoscaleYAML(w, o, policy, fixed))
	if err != nil {
		return nil, err
	}
	admin, logPath := node.admin, node.log
	fn := w.Functions[0].Name
	defer func() {
		if serr := node.shutdown(); serr != nil && err == nil {
			err = serr
		}
	}()
	var st0 *scaleView
	if err := node.waitUp(ctx, 60*time.Second, func() (err error) { st0, err = fetchScale(admin, fn); return err }); err != nil {
		return nil, err
	}

	// Poll the node's status for the whole run.
	stopPoll := pollEvery(ctx, o.Poll, func(context.Context) (statusPoll, bool) {
		v, err := fetchScale(admin, fn)
		if err != nil {
			return statusPoll{}, false
		}
		v.poll.cpu = takeCPU(node.pid())
		node.saw(v.pids...)
		return v.poll, true
	})
	defer stopPoll()

	// The fixed overhead between the client and the step: a light load
	// whose step time the node measured, against what the client saw.
	overhead, err := measureOverhead(ctx, node.addr, func() (fnMetrics, error) { return fetchFnMetrics(admin, fn) }, reqs)
	if err != nil {
		return nil, err
	}
	m0, _ := fetchFnMetrics(admin, fn)

	sched := newTraceSchedule(tr, o.Speedup, o.RateScale, o.Warmup, !o.Uniform, o.Seed)
	traceWall := time.Duration(len(tr.RPS)) * sec
	c0 := takeCPU(node.pid())
	res, err := load.Run(ctx, load.Config{
		Addr: node.addr, Requests: reqs, Connections: o.Connections,
		Duration: o.Warmup + traceWall + drainGrace, Schedule: sched, Record: true,
		Timeout: 2 * time.Minute,
	})
	if err != nil {
		return nil, err
	}
	c1 := takeCPU(node.pid())
	if node.exited() {
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("the node exited during the replay (%v): %s", node.err, tail(log, 3000))
	}
	m1, _ := fetchFnMetrics(admin, fn)
	polls := stopPoll()

	evs, err := readScaleEvents(logPath, fn, res.Start)
	if err != nil {
		return nil, err
	}
	for i := range polls {
		polls[i].At = polls[i].Abs.Sub(res.Start)
	}
	cpuCores(polls)
	in := policyInputs{
		policy: policy, samples: res.Samples, events: evs, polls: polls, initial: st0.poll.Desired,
		origin: o.Warmup, sec: sec, n: len(tr.RPS), speedup: o.Speedup, slo: o.SLO, overhead: overhead,
		scheduled: sched.count,
	}
	pr := account(in)
	pr.Errors += res.Late
	pr.FirstError = res.FirstErr
	pr.finish(o, fixed, tr, m0, m1, c0, c1, logPath)
	return pr, nil
}

// finish fills in what a replay on one node and one on a cluster derive
// alike: the step time and CPU use from the readings before (m0, c0) and
// after (m1, c1) the load, the policy's settings, the offered rates, and
// the node's log at logPath (every scale decision with its reason), kept
// for the report: the scratch directory may go before it is written.
func (pr *PolicyResult) finish(o AutoscaleOptions, fixed int, tr trace.Trace, m0, m1 fnMetrics, c0, c1 cpuSample, logPath string) {
	if served := m1.served - m0.served; served > 0 {
		pr.ExecMillis = (m1.busy - m0.busy) / served * 1e3
	}
	if win, idle := windows(pr.Policy, o.Speedup); win > 0 {
		pr.Window, pr.Idle = win.String(), idle.String()
	}
	if pr.Policy == "fixed" {
		pr.FixedInstances = fixed
	}
	if el := c1.at.Sub(c0.at).Seconds(); el > 0 {
		cores := func(d time.Duration) float64 { return d.Seconds() / el }
		pr.CPU = CPUUse{Node: cores(c1.node - c0.node), LoadGen: cores(c1.self - c0.self), Steal: cores(c1.steal - c0.steal)}
		pr.CPU.Other = max(cores(c1.busy-c0.busy)-pr.CPU.Node-pr.CPU.LoadGen, 0)
	}
	pr.offered = make([]float64, len(tr.RPS))
	for i, r := range tr.RPS {
		pr.offered[i] = r * o.RateScale
	}
	pr.nodeLog, _ = os.ReadFile(logPath)
}

// pollEvery calls poll at once and then every period in a goroutine until
// stop, which waits for the call under way and returns the values the calls
// kept, in order; stop may be called again (it returns nil then).
func pollEvery[T any](ctx context.Context, period time.Duration, poll func(context.Context) (T, bool)) (stop func() []T) {
	ctx, cancel := context.WithCancel(ctx)
	var kept []T
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			if v, ok := poll(ctx); ok {
				kept = append(kept, v)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() []T {
		cancel()
		<-done
		k := kept
		kept = nil
		return k
	}
}

// cpuCores fills each poll's cores over the second before it: /proc
// counts CPU in 10 ms ticks, too coarse for the 100 ms between polls.
func cpuCores(polls []statusPoll) {
	j := 0
	for i := range polls {
		for j+1 < i && polls[i].cpu.at.Sub(polls[j+1].cpu.at) >= time.Second {
			j++
		}
		a, b := polls[j].cpu, polls[i].cpu
		if el := b.at.Sub(a.at).Seconds(); el >= 0.5 {
			polls[i].NodeCores = (b.node - a.node).Seconds() / el
			polls[i].StealCores = (b.steal - a.steal).Seconds() / el
			polls[i].OtherCores = max((b.busy-a.busy-(b.node-a.node)-(b.self-a.self)).Seconds()/el, 0)
		}
	}
}

// scaleView is the part of /v1/status the replay reads.
type scaleView struct {
	poll statusPoll
	pids []int
}

// statusPoll is one reading of a function's scale status.
type statusPoll struct {
	Abs        time.Time     `json:"-"`
	At         time.Duration `json:"-"` // from the start of the load
	Desired    int
	Ready      int
	Starting   int
	Draining   int
	RPS        float64 // arrivals per second over the node's last control period
	Predicted  float64
	Queue      int
	P99Millis  float64
	Attainment float64
	Reason     string
	// Where the machine's CPU went over the second before the poll, in
	// cores (see CPUUse); cpu is the reading they come from.
	NodeCores, OtherCores, StealCores float64
	cpu                               cpuSample
}

func fetchScale(admin, fn string) (*scaleView, error) {
	s, err := fetchStatus(admin)
	if err != nil {
		return nil, err
	}
	at := time.Now()
	for _, a := range s.Apps {
		for _, f := range a.Functions {
			if f.Name != fn {
				continue
			}
			sc := f.Scale
			v := &scaleView{poll: statusPoll{Abs: at, Desired: sc.Desired, RPS: sc.RPS, Predicted: sc.Predicted, Queue: sc.Queue,
				P99Millis: sc.P99Millis, Attainment: sc.Attainment, Reason: sc.Reason}}
			for _, in := range f.Instances {
				switch in.State {
				case "ready":
					v.poll.Ready++
				case "starting":
					v.poll.Starting++
				case "draining":
					v.poll.Draining++
				}
				if in.PID > 0 {
					v.pids = append(v.pids, in.PID)
				}
			}
			return v, nil
		}
	}
	return nil, fmt.Errorf("admin API: no function %q", fn)
}

// fnMetrics are a function's counters from /metrics.
type fnMetrics struct {
	served, busy float64 // requests, busy seconds
}

func fetchFnMetrics(admin, fn string) (fnMetrics, error) {
	var m fnMetrics
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	label := `function="` + fn + `"`
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, label) {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(l, "spry_function_requests_total{"):
			m.served = v
		case strings.HasPrefix(l, "spry_function_busy_seconds_total{"):
			m.busy = v
		}
	}
	return m, sc.Err()
}

// measureOverhead returns the part of the client's latency that is not the
// step's: the gateway, the two descriptor hops, the HTTP round trip and the
// load generator, at a light load (30 requests at 40 req/s on one
// connection: no queueing). It is the mean client latency minus the mean execution time
// the node measured for the same requests.
func measureOverhead(ctx context.Context, addr string, metrics func() (fnMetrics, error), reqs []load.Request) (time.Duration, error) {
	// One request first: it may wake the function from zero.
	if err := probe(ctx, addr, "", reqs[:1]); err != nil {
		return 0, err
	}
	m0, err := metrics()
	if err != nil {
		return 0, err
	}
	res, err := load.Run(ctx, load.Config{Addr: addr, Requests: reqs, Connections: 1, Duration: 10 * time.Second,
		Schedule: &countLimit{s: &load.Constant{Rate: 40}, n: 30}, Record: true})
	if err != nil {
		return 0, err
	}
	m1, err := metrics()
	if err != nil {
		return 0, err
	}
	if res.Errors > 0 || res.Requests == 0 {
		return 0, fmt.Errorf("overhead probe: %d answered, %d errors: %s", res.Requests, res.Errors, res.FirstErr)
	}
	served := m1.served - m0.served
	if served <= 0 {
		return 0, fmt.Errorf("overhead probe: the node counted no requests")
	}
	exec := (m1.busy - m0.busy) / served
	var sum time.Duration
	for _, s := range res.Samples {
		sum += s.Done - s.Due
	}
	client := sum.Seconds() / float64(len(res.Samples))
	return max(time.Duration((client-exec)*1e9), 0), nil
}

// countLimit ends schedule s after n requests.
type countLimit struct {
	s load.Schedule
	n int
}

func (c *countLimit) Next() (time.Duration, bool) {
	if c.n <= 0 {
		return 0, false
	}
	c.n--
	return c.s.Next()
}

// readScaleEvents reads the node's log for fn's changes of wanted
// instances: the autoscaler's decisions ("scale", with from, to and
// reason) and cold starts (zero to one on a request), as offsets from
// start.
func readScaleEvents(path, fn string, start time.Time) ([]scaleEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var evs []scaleEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		e, ok := parseScaleLine(sc.Text(), fn)
		if !ok {
			continue
		}
		e.At = e.abs.Sub(start)
		evs = append(evs, e.scaleEvent)
	}
	return evs, sc.Err()
}

type loggedEvent struct {
	scaleEvent
	abs time.Time
}

// parseScaleLine parses one line of the node's log (slog text):
//
//	time=… level=INFO msg=scale app=A function=F from=1 to=3 reason=load …
//	time=… level=INFO msg="cold start" app=A function=F
func parseScaleLine(line, fn string) (loggedEvent, bool) {
	var e loggedEvent
	kv := logFields(line)
	if kv["function"] != fn {
		return e, false
	}
	t, err := time.Parse(time.RFC3339Nano, kv["time"])
	if err != nil {
		return e, false
	}
	e.abs = t
	switch kv["msg"] {
	case "scale":
		from, err1 := strconv.Atoi(kv["from"])
		to, err2 := strconv.Atoi(kv["to"])
		if err1 != nil || err2 != nil {
			return e, false
		}
		e.From, e.To, e.Reason = from, to, kv["reason"]
	case "cold start":
		e.From, e.To, e.Reason = 0, 1, "cold-start"
	default:
		return e, false
	}
	return e, true
}

// logFields splits a slog text line into its keys and values (values may
// be quoted).
func logFields(line string) map[string]string {
	m := map[string]string{}
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		k, rest, ok := strings.Cut(line, "=")
		if !ok || strings.Contains(k, " ") {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		m[k] = v
		line = rest
	}
	return m
}

// cpuSample is where the machine's CPU had gone at one moment: to the node
// and its instances (live ones, and those it reaped), to this process (the
// load generator), and in all, with the time the hypervisor stole.
type cpuSample struct {
	at                      time.Time
	busy, steal, node, self time.Duration
}

func takeCPU(nodePID int) cpuSample {
	s := cpuSample{at: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
		tick := func(i int) time.Duration {
			if i >= len(f) {
				return 0
			}
			v, _ := strconv.ParseInt(f[i], 10, 64)
			return time.Duration(v) * proc.ClockTick
		}
		s.busy = tick(1) + tick(2) + tick(3) + tick(6) + tick(7)
		s.steal = tick(8)
	}
	s.self = statCPU(os.Getpid(), false)
	s.node = statCPU(nodePID, true)
	if ds := proc.Descendants(nodePID); len(ds) > 1 {
		s.node += proc.CPUOf(ds[1:])
	}
	return s
}

// statCPU returns a process's utime + stime, and with children the CPU of
// the children it reaped (cutime + cstime).
func statCPU(pid int, children bool) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // from field 3 (state) on
	sum := func(idx ...int) time.Duration {
		var t int64
		for _, k := range idx {
			if k < len(f) {
				v, _ := strconv.ParseInt(f[k], 10, 64)
				t += v
			}
		}
		return time.Duration(t) * proc.ClockTick
	}
	if children {
		return sum(11, 12, 13, 14)
	}
	return sum(11, 12)
}
