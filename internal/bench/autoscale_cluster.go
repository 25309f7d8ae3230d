package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/spry-dev/spry/bench"
	"github.com/spry-dev/spry/internal/bench/load"
	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/cluster/kube"
	"github.com/spry-dev/spry/internal/control/trace"
)

// The replay on a local cluster (`spry bench autoscale --nodes N`): the
// same app and trace as on one node, deployed as a SpryApp to N node
// agents under spry-controller local. The controller's autoscaler sizes the
// function on the cluster-wide counters of the agents' heartbeats, DRF
// places the instances, and the load is split evenly over every node's
// gateway (ingress anywhere: a node without an instance hands the request
// to one that has, and a function at zero is woken from any node).

// clusterHeartbeat is the agents' heartbeat in the replay: four per
// control period. A round takes each node's counters as of its latest
// heartbeat, so the arrivals it sees span one period give or take a
// heartbeat: the shorter the heartbeat, the less that noise.
const clusterHeartbeat = 250 * time.Millisecond

// NodeShare is one node's part of a cluster replay.
type NodeShare struct {
	Node string `json:"node"`
	// InstanceSeconds: ∫ (ready + starting) dt on this node over the
	// trace, from the status polls, in trace seconds.
	InstanceSeconds float64 `json:"instance_seconds"`
	MaxInstances    int     `json:"max_instances"`
	Requests        int     `json:"requests"` // sent to this node's gateway (measured or not)
}

// clusterPoll is one reading of every node's status.
type clusterPoll struct {
	sum    statusPoll
	byNode []int // ready + starting per node
}

