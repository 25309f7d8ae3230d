package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spry-dev/spry/bench"
	"github.com/spry-dev/spry/internal/bench/load"
	"github.com/spry-dev/spry/internal/bench/proc"
	"github.com/spry-dev/spry/sdk"
)

// Options configure a benchmark run.
type Options struct {
	Workload    string
	Shape       bench.Options
	Modes       []string
	Duration    time.Duration // measured time per mode, over all rounds
	Warmup      time.Duration // per mode and round
	Rounds      int           // the modes take turns this many times
	Connections int
	Rate        float64 // open loop: requests per second (0: closed loop, unless the workload is bursty)
	Poisson     bool
	Idle        time.Duration // idle window measured per mode
	Exe         string        // the spry executable (default: this one)
	Dir         string        // scratch directory (default: a temporary one, removed)
	Log         io.Writer     // progress (nil: quiet)
	// Proto is what the load generator speaks to Spry's gateway (load.Proto*:
	// http1, h2c, tls, h2, grpc); the baselines' own ingress is HTTP/1.1.
	Proto   string
	WasmSrc string // bench/wasmfn, for the wasm mode (default: in the working directory)
	Nodes   int    // the cluster mode's nodes (default 2)
}

// Run runs the benchmark and returns its report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Rounds < 1 {
		o.Rounds = 1
	}
	if o.Connections < 1 {
		o.Connections = 8
	}
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	logf := lineLogger(o.Log)
	cleanup, err := workspace(&o.Exe, &o.Dir, "spry-bench-")
	defer cleanup()
	if err != nil {
		return nil, err
	}
	var modes []Mode
	for _, n := range o.Modes {
		m, err := NewMode(n)
		if err != nil {
			return nil, err
		}
		modes = append(modes, m)
	}
	if len(modes) == 0 {
		return nil, fmt.Errorf("bench: no modes")
	}
	if o.Shape.WorkRate == 0 {
		o.Shape.WorkRate = bench.Calibrate()
	}
	w, err := bench.New(o.Workload, o.Shape)
	if err != nil {
		return nil, err
	}
	bench.Configure(w.Settings)
	reqs, weights, err := prepare(w)
	if err != nil {
		return nil, err
	}
	mix := w.Mix()
	logf("bench: %s (%s), modes %s, %s per mode in %d round(s), %d connections", w.Name, w.Doc, strings.Join(o.Modes, ","), o.Duration, o.Rounds, o.Connections)

	rep := &Report{Workload: w.Name, Doc: w.Doc, Machine: machine(), Config: runConfig(o, w)}
	results := make([]*modeAcc, len(modes))
	for i, m := range modes {
		results[i] = &modeAcc{mode: m.Name(), byRole: map[string]*proc.Cost{}, byComp: map[string]*proc.Cost{}}
	}
	env := Env{Exe: o.Exe, Dir: o.Dir, Proto: o.Proto, WasmSrc: o.WasmSrc, Nodes: o.Nodes}
	per := o.Duration / time.Duration(o.Rounds)
	for round := range o.Rounds {
		for i, m := range modes {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			acc := results[i]
			logf("bench: round %d/%d: %s", round+1, o.Rounds, m.Name())
			if err := runOnce(ctx, m, w, env, o, reqs, mix, per, round == 0, acc); err != nil {
				return nil, fmt.Errorf("bench: %s: %w", m.Name(), err)
			}
			logf("bench:   %s: %.0f req/s, p99 %.2f ms, %d errors", m.Name(), acc.res.RPS(), load.Millis(acc.res.Hist, 99), acc.res.Errors)
		}
	}
	for i, m := range modes {
		rep.Modes = append(rep.Modes, results[i].result())
		rep.Audits = append(rep.Audits, results[i].audit(m, w, weights))
	}
	return rep, nil
}

