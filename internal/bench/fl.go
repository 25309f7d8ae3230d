package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spry-dev/spry/internal/bench/baseline"
	"github.com/spry-dev/spry/internal/bench/proc"
	"github.com/spry-dev/spry/internal/fl"
	"github.com/spry-dev/spry/internal/mono"
)

// `spry bench fl`: federated-learning aggregation on Spry against a
// serverful aggregator and the same hierarchy as Knative functions. N
// simulated clients run R rounds of a job: each fetches the global model,
// waits for its arrival (the pattern), and sends its update (P float32s and
// a sample count); the round ends when the system has the new model. The
// system's processes are measured from /proc: CPU, proportional memory.

// FL modes.
const (
	FLModeSpry      = "spry"
	FLModeServerful = "serverful"
	FLModeKnative   = "knative"
)

// FLModes are the modes `spry bench fl` knows, in their default order.
var FLModes = []string{FLModeSpry, FLModeServerful, FLModeKnative}

// FLPresets are model sizes by name: the parameters of torchvision's
// ResNet-18 and ResNet-152, and a small one for tests.
var FLPresets = map[string]int{
	"resnet18":  11_689_512,
	"resnet152": 60_192_808,
	"small":     100_000,
}

// FLOptions configure `spry bench fl`.
type FLOptions struct {
	Clients int      // simulated clients (default 100)
	Params  int      // float32 parameters of the model
	Preset  string   // the preset Params came from, for the report
	Rounds  int      // rounds measured (default 5)
	Modes   []string // default FLModes
	// Pattern is when clients send in a round: "all" (at once), "spread:D"
	// (uniformly over D), "stragglers:F" (a fraction F sends after the
	// round closed, which the goal does not wait for).
	Pattern string
	// Concurrency bounds the updates in flight at once (the clients'
	// shared link; 0: all clients at once).
	Concurrency int
	NoFetch     bool          // clients do not fetch the model each round
	Leaves      int           // the baselines' partial sums (default: the cores)
	Idle        time.Duration // the window idle CPU and wake-ups are measured in, between rounds
	SpryMemory  int64         // the Spry app's pool.memory (default: sized from the load)
	Exe, Dir    string
	Log         io.Writer
}

// FLReport is report.json.
type FLReport struct {
	Clients     int            `json:"clients"`
	Params      int            `json:"params"`
	Rounds      int            `json:"rounds"`
	Modes       []FLModeResult `json:"modes"`
	Preset      string         `json:"preset,omitempty"`
	Pattern     string         `json:"pattern"`
	Concurrency int            `json:"concurrency"`
	Fetch       bool           `json:"fetch"`
	Machine     Machine        `json:"machine"`
	Notes       []string       `json:"notes"`
}

// FLModeResult is one mode's measurements (times in seconds).
type FLModeResult struct {
	Mode string `json:"mode"`
	// RoundP50: the median round, from the clients' start (the model
	// fetch) to the new model ready at the aggregator.
	RoundP50 float64 `json:"round_s_p50"`
	// AggregateP50: the median time from the arrival of the round's last
	// folded update at the aggregation tier to its model ready.
	AggregateP50 float64 `json:"aggregate_s_p50"`
	// CPUPerRound: CPU-seconds of every process of the system per round.
	CPUPerRound float64 `json:"cpu_s_per_round"`
	// PeakRSS: the peak of the processes' resident memory, summed as
	// proportional set size (a shared page counted once).
	PeakRSS int64 `json:"peak_rss_bytes"`
	// Errors: updates and fetches that failed, and models that were not
	// FedAvg of the round's updates. Expected refusals (stragglers) are
	// Refused, not errors.
	Errors int `json:"errors"`

	RoundS     []float64 `json:"round_s"`
	AggregateS []float64 `json:"aggregate_s"`
	CPUS       []float64 `json:"cpu_s"` // per round
	Refused    int       `json:"refused"`
	Retries    int       `json:"retries"` // updates and fetches sent again after a 503 (a full pool, a model with every reader it can have at once)
	IdleCPU    float64   `json:"idle_cpu_s_per_s"`
	// IdleWakeups: the processes' context switches per second in the
	// idle window (their threads woken for nothing, when 0 is the aim).
	IdleWakeups float64 `json:"idle_wakeups_per_s"`
	// Leaves: per round, the leaf aggregators the control plane's plan
	// asked for (spry: control.PlanAggregation from the updates' arrival
	// rate and size); Partials: the partial sums the model was combined
	// from.
	Leaves     []int  `json:"leaves,omitempty"`
	Partials   []int  `json:"partials,omitempty"`
	Note       string `json:"note,omitempty"`
	FirstError string `json:"first_error,omitempty"`
}

