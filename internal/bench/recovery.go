package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spry-dev/spry/bench"
	"github.com/spry-dev/spry/internal/bench/load"
)

// `spry bench recovery`: the time traffic takes to recover after a node
// is lost. A local cluster (spry-controller local) runs the 2-step chain
// with its steps on different nodes (room for one instance per node) and a
// spare node; an open-loop load goes to the first step's node; the agent
// of the second step's node is killed with SIGKILL (its instances go with
// it). The requests it held end 502 at the origin, new ones find no
// instance of the step until the controller sees the lease run out,
// places the step on the spare node and the origin learns of it. Each run
// is on a fresh cluster; the report gives every run and the medians.

// RecoveryOptions configure the recovery bench.
type RecoveryOptions struct {
	Exe       string        // the spry executable (spry-controller beside it)
	Dir       string        // scratch directory (default: a temporary one)
	Nodes     int           // node agents (default 3, at least 3)
	Runs      int           // fresh clusters, one kill each (default 3)
	Rate      float64       // requests per second, open loop (default 500)
	Before    time.Duration // load before the kill (default 2s)
	Lease     time.Duration // the agents' lease (default 2s; whole seconds)
	Heartbeat time.Duration // the agents' heartbeat and the controller's period (default 250ms)
	Timeout   time.Duration // give up on a run this long after the kill (default 60s)
	Log       io.Writer
}

// RecoveryRun is one kill.
type RecoveryRun struct {
	Killed string `json:"killed"` // the node whose agent was killed
	Spare  string `json:"spare"`  // where the step went
	// RecoveredMillis: from the kill until the answer of the last
	// disrupted request (failed, or slower than ThresholdMillis): when
	// traffic flows as before again.
	RecoveredMillis float64 `json:"recovered_ms"`
	// ReplacedMillis: from the kill until another node reported the
	// step's instance ready (its admin status, polled every 20 ms).
	ReplacedMillis float64 `json:"replaced_ms"`
	// P50BeforeMillis is the median latency before the kill;
	// ThresholdMillis ten times that, at least 10 ms.
	P50BeforeMillis float64 `json:"p50_before_ms"`
	ThresholdMillis float64 `json:"threshold_ms"`
	// Requests answered (or failed) after the kill; of them Failed
	// failed and Slow were answered over the threshold, the slowest
	// after MaxLatencyMillis.
	Requests         int     `json:"requests"`
	Failed           int     `json:"failed"`
	Slow             int     `json:"slow"`
	MaxLatencyMillis float64 `json:"max_latency_ms"`
	FirstError       string  `json:"first_error,omitempty"`
}

// RecoveryReport is report.json of spry bench recovery.
type RecoveryReport struct {
	Machine Machine `json:"machine"`
	Nodes   int     `json:"nodes"`
	Rate    float64 `json:"rate"`
	// LeaseMillis is the agents' lease: a node is lost once it has not
	// renewed it for this long, the floor of every recovery here.
	LeaseMillis     float64       `json:"lease_ms"`
	HeartbeatMillis float64       `json:"heartbeat_ms"`
	Runs            []RecoveryRun `json:"runs"`
	// Medians over the runs.
	RecoveredMillis float64 `json:"recovered_ms"`
	ReplacedMillis  float64 `json:"replaced_ms"`
	Failed          float64 `json:"failed"`
	Slow            float64 `json:"slow"`
}