// prepare builds the raw requests and their expected answers, computed by
// running each chain in this process.
func prepare(w *bench.Workload) ([]load.Request, map[string]float64, error) {
	r, err := sdk.NewRunner(sdk.RunnerOptions{BufferSize: min(max(w.BufferSize, 16<<10), 1<<20), MaxPayload: w.BufferSize, Calls: 1})
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	var out []load.Request
	for i := range w.Requests {
		q := &w.Requests[i]
		want, err := w.RunLocal(r, q)
		if err != nil {
			return nil, nil, err
		}
		if want.Status != 200 {
			return nil, nil, fmt.Errorf("bench: %s: request %s %s answers %d in-process: %s", w.Name, q.Method, q.Target, want.Status, want.Body)
		}
		lr := load.Request{Raw: load.Build(q.Method, q.Target, "bench", q.Header, q.Body),
			WantStatus: want.Status, WantBody: want.Body, Name: q.Chain}
		if w.Varies != nil {
			stable, ok := w.Stable(want.Body)
			if !ok {
				return nil, nil, fmt.Errorf("bench: %s: request %s %s: the in-process answer has no %q: %.200q", w.Name, q.Method, q.Target, w.Varies, want.Body)
			}
			lr.WantBody, lr.WantPrefix = stable, true
		}
		out = append(out, lr)
	}
	weights := map[string]float64{}
	mix := w.Mix()
	for _, i := range mix {
		weights[w.Requests[i].Chain] += 1 / float64(len(mix))
	}
	return out, weights, nil
}

// modeAcc accumulates one mode's rounds.
type modeAcc struct {
	mode     string
	res      *load.Result
	cost     proc.Cost
	byRole   map[string]*proc.Cost
	byComp   map[string]*proc.Cost
	procs    int
	idle     time.Duration // CPU used in the idle window
	idleWin  time.Duration
	timeline []float64 // cores per tick, first round
	tick     time.Duration
	elapsed  time.Duration
	gen      time.Duration // the load generator's CPU
	// hops inside the chains and their time (Spry: from the hop stamps)
	transits, transitNs uint64
	transitOK           bool
}

// runOnce starts the mode, checks it answers, measures it idle (first
// round) and under load, and stops it.
func runOnce(ctx context.Context, m Mode, w *bench.Workload, env Env, o Options, reqs []load.Request, mix []int, dur time.Duration, first bool, acc *modeAcc) (err error) {
	sys, err := m.Start(ctx, w, env)
	if err != nil {
		return err
	}
	defer func() {
		if serr := sys.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	proto := ""
	if _, ok := m.(*spryMode); ok {
		proto = o.Proto
	}
	// Every distinct request once, checked, before anything is measured.
	if err := probe(ctx, sys.Addr(), proto, reqs); err != nil {
		return err
	}
	procs := sys.Procs()
	roots := make([]int, len(procs))
	comp := map[int]Proc{}
	for i, p := range procs {
		roots[i] = p.PID
		comp[p.PID] = p
	}
	// A process not listed belongs to the nearest listed ancestor: the
	// most specific first (an http: or lambda: function's program is its
	// adapter instance's, not the node's).
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		for _, d := range proc.Descendants(p.PID) {
			if _, ok := comp[d]; !ok {
				comp[d] = p
			}
		}
	}
	if first && o.Idle > 0 {
		time.Sleep(200 * time.Millisecond)
		a := proc.Take(roots)
		time.Sleep(o.Idle)
		b := proc.Take(roots)
		acc.idle += proc.Total(b.Sub(a)).CPU
		acc.idleWin += b.At.Sub(a.At)
	}

	var before, after proc.Snapshot
	var genBefore, genAfter proc.Usage // the bench itself: the load generator
	tr, hasTransits := sys.(transiter)
	var trN, trNs [2]uint64
	var trErr [2]error
	var samples []float64
	var sampler sync.WaitGroup
	stopSampling := make(chan struct{})
	tick := 100 * time.Millisecond
	cfg := load.Config{Addr: sys.Addr(), Proto: proto, Requests: reqs, Mix: mix, Connections: o.Connections,
		Warmup: o.Warmup, Duration: dur, Tick: tick,
		Addrs: addrsOf(sys),
		OnMeasure: func() {
			before = proc.Take(roots)
			genBefore, _ = proc.Read(os.Getpid())
			if hasTransits {
				trN[0], trNs[0], trErr[0] = tr.Transits()
			}
			if !first {
				return
			}
			sampler.Add(1)
			go func() {
				defer sampler.Done()
				all := allPIDs(roots)
				t := time.NewTicker(tick)
				defer t.Stop()
				last, lastAt := proc.CPUOf(all), time.Now()
				for {
					select {
					case <-stopSampling:
						return
					case now := <-t.C:
						c := proc.CPUOf(all)
						samples = append(samples, float64(c-last)/float64(now.Sub(lastAt)))
						last, lastAt = c, now
					}
				}
			}()
		},
		OnEnd: func() {
			after = proc.Take(roots)
			genAfter, _ = proc.Read(os.Getpid())
			if hasTransits {
				trN[1], trNs[1], trErr[1] = tr.Transits()
			}
			close(stopSampling)
		},
	}
	switch {
	case w.Traffic.Bursty():
		cfg.Schedule = &load.Bursts{Every: w.Traffic.Every, Size: w.Traffic.Burst, Spread: w.Traffic.Spread}
		cfg.Warmup = min(cfg.Warmup, time.Second)
	case o.Rate > 0 && o.Poisson:
		cfg.Schedule = &load.Poisson{Rate: o.Rate, Seed: 1}
	case o.Rate > 0:
		cfg.Schedule = &load.Constant{Rate: o.Rate}
	}
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	sampler.Wait()
	costs := after.Sub(before)
	for _, c := range costs {
		acc.cost.Add(c)
		p := comp[c.PID]
		if p.Role == "" {
			p = Proc{Role: RoleFunction, Component: "other"}
		}
		if acc.byRole[p.Role] == nil {
			acc.byRole[p.Role] = &proc.Cost{}
		}
		acc.byRole[p.Role].Add(c)
		if acc.byComp[p.Component] == nil {
			acc.byComp[p.Component] = &proc.Cost{}
		}
		acc.byComp[p.Component].Add(c)
	}
	acc.procs = len(costs)
	acc.gen += genAfter.CPUTick - genBefore.CPUTick
	if hasTransits && trErr[0] == nil && trErr[1] == nil && trN[1] > trN[0] {
		acc.transits += trN[1] - trN[0]
		acc.transitNs += trNs[1] - trNs[0]
		acc.transitOK = true
	}
	acc.elapsed += after.At.Sub(before.At)
	if acc.res == nil {
		acc.res = res
		acc.timeline, acc.tick = samples, tick
	} else {
		acc.res.Merge(res)
	}
	return nil
}