func (r FLModeResult) String() string {
	return fmt.Sprintf("%-10s round %7.3f s  aggregate %7.3f s  CPU %7.3f s/round  peak %6.0f MiB  idle CPU %.4f s/s (%.1f wake-ups/s)  errors %d",
		r.Mode, r.RoundP50, r.AggregateP50, r.CPUPerRound, float64(r.PeakRSS)/(1<<20), r.IdleCPU, r.IdleWakeups, r.Errors)
}

// flSystem is a system under test.
type flSystem interface {
	client() flClient
	roots() []int // processes whose trees are measured
	stop() error
}

// RunFL runs the FL benchmark.
func RunFL(ctx context.Context, o FLOptions) (*FLReport, error) {
	if o.Clients <= 0 {
		o.Clients = 100
	}
	if o.Params <= 0 {
		o.Params = FLPresets["resnet18"]
	}
	if o.Rounds <= 0 {
		o.Rounds = 5
	}
	if len(o.Modes) == 0 {
		o.Modes = FLModes
	}
	if o.Pattern == "" {
		o.Pattern = "all"
	}
	if o.Concurrency <= 0 || o.Concurrency > o.Clients {
		o.Concurrency = o.Clients
	}
	if o.Leaves <= 0 {
		o.Leaves = max(2, min(4, numCPU()))
	}
	if o.Idle <= 0 {
		o.Idle = 2 * time.Second
	}
	pat, err := parsePattern(o.Pattern)
	if err != nil {
		return nil, err
	}
	for _, m := range o.Modes {
		if !slices.Contains(FLModes, m) {
			return nil, fmt.Errorf("bench fl: unknown mode %q (modes: %s)", m, strings.Join(FLModes, ", "))
		}
	}
	logf := lineLogger(o.Log)
	cleanup, err := workspace(&o.Exe, &o.Dir, "spry-bench-fl-")
	defer cleanup()
	if err != nil {
		return nil, err
	}
	logf("bench fl: %d clients, %d parameters (%.1f MB an update), %d rounds, pattern %s, %d uploads at once, modes %s",
		o.Clients, o.Params, float64(o.Params)*4/1e6, o.Rounds, o.Pattern, o.Concurrency, strings.Join(o.Modes, ","))
	w := newFLWorkload(o)
	rep := &FLReport{Clients: o.Clients, Params: o.Params, Rounds: o.Rounds, Preset: o.Preset, Pattern: o.Pattern,
		Concurrency: o.Concurrency, Fetch: !o.NoFetch, Machine: machine(),
		Notes: []string{
			"aggregate_s: from the arrival of the round's last folded update at the aggregation tier (Spry: its first step; serverful: its handler; knative: its leaf, once the body crossed broker and sidecar) to the model ready (the same monotonic clock).",
			"peak_rss_bytes: the peak over the run of the system's processes' proportional set size (smaps_rollup Pss), so Spry's shared pool counts once.",
			"knative is a local emulation of Knative's data path (a Go broker, a queue-proxy-style sidecar per function, HTTP functions), not Knative on Kubernetes.",
		}}
	for _, m := range o.Modes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		logf("bench fl: %s", m)
		res, err := runFLMode(ctx, m, o, w, pat, logf)
		if err != nil {
			return nil, fmt.Errorf("bench fl: %s: %w", m, err)
		}
		logf("bench fl:   %s", res.String())
		rep.Modes = append(rep.Modes, *res)
	}
	return rep, nil
}

