package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"github.com/spry-dev/spry/internal/control"
)

// ClusterConfig describes a simulated cluster: heterogeneous nodes,
// functions in chains with heterogeneous instance sizes, speeds and
// load, sized so that the load at its peaks wants more than the cluster
// has (where placement's fairness matters).
type ClusterConfig struct {
	Nodes, Functions int
	Ticks            int     // control periods of 1 s to simulate; default 300
	Overcommit       float64 // peak demand / capacity of the scarcer resource; default 1.25
	Seed             uint64
	// MaxPreemptions per round for the DRF policies (0: the placer's default).
	MaxPreemptions int
}

// ClusterReport is `spry sim cluster`'s report.json.
type ClusterReport struct {
	Nodes     int            `json:"nodes"`
	Functions int            `json:"functions"`
	Chains    int            `json:"chains"`
	Ticks     int            `json:"ticks"`
	Seed      uint64         `json:"seed"`
	Policies  []PolicyResult `json:"policies"`
}

// PolicyResult is one placement policy's outcome on the workload: each
// quality figure is the mean over ticks, after the placement round.
type PolicyResult struct {
	Policy string `json:"policy"`
	// Unfairness is Mu's measure: Σ over functions and resources of
	// |max-min fair share − allocation|, as fractions of the cluster.
	Unfairness float64 `json:"unfairness"`
	// JainFairness is Jain's index of allocation / fair share (dominant).
	JainFairness float64 `json:"jain_fairness"`
	// ResourcesHeld is the fraction of the cluster's resources held by
	// instances (mean of CPU and memory).
	ResourcesHeld float64 `json:"resources_held"`
	// LocalHopFraction is the fraction of chain hops (weighted by their
	// traffic) that can stay on one node, in shared memory.
	LocalHopFraction float64 `json:"local_hop_fraction"`
	// DecisionMsP50/P99: wall time of one control round (every
	// function's autoscaler, then placement) on this machine.
	DecisionMsP50 float64 `json:"decision_ms_p50"`
	DecisionMsP99 float64 `json:"decision_ms_p99"`
	// MemoryBytes is the controller's live heap: placer and autoscalers.
	MemoryBytes uint64 `json:"memory_bytes"`
	// SLOMetFraction is the fraction of requests whose estimated latency
	// (queueing + execution) was within their function's SLO.
	SLOMetFraction float64 `json:"slo_met_fraction"`
	// Instances is the mean number placed; UnplacedFraction the mean
	// fraction of wanted instances that found no room.
	Instances        float64 `json:"instances"`
	UnplacedFraction float64 `json:"unplaced_fraction"`
}

type simFn struct {
	name       string
	demand     control.Resources
	exec       float64 // seconds
	conc       int
	slo        float64
	chain      int
	queue      float64
	ready      int
	carry      float64
	lastServed float64
}

type simChain struct {
	fns               []int
	base, phase       float64
	burstLeft         int
	burstMul, current float64
}

// nodeTypes are the node shapes a simulated cluster mixes.
var nodeTypes = []control.Resources{
	{8000, 32 << 30}, {16000, 64 << 30}, {32000, 128 << 30}, {16000, 32 << 30},
}

// fnTypes are instance shapes: CPU-heavy, memory-heavy, balanced, small.
var fnTypes = []control.Resources{
	{1000, 1 << 30}, {250, 2 << 30}, {500, 1 << 30}, {100, 256 << 20},
}

// Cluster runs the cluster's control loop ([control.Fleet]: mu
// autoscaling on cluster-wide observations, then placement) once per
// placement policy on the same generated workload, and reports each.
func Cluster(cfg ClusterConfig) (*ClusterReport, error) {
	if cfg.Nodes < 1 || cfg.Nodes > 100000 {
		return nil, fmt.Errorf("nodes: %d, want 1..100000", cfg.Nodes)
	}
	if cfg.Functions < 1 || cfg.Functions > 1000000 {
		return nil, fmt.Errorf("functions: %d, want 1..1000000", cfg.Functions)
	}
	if cfg.Ticks == 0 {
		cfg.Ticks = 300
	}
	if cfg.Ticks < 1 {
		return nil, errors.New("ticks: want ≥ 1")
	}
	if cfg.Overcommit == 0 {
		cfg.Overcommit = 1.25
	}
	if !(cfg.Overcommit > 0) {
		return nil, errors.New("overcommit: want > 0")
	}
	rep := &ClusterReport{Nodes: cfg.Nodes, Functions: cfg.Functions, Ticks: cfg.Ticks, Seed: cfg.Seed}
	for _, s := range control.Strategies {
		r, chains, err := runCluster(cfg, s)
		if err != nil {
			return nil, err
		}
		rep.Chains = chains
		rep.Policies = append(rep.Policies, r)
	}
	return rep, nil
}