// runClusterPolicy replays the trace on a fresh local cluster of o.Nodes
// agents, the function scaled by policy.
func runClusterPolicy(ctx context.Context, o AutoscaleOptions, policy string, tr trace.Trace, sec time.Duration, w *bench.Workload, reqs []load.Request) (_ *PolicyResult, err error) {
	dir := filepath.Join(o.Dir, policy)
	fixed := o.Fixed
	if fixed == 0 {
		fixed = max(int(math.Ceil(tr.Peak()*o.RateScale*o.StepCPU.Seconds()/0.7)), 1)
	}
	most := max(o.Max, fixed)
	// Each node offers room for its share of the most instances and one
	// more (demandMillis each): placement has to spread them at the peak.
	perNode := (most+o.Nodes-1)/o.Nodes + 1
	lc, err := startLocal(ctx, o.Exe, dir, o.Nodes, "--heartbeat", clusterHeartbeat.String(),
		"--period", nodeControlPeriod.String(), "--capacity-cpu", strconv.Itoa(perNode*demandMillis))
	if err != nil {
		return nil, err
	}
	var procs []Proc
	defer lc.stop(&procs, &err)
	if err := lc.deploy(ctx, "autoscale", autoscaleYAML(w, o, policy, fixed)); err != nil {
		return nil, err
	}
	fn := w.Functions[0].Name
	nodes := lc.info.Nodes
	if err := lc.wait(ctx, "the app on every node", func() (bool, error) {
		for _, n := range nodes {
			if _, err := fetchScale(n.Admin, fn); err != nil {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return nil, err
	}
	pids := map[int]bool{lc.ctl.pid(): true}
	saw := func(ps ...int) {
		for _, p := range ps {
			if !pids[p] {
				pids[p] = true
				procs = append(procs, Proc{PID: p, Role: RoleFunction})
			}
		}
	}
	for _, n := range nodes {
		if s, err := fetchStatus(n.Admin); err == nil {
			saw(s.Node.PID)
		}
	}
	metrics := func() (fnMetrics, error) {
		var sum fnMetrics
		for _, n := range nodes {
			m, err := fetchFnMetrics(n.Admin, fn)
			if err != nil {
				return sum, err
			}
			sum.served += m.served
			sum.busy += m.busy
		}
		return sum, nil
	}

	// Poll every node's status, and the controller's decision from the
	// SpryApp's status, for the whole run.
	stopPoll := pollEvery(ctx, o.Poll, func(ctx context.Context) (clusterPoll, bool) {
		p, ok := pollCluster(ctx, lc, nodes, fn, saw)
		if ok {
			p.sum.cpu = takeCPU(lc.ctl.pid())
		}
		return p, ok
	})
	defer stopPoll()

	// The fixed overhead, through the first node's gateway (the request
	// that wakes the function from zero comes first).
	overhead, err := measureOverhead(ctx, nodes[0].Gateway, metrics, reqs)
	if err != nil {
		return nil, err
	}
	m0, _ := metrics()

	// The load, split evenly over the nodes' gateways: one open-loop
	// generator per node at 1/N of the trace's rate (Poisson arrivals
	// split at random are Poisson at 1/N the rate), each with its seed.
	traceWall := time.Duration(len(tr.RPS)) * sec
	c0 := takeCPU(lc.ctl.pid())
	results := make([]*load.Result, len(nodes))
	scheds := make([]*traceSchedule, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		scheds[i] = newTraceSchedule(tr, o.Speedup, o.RateScale/float64(len(nodes)), o.Warmup, !o.Uniform, o.Seed+uint64(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = load.Run(ctx, load.Config{
				Addr: n.Gateway, Requests: reqs, Connections: max(o.Connections/len(nodes), 1),
				Duration: o.Warmup + traceWall + drainGrace, Schedule: scheds[i], Record: true,
				Timeout: 2 * time.Minute,
			})
		}()
	}
	wg.Wait()
	c1 := takeCPU(lc.ctl.pid())
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if lc.ctl.exited() {
		log, _ := os.ReadFile(lc.logPath)
		return nil, fmt.Errorf("the cluster exited during the replay: %s", tail(log, 3000))
	}
	m1, _ := metrics()
	polls := stopPoll()

	// One timeline: every generator's samples on the first one's clock.
	res := results[0]
	var samples []load.Sample
	scheduled := 0
	shares := make([]NodeShare, len(nodes))
	for i, r := range results {
		off := r.Start.Sub(res.Start)
		for _, s := range r.Samples {
			samples = append(samples, load.Sample{Due: s.Due + off, Done: s.Done + off, Failed: s.Failed})
		}
		scheduled += scheds[i].count
		shares[i] = NodeShare{Node: nodes[i].Name, Requests: scheds[i].count}
		if i > 0 {
			res.Late += r.Late
			if res.FirstErr == "" {
				res.FirstErr = r.FirstErr
			}
		}
	}
	slices.SortFunc(samples, func(a, b load.Sample) int { return int(a.Due - b.Due) })

	// The cluster's wanted count, from the polls (the controller decides
	// in its own process: no node logs its decisions), and per node what
	// ran there.
	flat := make([]statusPoll, len(polls))
	var evs []scaleEvent
	for i := range polls {
		p := &polls[i]
		p.sum.At = p.sum.Abs.Sub(res.Start)
		flat[i] = p.sum
		if i > 0 && p.sum.Desired != polls[i-1].sum.Desired {
			e := scaleEvent{At: p.sum.At, From: polls[i-1].sum.Desired, To: p.sum.Desired, Reason: p.sum.Reason}
			if e.From == 0 {
				e.Reason = "cold-start"
			}
			evs = append(evs, e)
		}
	}
	cpuCores(flat)
	initial := 0
	if len(flat) > 0 {
		initial = flat[0].Desired
	}
	in := policyInputs{
		policy: policy, samples: samples, events: evs, polls: flat, initial: initial,
		origin: o.Warmup, sec: sec, n: len(tr.RPS), speedup: o.Speedup, slo: o.SLO, overhead: overhead,
		scheduled: scheduled,
	}
	pr := account(in)
	pr.Errors += res.Late
	pr.FirstError = res.FirstErr
	end := o.Warmup + traceWall
	for k := range nodes {
		steps := make([]countStep, len(polls))
		for i, p := range polls {
			steps[i] = countStep{p.sum.At, p.byNode[k]}
			if p.sum.At >= o.Warmup && p.sum.At < end {
				shares[k].MaxInstances = max(shares[k].MaxInstances, p.byNode[k])
			}
		}
		if len(steps) > 0 {
			shares[k].InstanceSeconds = integrate(steps, steps[0].N, o.Warmup, end) * o.Speedup
		}
	}
	pr.Nodes = shares
	pr.nodeCounts = polls
	pr.finish(o, fixed, tr, m0, m1, c0, c1, lc.logPath)
	return pr, nil
}

// pollCluster reads every node's status for fn and sums it; the decision
// (desired, predicted rate, reason) is the controller's, from the
// SpryApp's status. ok is false when a node did not answer.
func pollCluster(ctx context.Context, lc *localCluster, nodes []localNode, fn string, saw func(...int)) (clusterPoll, bool) {
	p := clusterPoll{byNode: make([]int, len(nodes))}
	p.sum.Abs = time.Now()
	var met float64
	for i, n := range nodes {
		v, err := fetchScale(n.Admin, fn)
		if err != nil {
			return p, false
		}
		saw(v.pids...)
		s := &p.sum
		s.Ready += v.poll.Ready
		s.Starting += v.poll.Starting
		s.Draining += v.poll.Draining
		s.Desired += v.poll.Desired // the instances the controller assigned there
		s.RPS += v.poll.RPS
		s.Queue += v.poll.Queue
		s.P99Millis = max(s.P99Millis, v.poll.P99Millis)
		met += v.poll.RPS * v.poll.Attainment
		p.byNode[i] = v.poll.Ready + v.poll.Starting
	}
	p.sum.Attainment = 1
	if p.sum.RPS > 0 {
		p.sum.Attainment = met / p.sum.RPS
	}
	var app api.SpryApp
	if err := lc.kc.Get(ctx, kube.AppPath("default", "autoscale"), &app); err == nil {
		for _, f := range app.Status.Functions {
			if f.Name == fn {
				p.sum.Predicted, _ = strconv.ParseFloat(f.Predicted, 64)
				p.sum.Reason = f.Reason
			}
		}
	}
	return p, true
}