func numCPU() int { return machine().Cores }

// flPattern is when a client sends in its round.
type flPattern struct {
	kind   string
	spread time.Duration // spread: the window
	frac   float64       // stragglers: the fraction that sends after the round closed
}

func parsePattern(s string) (flPattern, error) {
	kind, arg, _ := strings.Cut(s, ":")
	p := flPattern{kind: kind}
	switch kind {
	case "all":
		if arg != "" {
			return p, fmt.Errorf("--pattern all takes no argument")
		}
	case "spread":
		d, err := time.ParseDuration(arg)
		if err != nil || d <= 0 {
			return p, fmt.Errorf("--pattern spread:D: D a duration like 2s")
		}
		p.spread = d
	case "stragglers":
		if arg == "" {
			arg = "0.1"
		}
		f, err := strconv.ParseFloat(arg, 64)
		if err != nil || f <= 0 || f >= 1 {
			return p, fmt.Errorf("--pattern stragglers:F: F a fraction in (0, 1), like 0.1")
		}
		p.frac = f
	default:
		return p, fmt.Errorf("--pattern %q: want all, spread:D or stragglers:F", s)
	}
	return p, nil
}

// flWorkload is the clients' data: a few distinct update vectors shared by
// all clients (client c sends vector c mod V), their sample counts, and
// the parameters at which the models are checked against FedAvg.
type flWorkload struct {
	vecs    [][]float32
	samples []float64
	check   []int
	goal    int
	late    map[int]bool // the stragglers
}

func newFLWorkload(o FLOptions) *flWorkload {
	v := min(4, o.Clients)
	w := &flWorkload{}
	var seed uint64 = 0x9e3779b97f4a7c15
	for k := range v {
		vec := make([]float32, o.Params)
		x := seed + uint64(k)*0x632be59bd9b4e019
		for i := range vec {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			vec[i] = float32(int32(x>>32)) / (1 << 31) * 0.05
		}
		w.vecs = append(w.vecs, vec)
	}
	for c := range o.Clients {
		w.samples = append(w.samples, float64(100+(c*37)%400))
	}
	for i := range min(1024, o.Params) {
		w.check = append(w.check, int((uint64(i)*2654435761)%uint64(o.Params)))
	}
	w.goal = o.Clients
	pat, _ := parsePattern(o.Pattern)
	w.late = map[int]bool{}
	if pat.kind == "stragglers" {
		n := max(1, int(math.Ceil(pat.frac*float64(o.Clients))))
		n = min(n, o.Clients-1)
		for c := o.Clients - n; c < o.Clients; c++ {
			w.late[c] = true
		}
		w.goal = o.Clients - n
	}
	return w
}

func (w *flWorkload) body(c int) []byte { return fl.Bytes(w.vecs[c%len(w.vecs)]) }

// expect is FedAvg of the clients' updates at the checked parameters.
func (w *flWorkload) expect(clients []int) (mean, scale []float64) {
	var ups [][]float32
	var ns []float64
	for _, c := range clients {
		u := make([]float32, len(w.check))
		for j, i := range w.check {
			u[j] = w.vecs[c%len(w.vecs)][i]
		}
		ups = append(ups, u)
		ns = append(ns, w.samples[c])
	}
	return fl.Reference(ups, ns)
}

// runFLMode starts mode's system, runs the job, and stops the system.
func runFLMode(ctx context.Context, mode string, o FLOptions, w *flWorkload, pat flPattern, logf func(string, ...any)) (*FLModeResult, error) {
	dir := filepath.Join(o.Dir, mode)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var sys flSystem
	var err error
	switch mode {
	case FLModeServerful:
		sys, err = startServerful(o, dir)
	case FLModeKnative:
		sys, err = startKnativeFL(o, dir)
	case FLModeSpry:
		sys, err = startSpryFL(ctx, o, dir)
	}
	if err != nil {
		return nil, err
	}
	res := &FLModeResult{Mode: mode}
	if mode == FLModeKnative {
		res.Note = "local emulation of Knative's data path"
	}
	runErr := runFLJob(ctx, sys, o, w, pat, res, logf)
	if err := sys.stop(); err != nil && runErr == nil {
		runErr = err
	}
	return res, runErr
}