func workload(cfg ClusterConfig) ([]control.Resources, []simFn, []simChain) {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	nodes := make([]control.Resources, cfg.Nodes)
	var capTotal control.Resources
	for i := range nodes {
		nodes[i] = nodeTypes[rng.IntN(len(nodeTypes))]
		for r := range capTotal {
			capTotal[r] += nodes[i][r]
		}
	}
	fns := make([]simFn, cfg.Functions)
	var chains []simChain
	for i := 0; i < len(fns); {
		n := min(1+rng.IntN(4), len(fns)-i)
		c := simChain{base: math.Exp(rng.NormFloat64() * 1.2), phase: rng.Float64()}
		for k := range n {
			f := &fns[i+k]
			f.name = fmt.Sprintf("c%d/f%d", len(chains), k)
			f.demand = fnTypes[rng.IntN(len(fnTypes))]
			f.exec = 0.01 * math.Exp(rng.Float64()*math.Log(30)) // 10..300 ms
			f.conc = 1 + rng.IntN(4)
			f.slo = f.exec * (2 + 3*rng.Float64())
			f.chain = len(chains)
			c.fns = append(c.fns, i+k)
		}
		chains = append(chains, c)
		i += n
	}
	// Scale the rates so the peak (1.5× the mean: diurnal amplitude) wants
	// Overcommit × the scarcer resource, at ~1.3 instances per unit of load.
	var want [control.NumResources]float64
	for _, c := range chains {
		for _, fi := range c.fns {
			f := &fns[fi]
			inst := 1.3 * c.base * f.exec / float64(f.conc)
			for r := range want {
				want[r] += inst * float64(f.demand[r])
			}
		}
	}
	scale := math.Inf(1)
	for r := range want {
		scale = min(scale, cfg.Overcommit*float64(capTotal[r])/(1.5*want[r]))
	}
	for i := range chains {
		chains[i].base *= scale
	}
	return nodes, fns, chains
}