func (o *RecoveryOptions) fill() error {
	o.Nodes = cmp.Or(o.Nodes, 3)
	if o.Nodes < 3 {
		return fmt.Errorf("bench recovery: --nodes %d: want at least 3 (two for the chain, one spare)", o.Nodes)
	}
	o.Runs = cmp.Or(o.Runs, 3)
	if o.Runs < 1 {
		return fmt.Errorf("bench recovery: --runs %d: want at least 1", o.Runs)
	}
	if o.Rate == 0 {
		o.Rate = 500
	}
	o.Before = cmp.Or(o.Before, 2*time.Second)
	o.Lease = cmp.Or(o.Lease, 2*time.Second)
	o.Heartbeat = cmp.Or(o.Heartbeat, 250*time.Millisecond)
	o.Timeout = cmp.Or(o.Timeout, time.Minute)
	if o.Lease%time.Second != 0 || o.Lease < 2*o.Heartbeat {
		return fmt.Errorf("bench recovery: --lease %v: want whole seconds, at least two heartbeats (%v)", o.Lease, o.Heartbeat)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}

// RunRecovery runs the recovery bench.
func RunRecovery(ctx context.Context, o RecoveryOptions) (*RecoveryReport, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	cleanup, err := workspace(&o.Exe, &o.Dir, "spry-bench-recovery-")
	defer cleanup()
	if err != nil {
		return nil, err
	}
	w, err := bench.New("chain", bench.Options{Steps: 2})
	if err != nil {
		return nil, err
	}
	reqs, _, err := prepare(w)
	if err != nil {
		return nil, err
	}
	rep := &RecoveryReport{Machine: machine(), Nodes: o.Nodes, Rate: o.Rate,
		LeaseMillis: ms(o.Lease), HeartbeatMillis: ms(o.Heartbeat)}
	for i := range o.Runs {
		r, err := recoverOnce(ctx, o, filepath.Join(o.Dir, "run"+strconv.Itoa(i+1)), w, reqs)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i+1, err)
		}
		fmt.Fprintf(o.Log, "bench recovery: run %d: killed %s: of %d requests after the kill %d failed, %d slow (up to %.0f ms); recovered after %.0f ms (step ready on %s after %.0f ms)\n",
			i+1, r.Killed, r.Requests, r.Failed, r.Slow, r.MaxLatencyMillis, r.RecoveredMillis, r.Spare, r.ReplacedMillis)
		rep.Runs = append(rep.Runs, *r)
	}
	med := func(f func(RecoveryRun) float64) float64 {
		v := make([]float64, len(rep.Runs))
		for i, r := range rep.Runs {
			v[i] = f(r)
		}
		return median(v)
	}
	rep.RecoveredMillis = med(func(r RecoveryRun) float64 { return r.RecoveredMillis })
	rep.ReplacedMillis = med(func(r RecoveryRun) float64 { return r.ReplacedMillis })
	rep.Failed = med(func(r RecoveryRun) float64 { return float64(r.Failed) })
	rep.Slow = med(func(r RecoveryRun) float64 { return float64(r.Slow) })
	return rep, nil
}

// recoverOnce brings up a cluster, kills the second step's node under
// load and measures.
func recoverOnce(ctx context.Context, o RecoveryOptions, dir string, w *bench.Workload, reqs []load.Request) (_ *RecoveryRun, err error) {
	lc, err := startLocal(ctx, o.Exe, dir, o.Nodes, "--heartbeat", o.Heartbeat.String(),
		"--lease", o.Lease.String(), "--capacity-cpu", strconv.Itoa(demandMillis))
	if err != nil {
		return nil, err
	}
	var procs []Proc
	defer lc.stop(&procs, &err)
	y, err := appYAML(w, "auto", "", "")
	if err != nil {
		return nil, err
	}
	if err := lc.deploy(ctx, "bench", y); err != nil {
		return nil, err
	}
	first, last := w.Chains[0].Steps[0], w.Chains[0].Steps[len(w.Chains[0].Steps)-1]
	var where map[string]int // function → index of the node running it
	if err := lc.wait(ctx, "the chain's steps on two nodes", func() (bool, error) {
		var err error
		where, procs, err = placed(lc)
		_, a := where[first]
		_, b := where[last]
		return err == nil && a && b, err
	}); err != nil {
		return nil, err
	}
	nodes := lc.info.Nodes
	origin, victim := where[first], where[last]
	if origin == victim {
		return nil, fmt.Errorf("placement put both steps on %s", nodes[origin].Name)
	}
	spare := -1 // a node that runs neither step
	for i := range nodes {
		if i != origin && i != victim && spare < 0 {
			spare = i
		}
	}
	vs, err := fetchStatus(nodes[victim].Admin)
	if err != nil {
		return nil, err
	}
	if err := probe(ctx, nodes[origin].Gateway, "", reqs); err != nil {
		return nil, err
	}
	run := &RecoveryRun{Killed: nodes[victim].Name}

	// The load, open loop, to the first step's node; the kill after
	// o.Before of it; the run ends o.Before after the step is ready again
	// somewhere (or at the timeout).
	var killedAt time.Time
	type placedAgain struct {
		node string
		at   time.Time
	}
	replaced := make(chan placedAgain, 1)
	end := make(chan struct{})
	var start time.Time
	cfg := load.Config{Addr: nodes[origin].Gateway, Requests: reqs, Connections: 64, Duration: o.Before + o.Timeout,
		Schedule: &until{s: &load.Constant{Rate: o.Rate}, end: end}, Record: true, Timeout: 10 * time.Second,
		OnMeasure: func() {
			start = time.Now()
			go func() {
				var again placedAgain
				defer func() { replaced <- again }() // after killedAt is written
				select {
				case <-time.After(o.Before):
				case <-ctx.Done():
					return
				}
				killedAt = time.Now()
				syscall.Kill(vs.Node.PID, syscall.SIGKILL)
				again.node, again.at = waitReplaced(ctx, lc, last, nodes[victim].Name, killedAt.Add(o.Timeout))
				select {
				case <-time.After(o.Before):
				case <-ctx.Done():
				}
				close(end)
			}()
		}}
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	again := <-replaced
	if killedAt.IsZero() {
		return nil, fmt.Errorf("the load ended before the kill")
	}
	run.Spare = again.node
	if run.Spare == "" {
		return nil, fmt.Errorf("%s was not placed again within %v of the kill", last, o.Timeout)
	}
	if spare >= 0 && run.Spare != nodes[spare].Name {
		fmt.Fprintf(o.Log, "bench recovery: %s went to %s, not the spare %s\n", last, run.Spare, nodes[spare].Name)
	}
	run.ReplacedMillis = ms(again.at.Sub(killedAt))
	kill := killedAt.Sub(start)
	// Before the kill: the usual latency. After it, a request is
	// disrupted when it failed or took over ten times the usual median (at
	// least 10 ms): those the killed node held end 502, those that find
	// no instance of the step wait at the origin for one. Recovered: the
	// last disrupted request's answer.
	var before []time.Duration
	for _, x := range res.Samples {
		if x.Due < kill && !x.Failed {
			before = append(before, x.Done-x.Due)
		}
	}
	slices.Sort(before)
	if len(before) > 0 {
		run.P50BeforeMillis = ms(before[len(before)/2])
	}
	thr := max(10*time.Duration(run.P50BeforeMillis*1e6), 10*time.Millisecond)
	run.ThresholdMillis = ms(thr)
	var recovered time.Duration
	for _, x := range res.Samples {
		if x.Done < kill {
			continue
		}
		run.Requests++
		lat := x.Done - x.Due
		if x.Failed {
			run.Failed++
		} else if lat > thr {
			run.Slow++
		} else {
			continue
		}
		recovered = max(recovered, x.Done-kill)
		if !x.Failed {
			run.MaxLatencyMillis = max(run.MaxLatencyMillis, ms(lat))
		}
	}
	run.RecoveredMillis = ms(recovered)
	run.FirstError = res.FirstErr
	return run, nil
}