// memSampler follows the peak of the processes' summed PSS.
type memSampler struct {
	roots []int
	peak  int64
	stop  chan struct{}
	done  chan struct{}
}

func sampleMemory(roots []int, every time.Duration) *memSampler {
	m := &memSampler{roots: roots, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			m.peak = max(m.peak, pssOf(roots))
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memSampler) end() int64 {
	close(m.stop)
	<-m.done
	return max(m.peak, pssOf(m.roots))
}

// pssOf sums Pss of the processes in roots' trees.
func pssOf(roots []int) int64 {
	var sum int64
	seen := map[int]bool{}
	for _, r := range roots {
		for _, pid := range proc.Descendants(r) {
			if seen[pid] {
				continue
			}
			seen[pid] = true
			b, err := os.ReadFile(filepath.Join(proc.Root, strconv.Itoa(pid), "smaps_rollup"))
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(b), "\n") {
				if rest, ok := strings.CutPrefix(l, "Pss:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
					sum += kb << 10
					break
				}
			}
		}
	}
	return sum
}

// cpuMark is the CPU time of roots' trees at one moment: their live
// processes' and, for each root, its reaped children's (instances that
// exited).
type cpuMark struct {
	snap  proc.Snapshot
	child time.Duration
	kids  []int // the roots' children then
}

func markCPU(roots []int) cpuMark {
	m := cpuMark{snap: proc.Take(roots)}
	for _, r := range roots {
		m.child += reapedCPU(r)
		m.kids = append(m.kids, proc.Children(r)...)
	}
	return m
}

// cpuSince is the CPU roots' trees spent since before. A child of a root
// that exited meanwhile is charged what it spent after before, not its
// lifetime: the root's reaped CPU grew by all of it (a leaf that scaled
// down in an idle window would charge the window every fold it ever did).
func cpuSince(roots []int, before cpuMark) time.Duration {
	cpu, _ := costSince(roots, before)
	return cpu
}

// costSince is cpuSince and the costs of the live processes since before,
// each (its CPU, its context switches).
func costSince(roots []int, before cpuMark) (time.Duration, []proc.Cost) {
	after := markCPU(roots)
	each := after.snap.Sub(before.snap)
	d := proc.Total(each).CPU + after.child - before.child
	for _, pid := range before.kids {
		if _, live := after.snap.Procs[pid]; !live {
			d -= before.snap.Procs[pid].CPUTick
		}
	}
	return max(d, 0), each
}