func runCluster(cfg ClusterConfig, strategy string) (PolicyResult, int, error) {
	res := PolicyResult{Policy: strategy}
	nodes, fns, chains := workload(cfg)
	rng := rand.New(rand.NewPCG(cfg.Seed, 0xb1257))

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	fleet, err := control.NewFleet(control.PlacementConfig{Strategy: strategy, MaxPreemptions: cfg.MaxPreemptions})
	if err != nil {
		return res, 0, err
	}
	for i, n := range nodes {
		fleet.Placer().SetNode(fmt.Sprintf("node-%d", i), n)
	}
	for _, c := range chains {
		for k, fi := range c.fns {
			f := &fns[fi]
			spec := control.FleetFunction{Name: f.name, Demand: f.demand, Scale: control.Config{
				Policy: control.PolicyMu, MinInstances: 1, MaxInstances: 64,
				Concurrency: f.conc, SLO: time.Duration(f.slo * float64(time.Second)),
			}}
			spec.Scale.Mu.ExecTime = time.Duration(f.exec * float64(time.Second))
			spec.Scale.Mu.ColdStart = 500 * time.Millisecond
			if k+1 < len(c.fns) {
				spec.Links = []string{fns[c.fns[k+1]].name}
			}
			if err := fleet.SetFunction(spec); err != nil {
				return res, 0, err
			}
		}
	}

	var total control.Resources
	for _, n := range nodes {
		total = total.Add(n, 1)
	}
	demand := make([]control.Resources, len(fns))
	var fair, alloc [][control.NumResources]float64
	alloc = make([][control.NumResources]float64, len(fns))
	decisions := make([]time.Duration, 0, cfg.Ticks)
	var met, arrived float64
	period := 240.0 // ticks per diurnal cycle, compressed
	for tick := range cfg.Ticks {
		// Load for this tick.
		for ci := range chains {
			c := &chains[ci]
			if c.burstLeft > 0 {
				c.burstLeft--
			} else if rng.Float64() < 0.003 {
				c.burstLeft, c.burstMul = 5+rng.IntN(25), 2+2*rng.Float64()
			}
			mul := 1.0
			if c.burstLeft > 0 {
				mul = c.burstMul
			}
			c.current = c.base * (1 + 0.5*math.Sin(2*math.Pi*(float64(tick)/period+c.phase))) * mul
		}
		fi := 0 // Fleet.Tick observes functions in the order they were added
		observe := func(string) control.Observation {
			f := &fns[fi]
			fi++
			lambda := chains[f.chain].current
			a := lambda + f.carry
			arr := math.Floor(a)
			f.carry = a - arr
			capacity := float64(f.ready*f.conc) / f.exec
			backlog := f.queue + arr
			served := min(backlog, capacity)
			f.queue = backlog - served
			f.lastServed = served
			inflight := min(served*f.exec, float64(f.ready*f.conc))
			// Estimated latency: the wait to drain the queue, plus execution.
			wait := math.Inf(1)
			if capacity > 0 {
				wait = f.queue / capacity
			}
			arrived += arr
			if wait+f.exec <= f.slo {
				met += arr
			}
			return control.Observation{
				Arrivals: uint64(arr), Completions: uint64(served),
				Busy:   time.Duration(served * f.exec * float64(time.Second)),
				Queued: int(f.queue), InFlight: int(inflight),
				Concurrency: f.queue + inflight, Ready: f.ready,
			}
		}
		start := time.Now()
		fleet.Tick(time.Duration(tick+1)*time.Second, observe)
		decisions = append(decisions, time.Since(start))
		if tick == 0 {
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if after.HeapAlloc > before.HeapAlloc {
				res.MemoryBytes = after.HeapAlloc - before.HeapAlloc
			}
		}

		// Quality of the placement this round.
		p := fleet.Placer()
		var held [control.NumResources]float64
		wanted, placed := 0, 0
		for i := range fns {
			f := &fns[i]
			d := fleet.Decision(f.name).Desired
			n := p.Placed(f.name)
			f.ready = n
			wanted += d
			placed += n
			demand[i] = control.Resources{}.Add(f.demand, int64(d))
			for r := range alloc[i] {
				alloc[i][r] = float64(int64(n)*f.demand[r]) / float64(total[r])
				held[r] += alloc[i][r]
			}
		}
		fair = control.FairShares(fair, total, demand)
		res.Unfairness += control.Unfairness(fair, alloc)
		res.JainFairness += control.Jain(fair, alloc)
		res.ResourcesHeld += (held[0] + held[1]) / 2
		res.Instances += float64(placed)
		if wanted > 0 {
			res.UnplacedFraction += float64(wanted-placed) / float64(wanted)
		}
		var local, hops float64
		for _, c := range chains {
			for k := 0; k+1 < len(c.fns); k++ {
				local += c.current * p.Locality(fns[c.fns[k]].name, fns[c.fns[k+1]].name)
				hops += c.current
			}
		}
		if hops > 0 {
			res.LocalHopFraction += local / hops
		} else {
			res.LocalHopFraction++
		}
	}
	n := float64(cfg.Ticks)
	res.Unfairness /= n
	res.JainFairness /= n
	res.ResourcesHeld /= n
	res.LocalHopFraction /= n
	res.Instances /= n
	res.UnplacedFraction /= n
	if arrived > 0 {
		res.SLOMetFraction = met / arrived
	}
	slices.Sort(decisions)
	res.DecisionMsP50 = ms(decisions[len(decisions)/2])
	res.DecisionMsP99 = ms(decisions[min(len(decisions)-1, len(decisions)*99/100)])
	return res, len(chains), nil
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