// spreader is a system that takes its load at several addresses (every
// node's gateway of a cluster).
type spreader interface{ Addrs() []string }

// addrsOf returns where a system's load goes when spread, or nil.
func addrsOf(sys System) []string {
	if s, ok := sys.(spreader); ok {
		return s.Addrs()
	}
	return nil
}

func allPIDs(roots []int) []int {
	var out []int
	for _, r := range roots {
		out = append(out, proc.Descendants(r)...)
	}
	return out
}

// probe sends every request once and checks its answer.
func probe(ctx context.Context, addr, proto string, reqs []load.Request) error {
	res, err := load.Run(ctx, load.Config{Addr: addr, Proto: proto, Requests: reqs, Connections: 1, Duration: time.Hour,
		Schedule: &countSchedule{n: len(reqs)}, Timeout: 60 * time.Second})
	if err != nil {
		return err
	}
	if res.Errors > 0 || res.Requests != uint64(len(reqs)) {
		return fmt.Errorf("probe: %d of %d requests answered correctly: %s", res.Requests, len(reqs), res.FirstErr)
	}
	return nil
}

// countSchedule sends n requests at once, then ends the run early.
type countSchedule struct{ n, i int }

func (s *countSchedule) Next() (time.Duration, bool) {
	if s.i >= s.n {
		return 0, false
	}
	s.i++
	return 0, true
}

func (a *modeAcc) result() ModeResult {
	r := ModeResult{Mode: a.mode, Requests: a.res.Requests, Errors: a.res.Errors, Overtime: a.res.Overtime, Late: a.res.Late,
		RPS: a.res.RPS(), P50: load.Millis(a.res.Hist, 50), P99: load.Millis(a.res.Hist, 99), P999: load.Millis(a.res.Hist, 99.9),
		Mean: a.res.Hist.Mean() / 1e6, FirstError: a.res.FirstErr, Processes: a.procs, ByRole: map[string]Cost{}, ByChain: map[string]Latency{}}
	n := float64(max(a.res.Requests, 1))
	if a.transitOK {
		us := float64(a.transitNs) / float64(a.transits) / 1e3
		r.HopUs = &us
	}
	r.CPUPerReq = a.cost.CPU.Seconds() / n
	r.CtxSwPerReq = float64(a.cost.CtxSw()) / n
	r.SyscallsPerReq = float64(a.cost.Syscalls()) / n
	r.SyscallsMeasured = a.cost.IOOK
	if a.elapsed > 0 {
		r.CPUCores = a.cost.CPU.Seconds() / a.elapsed.Seconds()
	}
	r.LoadgenCPUPerReq = a.gen.Seconds() / n
	if a.idleWin > 0 {
		r.IdleCPUCores = a.idle.Seconds() / a.idleWin.Seconds()
	}
	for role, c := range a.byRole {
		r.ByRole[role] = Cost{CPUPerReq: c.CPU.Seconds() / n, CtxSwPerReq: float64(c.CtxSw()) / n, SyscallsPerReq: float64(c.Syscalls()) / n}
	}
	for name, h := range a.res.ByName {
		r.ByChain[name] = Latency{Requests: h.TotalCount(), P50: load.Millis(h, 50), P99: load.Millis(h, 99)}
	}
	for _, q := range cdfQuantiles {
		r.CDF = append(r.CDF, [2]float64{q, load.Millis(a.res.Hist, q)})
	}
	r.CPUTimeline, r.TickS = a.timeline, a.tick.Seconds()
	for _, v := range a.res.Timeline {
		r.RPSTimeline = append(r.RPSTimeline, float64(v)/a.res.Tick.Seconds())
	}
	for i := range r.CDF {
		if math.IsNaN(r.CDF[i][1]) {
			r.CDF = nil
			break
		}
	}
	return r
}