// reapedCPU reads cutime + cstime of pid: the CPU of its children that
// exited and were waited for.
func reapedCPU(pid int) time.Duration {
	b, err := os.ReadFile(filepath.Join(proc.Root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// After the comm: state(0) … utime(11) stime(12) cutime(13) cstime(14).
	if len(f) < 15 {
		return 0
	}
	cu, _ := strconv.ParseInt(f[13], 10, 64)
	cs, _ := strconv.ParseInt(f[14], 10, 64)
	return time.Duration(cu+cs) * proc.ClockTick
}

// runFLJob runs the job's rounds on sys and fills res.
func runFLJob(ctx context.Context, sys flSystem, o FLOptions, w *flWorkload, pat flPattern, res *FLModeResult, logf func(string, ...any)) error {
	c := sys.client()
	defer c.Close()
	// One round more than measured: the idle window after the last is
	// between rounds (the next one open, its clients away), as the goal
	// "idle CPU 0 between rounds" means, not after the job's end.
	job := fl.Job{ID: "bench", Params: o.Params, Updates: w.goal, Rounds: o.Rounds + 1}
	if err := c.Create(ctx, job); err != nil {
		return err
	}
	roots := sys.roots()
	mem := sampleMemory(roots, 100*time.Millisecond)
	var errs []string
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Sprintf(format, args...))
	}
	var mu sync.Mutex
	start := markCPU(roots)
	slots := make(chan struct{}, o.Concurrency)
	model := make([]byte, o.Params*4) // client 0's copy, checked
	var prevClients []int
	for r := 1; r <= o.Rounds; r++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		cpu0 := markCPU(roots)
		t0 := mono.Now()
		closed := make(chan struct{})
		var wg, late sync.WaitGroup
		var folded []int
		for cl := range o.Clients {
			g := &wg
			if w.late[cl] {
				g = &late
			}
			g.Add(1)
			go func() {
				defer g.Done()
				id := "c" + strconv.Itoa(cl)
				if !o.NoFetch {
					var into []byte
					if cl == 0 {
						into = model
					}
					got, n, err := c.Model(ctx, id, "bench", r-1, into)
					// A model fetched by many at once: Spry's app answers
					// 503 past pool.MaxShare readers; fetch it again.
					for wait := time.Now().Add(2 * time.Minute); err != nil && strings.Contains(err.Error(), "503") && time.Now().Before(wait); {
						mu.Lock()
						res.Retries++
						mu.Unlock()
						time.Sleep(10 * time.Millisecond)
						got, n, err = c.Model(ctx, id, "bench", r-1, into)
					}
					mu.Lock()
					switch {
					case err != nil:
						fail("round %d: client %d: fetching model %d: %v", r, cl, r-1, err)
					case got != r-1 || n != o.Params*4:
						fail("round %d: client %d: fetched model %d of %d bytes, want model %d of %d", r, cl, got, n, r-1, o.Params*4)
					case cl == 0 && r > 1:
						if e := checkModel(w, model, prevClients); e != "" {
							fail("round %d: model %d: %s", r, r-1, e)
						}
					}
					mu.Unlock()
				}
				switch {
				case w.late[cl]:
					<-closed
				case pat.kind == "spread":
					time.Sleep(time.Duration(uint64(cl)*2654435761%1000) * pat.spread / 1000)
				}
				for giveUp := time.Now().Add(2 * time.Minute); ; {
					slots <- struct{}{}
					st, msg, err := c.Update(ctx, "bench", r, id, w.samples[cl], w.body(cl))
					<-slots
					mu.Lock()
					retry := time.Now().Before(giveUp) && ctx.Err() == nil
					switch {
					case err != nil && retry && strings.Contains(err.Error(), "broken pipe"):
						// The server answered (503: no room for the body
						// now) and closed before the body was sent.
						res.Retries++
						mu.Unlock()
						time.Sleep(20 * time.Millisecond)
						continue
					case err != nil:
						fail("round %d: client %d: update: %v", r, cl, err)
					case st == http.StatusServiceUnavailable && retry:
						res.Retries++
						mu.Unlock()
						time.Sleep(20 * time.Millisecond)
						continue
					case st == http.StatusOK && !w.late[cl]:
						folded = append(folded, cl)
					case st == http.StatusGone && w.late[cl]:
						res.Refused++
					default:
						fail("round %d: client %d: update answered %d: %.300s", r, cl, st, msg)
					}
					mu.Unlock()
					return
				}
			}()
		}
		wg.Wait()
		// The round's model: ready when the last update was answered, or
		// soon after (a deadline).
		var result *fl.Result
		deadline := time.Now().Add(5 * time.Minute)
		for result == nil && time.Now().Before(deadline) && ctx.Err() == nil {
			st, err := c.Status(ctx, "bench")
			if err != nil {
				fail("round %d: status: %v", r, err)
				break
			}
			if len(st.Results) > 0 {
				if last := st.Results[len(st.Results)-1]; last.Round == r {
					result = &last
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(closed)
		late.Wait()
		if result == nil {
			return fmt.Errorf("round %d: no model (errors: %s)", r, strings.Join(errs, "; "))
		}
		cpu := cpuSince(roots, cpu0)
		res.RoundS = append(res.RoundS, float64(result.ReadyNs-t0)/1e9)
		res.AggregateS = append(res.AggregateS, float64(result.ReadyNs-result.LastNs)/1e9)
		res.CPUS = append(res.CPUS, cpu.Seconds())
		if result.Leaves > 0 {
			res.Leaves = append(res.Leaves, result.Leaves)
		}
		if result.Partials > 0 {
			res.Partials = append(res.Partials, result.Partials)
		}
		if result.Updates != len(folded) {
			fail("round %d: the model holds %d updates, %d were acknowledged", r, result.Updates, len(folded))
		}
		slices.Sort(folded)
		prevClients = folded
		logf("bench fl:   round %d: %.3f s, aggregate %.3f s, CPU %.2f s, %d updates, %d leaves, %d partial sums", r, res.RoundS[r-1], res.AggregateS[r-1], cpu.Seconds(), result.Updates, result.Leaves, result.Partials)
	}
	total := cpuSince(roots, start)
	// The last model, checked too.
	if got, n, err := c.Model(ctx, "c0", "bench", o.Rounds, model); err != nil || got != o.Rounds || n != len(model) {
		fail("the final model: round %d, %d bytes, %v", got, n, err)
	} else if e := checkModel(w, model, prevClients); e != "" {
		fail("the final model: %s", e)
	}
	// Idle between rounds: no traffic; what does the system burn?
	idle0 := markCPU(roots)
	time.Sleep(o.Idle)
	cpu, each := costSince(roots, idle0)
	res.IdleCPU = cpu.Seconds() / o.Idle.Seconds()
	res.IdleWakeups = float64(proc.Total(each).CtxSw()) / o.Idle.Seconds()
	for _, c := range each {
		if c.CPU > 0 || c.CtxSw() > 0 {
			logf("bench fl:   idle: %s (pid %d): CPU %v, %d wake-ups", c.Comm, c.PID, c.CPU, c.CtxSw())
		}
	}
	res.PeakRSS = mem.end()
	if err := c.Delete(ctx, "bench"); err != nil {
		fail("delete: %v", err)
	}
	res.CPUPerRound = total.Seconds() / float64(o.Rounds)
	res.RoundP50 = median(res.RoundS)
	res.AggregateP50 = median(res.AggregateS)
	res.Errors = len(errs)
	if len(errs) > 0 {
		res.FirstError = errs[0]
	}
	return nil
}

// checkModel compares a model's checked parameters with FedAvg of the
// clients' updates.
func checkModel(w *flWorkload, model []byte, clients []int) string {
	if len(clients) == 0 {
		return ""
	}
	m, ok := fl.Floats(model)
	if !ok {
		return "not float32s"
	}
	mean, scale := w.expect(clients)
	for j, i := range w.check {
		if d := math.Abs(float64(m[i]) - mean[j]); d > fl.Tolerance(len(clients), scale[j]) {
			return fmt.Sprintf("parameter %d is %v, FedAvg of the %d updates is %v", i, m[i], len(clients), mean[j])
		}
	}
	return ""
}

// The baselines' processes.

type procSystem struct {
	children []*child
	c        flClient
}

func (s *procSystem) client() flClient { return s.c }

func (s *procSystem) roots() []int {
	var out []int
	for _, c := range s.children {
		out = append(out, c.pid())
	}
	return out
}

func (s *procSystem) stop() error {
	var ps []Proc
	for _, c := range s.children {
		ps = append(ps, Proc{PID: c.pid(), Component: c.name})
		c.stop(5 * time.Second)
	}
	return survivors(ps)
}

func startBenchProc(s *procSystem, exe, dir, name string, c baseline.Config) (*child, error) {
	js, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "bench-proc")
	cmd.Env = append(os.Environ(), baseline.EnvConfig+"="+string(js))
	ch, err := startChild(name, cmd, filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	s.children = append(s.children, ch)
	return ch, nil
}

func startServerful(o FLOptions, dir string) (_ flSystem, err error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	s := &procSystem{}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	ch, err := startBenchProc(s, o.Exe, dir, "fl-server", baseline.Config{Role: baseline.RoleFLServer, GRPC: ports[0], Calls: o.Leaves})
	if err != nil {
		return nil, err
	}
	if err := waitListening(ports[0], 30*time.Second, ch); err != nil {
		return nil, err
	}
	s.c = newGRPCFL(ports[0])
	return s, nil
}

func startKnativeFL(o FLOptions, dir string) (_ flSystem, err error) {
	n := o.Leaves
	ports, err := freePorts(3 + 2*n)
	if err != nil {
		return nil, err
	}
	s := &procSystem{}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	broker := ports[0]
	up := map[string][]string{baseline.FLTop: {ports[2]}}
	type addr struct{ name, fn, side string }
	procs := []addr{{baseline.FLTop, ports[1], ports[2]}}
	for i := range n {
		name := baseline.FLLeafName(i)
		fn, side := ports[3+2*i], ports[4+2*i]
		procs = append(procs, addr{name, fn, side})
		up[name] = []string{side}
		up[baseline.FLLeaves] = append(up[baseline.FLLeaves], side)
	}
	var waits []func() error
	for _, p := range procs {
		role := baseline.RoleFLLeaf
		if p.name == baseline.FLTop {
			role = baseline.RoleFLTop
		}
		fc, err := startBenchProc(s, o.Exe, dir, "fn-"+p.name, baseline.Config{Role: role, Function: p.name, HTTP: p.fn, Broker: broker})
		if err != nil {
			return nil, err
		}
		sc, err := startBenchProc(s, o.Exe, dir, "sidecar-"+p.name, baseline.Config{Role: baseline.RoleSidecar, Listen: p.side, Target: p.fn, Timeout: 10 * time.Minute})
		if err != nil {
			return nil, err
		}
		waits = append(waits, func() error { return waitListening(p.fn, 30*time.Second, fc) },
			func() error { return waitListening(p.side, 30*time.Second, sc) })
	}
	bc, err := startBenchProc(s, o.Exe, dir, "broker", baseline.Config{Role: baseline.RoleBroker, Listen: broker, Upstreams: up})
	if err != nil {
		return nil, err
	}
	waits = append(waits, func() error { return waitListening(broker, 30*time.Second, bc) })
	for _, wt := range waits {
		if err := wt(); err != nil {
			return nil, err
		}
	}
	base := "http://" + broker + "/_fn/"
	s.c = newHTTPFL(base+baseline.FLTop, base+baseline.FLLeaves)
	return s, nil
}

// spryFL is a node running the aggregation app.
type spryFL struct {
	node *spryNode
	c    flClient
}

func (s *spryFL) client() flClient { return s.c }
func (s *spryFL) roots() []int     { return []int{s.node.pid()} }
func (s *spryFL) stop() error      { return s.node.shutdown() }

// startSpryFL starts a node with the aggregation app (spry fl config),
// its pool sized for the bench's uploads in flight.
func startSpryFL(ctx context.Context, o FLOptions, dir string) (flSystem, error) {
	app := fl.AppOptions{Params: o.Params, Uploads: o.Concurrency, MaxLeaves: max(o.Leaves, 2)}
	yaml := fl.AppYAML(app)
	node, err := startNode(o.Exe, dir, "spry node (fl)", yaml)
	if err != nil {
		return nil, err
	}
	c := newHTTPFL("http://"+node.addr, "http://"+node.addr)
	if err := node.waitUp(ctx, time.Minute, func() error {
		_, err := c.Status(ctx, "none")
		if err != nil && strings.Contains(err.Error(), "404") {
			return nil // the top answers: no such job
		}
		return fmt.Errorf("not up: %v", err)
	}); err != nil {
		node.shutdown()
		return nil, err
	}
	return &spryFL{node: node, c: c}, nil
}