// until is a schedule that ends when end is closed.
type until struct {
	s   load.Schedule
	end <-chan struct{}
}

func (u *until) Next() (time.Duration, bool) {
	select {
	case <-u.end:
		return 0, false
	default:
		return u.s.Next()
	}
}

// waitReplaced polls the nodes other than the killed one until one runs
// a ready instance of fn, and returns its name and when it saw it ("" at
// the deadline).
func waitReplaced(ctx context.Context, lc *localCluster, fn, killed string, deadline time.Time) (string, time.Time) {
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for _, n := range lc.info.Nodes {
			if n.Name == killed {
				continue
			}
			if s, err := fetchStatus(n.Admin); err == nil && s.ready()[fn] {
				return n.Name, time.Now()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", time.Time{}
}

// placed returns which node (index) runs a ready instance of each
// function, and every node's process.
func placed(lc *localCluster) (map[string]int, []Proc, error) {
	where := map[string]int{}
	var procs []Proc
	for i, n := range lc.info.Nodes {
		s, err := fetchStatus(n.Admin)
		if err != nil {
			return nil, nil, err
		}
		procs = append(procs, Proc{PID: s.Node.PID, Role: RoleGateway, Component: "gateway"})
		for f := range s.ready() {
			where[f] = i
		}
	}
	return where, procs, nil
}

// WriteRecovery writes report.json and report.md to dir.
func WriteRecovery(dir string, r *RecoveryReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.Markdown()), 0o644)
}

// Markdown renders the report.
func (r *RecoveryReport) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# spry bench recovery\n\nMachine: %s, %d cores, Linux, %s.\n\n", r.Machine.CPU, r.Machine.Cores, r.Machine.Go)
	fmt.Fprintf(&b, "A local cluster of %d node agents (spry-controller local), the 2-step chain with its steps on two nodes and a spare; "+
		"%.0f req/s open loop to the first step's node; SIGKILL of the second step's node's agent. Lease %.0f ms, heartbeat and control period %.0f ms.\n\n",
		r.Nodes, r.Rate, r.LeaseMillis, r.HeartbeatMillis)
	b.WriteString("| run | killed | step ready again on | after the kill: failed / slow / requests | slowest ms | p50 before ms | step ready after ms | recovered after ms |\n|---|---|---|---:|---:|---:|---:|---:|\n")
	for i, x := range r.Runs {
		fmt.Fprintf(&b, "| %d | %s | %s | %d / %d / %d | %.0f | %.2f | %.0f | **%.0f** |\n", i+1, x.Killed, x.Spare, x.Failed, x.Slow, x.Requests,
			x.MaxLatencyMillis, x.P50BeforeMillis, x.ReplacedMillis, x.RecoveredMillis)
	}
	fmt.Fprintf(&b, "\nMedians: recovered after **%.0f ms** (the last failed or slow request's answer; slow: over 10× the median before the kill, at least 10 ms), "+
		"the step ready on another node after %.0f ms; %.0f requests failed, %.0f slow.\n", r.RecoveredMillis, r.ReplacedMillis, r.Failed, r.Slow)
	return b.String()
}