// cdfQuantiles are the points of the latency CDF kept in the report.
var cdfQuantiles = []float64{0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 98, 99, 99.5, 99.9, 99.95, 99.99, 100}

// audit builds the mode's overhead table for the workload's first chain.
func (a *modeAcc) audit(m Mode, w *bench.Workload, weights map[string]float64) Audit {
	paths := map[string][]Transfer{}
	for i := range w.Chains {
		if weights[w.Chains[i].Name] > 0 {
			paths[w.Chains[i].Name] = m.Path(&w.Chains[i])
		}
	}
	main := w.Requests[w.Mix()[0]].Chain
	n := float64(max(a.res.Requests, 1))
	per := map[string]Measured{}
	for comp, c := range a.byComp {
		per[comp] = Measured{CtxSw: float64(c.CtxSw()) / n, Syscalls: float64(c.Syscalls()) / n, OK: c.IOOK}
	}
	total := Measured{CtxSw: float64(a.cost.CtxSw()) / n, Syscalls: float64(a.cost.Syscalls()) / n, OK: a.cost.IOOK}
	return BuildAudit(m.Name(), main, paths[main], per, Arrivals(paths, weights), total)
}

func runConfig(o Options, w *bench.Workload) RunConfig {
	c := RunConfig{Duration: o.Duration.String(), Warmup: o.Warmup.String(), Rounds: o.Rounds, Connections: o.Connections, Proto: o.Proto,
		Idle: o.Idle.String(), WorkRate: w.Settings.WorkRate, StepCPU: w.Settings.StepCPU.String(), Scale: w.Settings.Scale,
		Loop: "closed"}
	switch {
	case w.Traffic.Bursty():
		c.Loop = fmt.Sprintf("bursts of %d every %s (over %s)", w.Traffic.Burst, w.Traffic.Every, w.Traffic.Spread)
	case o.Rate > 0 && o.Poisson:
		c.Loop = fmt.Sprintf("open, Poisson %.0f/s", o.Rate)
	case o.Rate > 0:
		c.Loop = fmt.Sprintf("open, constant %.0f/s", o.Rate)
	}
	if w.Name == "chain" {
		c.Steps, c.Payload = len(w.Chains[0].Steps), len(w.Requests[0].Body)
	}
	if slices.Contains(o.Modes, ModeCluster) || slices.Contains(o.Modes, ModeSpread) {
		c.Nodes = max(o.Nodes, 2)
	}
	for _, ch := range w.Chains {
		c.Chains = append(c.Chains, ch.Name)
	}
	c.Broker = BrokerKind()
	if ForceGoBroker {
		c.Broker = "go reverse proxy"
	}
	return c
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		m.MemoryGiB = math.Round(float64(kb)/(1<<20)*10) / 10
	}
	m.Host, _ = os.Hostname()
	return m
}

// workspace fills in exe (this spry binary) and dir (a temporary directory,
// which cleanup removes) where they are empty. Spry runs instances under
// other uids as root, and they must reach the runtime directory below dir:
// dir is made searchable by all.
func workspace(exe, dir *string, prefix string) (cleanup func(), err error) {
	cleanup = func() {}
	if *exe == "" {
		if *exe, err = os.Executable(); err != nil {
			return cleanup, err
		}
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", prefix)
		if err != nil {
			return cleanup, err
		}
		cleanup = func() { os.RemoveAll(d) }
		*dir = d
	}
	return cleanup, os.Chmod(*dir, 0o755)
}

// lineLogger returns a printf that writes a line to w, or nothing when w
// is nil.
func lineLogger(w io.Writer) func(format string, args ...any) {
	return func(format string, args ...any) {
		if w != nil {
			fmt.Fprintf(w, format+"\n", args...)
		}
	}
}
