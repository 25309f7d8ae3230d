// Package agent is the node agent of a Spry cluster (`spry up --cluster`):
// it registers the node (a SpryNode with its capacity), keeps its lease,
// sends the node's per-function counters as its heartbeat, and makes the
// node run what the controller's SpryAssignment for it says. It talks to
// Kubernetes through internal/cluster/kube (no client-go), and drives the
// node through the small Node interface.
//
// The agent watches its assignment and applies a change the moment the
// API server reports it. Every period it renews the lease (in a loop of
// its own) and writes the heartbeat; and when the node has a request
// waiting for a function with no instance anywhere, it writes the
// heartbeat at once (the controller answers it with a wake round), so a
// scale from zero takes a few round trips through the API server, not a
// heartbeat period and a control period. A failed step is logged and
// retried; the node keeps serving what it runs.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/cluster/kube"
	"github.com/spry-dev/spry/internal/cluster/peer"
	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/node"
)

// Node is what the agent needs of the node it runs (a *node.Node).
type Node interface {
	Apply(ctx context.Context, apps []*config.App) (node.ReloadResult, error)
	SetInstances(app, fn string, n int) error
	Counters() []node.FunctionCounters
	// SetPeers and SetPlacement tell the node where the other nodes are
	// and where they run the apps' functions (hops between nodes).
	SetPeers(peers []peer.Peer)
	SetPlacement(app string, byFn map[string][]peer.NodeCount) error
	// SetOnWait sets what the node calls (without blocking) when a
	// request waits for a function with no instance it can reach.
	SetOnWait(func(app, fn string))
}

// Config configures an agent.
type Config struct {
	Name      string // the node's name (its SpryNode, assignment and lease)
	Namespace string // where its lease lives; default spry-system
	Client    *kube.Client
	Node      Node
	Spec      api.NodeSpec // gateway and peer addresses, capacity (zero: this machine's)
	Period    time.Duration
	// LeaseDuration is how long the node counts as up after a renewal.
	// Default 10 s; renewed every Period.
	LeaseDuration time.Duration
	// Options validates the apps' specs (builtins).
	Options config.Options
	Log     *slog.Logger
}

// Agent runs one node's side of the cluster.
type Agent struct {
	cfg     Config
	boot    string
	applied string                 // the assignment last applied (its JSON)
	apps    map[string]*appliedApp // by namespace/name
	lease   *api.Lease
	wake    chan struct{} // the node has a request waiting for a first instance
}

// WakeGap is the least time between two heartbeats that the node's
// waiting requests make the agent write between periods.
const WakeGap = 50 * time.Millisecond

type appliedApp struct {
	generation int64
	cfg        *config.App
}

// New returns an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.Name == "" {
		return nil, errors.New("agent: a node name is required (--node-name)")
	}
	if cfg.Client == nil || cfg.Node == nil {
		return nil, errors.New("agent: client and node are required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "spry-system"
	}
	if cfg.Period <= 0 {
		cfg.Period = time.Second
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = 10 * time.Second
	}
	if cfg.LeaseDuration < 2*cfg.Period {
		return nil, fmt.Errorf("agent: lease duration %v is under two periods (%v)", cfg.LeaseDuration, cfg.Period)
	}
	if cfg.Spec.Capacity == (api.Capacity{}) {
		cfg.Spec.Capacity = MachineCapacity()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Agent{cfg: cfg, boot: hex.EncodeToString(b), apps: map[string]*appliedApp{}, wake: make(chan struct{}, 1)}, nil
}

// MachineCapacity is this machine's CPUs (in millicores) and memory.
func MachineCapacity() api.Capacity {
	c := api.Capacity{CPUMillis: int64(runtime.NumCPU()) * 1000}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				c.MemoryBytes = kb << 10
			}
		}
	}
	return c
}

// Register creates or updates the node's SpryNode.
func (a *Agent) Register(ctx context.Context) error { return a.register(ctx) }

// Run runs the agent until ctx ends (Register first): it watches the
// node's assignment and applies each version, renews the lease and writes
// the heartbeat every period, and writes the heartbeat at once (at most
// every WakeGap) when the node has a request waiting for a function with
// no instance.
func (a *Agent) Run(ctx context.Context) error {
	a.cfg.Log.Info("cluster agent registered", "node", a.cfg.Name, "cpu_millis", a.cfg.Spec.Capacity.CPUMillis,
		"memory", a.cfg.Spec.Capacity.MemoryBytes, "gateway", a.cfg.Spec.Gateway)
	a.cfg.Node.SetOnWait(func(string, string) {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	})
	defer a.cfg.Node.SetOnWait(nil)
	// The lease has a loop of its own: an assignment that takes long to
	// apply (apps starting, builds) or a slow API call must not cost the
	// node its lease, which would make the controller move its instances.
	wctx, stop := context.WithCancel(ctx)
	var loops sync.WaitGroup
	defer loops.Wait()
	defer stop()
	loops.Add(2)
	go func() {
		defer loops.Done()
		t := time.NewTicker(a.cfg.Period)
		defer t.Stop()
		for {
			if err := a.renew(wctx); err != nil && wctx.Err() == nil {
				a.cfg.Log.Warn("cluster agent: lease", "err", err)
			}
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	asgs := make(chan api.SpryAssignment, 1)
	go func() { defer loops.Done(); a.watch(wctx, asgs) }()

	t := time.NewTicker(a.cfg.Period)
	defer t.Stop()
	var pending *api.SpryAssignment // received, not yet applied
	var lastWake time.Time
	var gap <-chan time.Time // a wake that came within WakeGap of the last
	a.beat(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case asg := <-asgs:
			pending = &asg
		case <-t.C:
			a.beat(ctx)
		case <-a.wake:
			if wait := WakeGap - time.Since(lastWake); wait > 0 {
				if gap == nil {
					gap = time.After(wait)
				}
				continue
			}
			lastWake = time.Now()
			a.beat(ctx)
		case <-gap:
			gap, lastWake = nil, time.Now()
			a.beat(ctx)
		}
		if pending != nil {
			if err := a.apply(ctx, pending); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				a.cfg.Log.Warn("cluster agent: assignment", "err", err) // retried at the next period
			} else {
				pending = nil
			}
		}
	}
}

// beat writes the heartbeat.
func (a *Agent) beat(ctx context.Context) {
	if err := a.heartbeat(ctx); err != nil && ctx.Err() == nil {
		a.cfg.Log.Warn("cluster agent: heartbeat", "err", err)
	}
}

// watch sends every version of the node's assignment to out (the latest
// replaces one not yet taken), watching from the current state: a watch
// without a resource version reports the object as it is, then its
// changes. It watches again from the last version seen when the server
// ends a watch, and from the current state when that version expired.
func (a *Agent) watch(ctx context.Context, out chan api.SpryAssignment) {
	rv := ""
	for ctx.Err() == nil {
		err := a.cfg.Client.Watch(ctx, kube.AssignmentsPath(), a.cfg.Name, rv, 5*time.Minute, func(ev kube.Event) error {
			if ev.Type != "ADDED" && ev.Type != "MODIFIED" {
				return nil // deleted: keep running what runs, as before an assignment exists
			}
			var asg api.SpryAssignment
			if err := json.Unmarshal(ev.Object, &asg); err != nil {
				return fmt.Errorf("assignment: %w", err)
			}
			rv = asg.Metadata.ResourceVersion
			select {
			case <-out: // drop the stale one
			default:
			}
			out <- asg
			return nil
		})
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, kube.ErrGone):
			rv = ""
		case err != nil:
			a.cfg.Log.Warn("cluster agent: watch assignment", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(a.cfg.Period):
			}
		}
	}
}

// register creates or updates the node's SpryNode.
func (a *Agent) register(ctx context.Context) error {
	c := a.cfg.Client
	var cur api.SpryNode
	err := c.Get(ctx, kube.NodePath(a.cfg.Name), &cur)
	switch {
	case errors.Is(err, kube.ErrNotFound):
		err = c.Create(ctx, kube.NodesPath(), kube.NewNode(a.cfg.Name, a.cfg.Spec), nil)
	case err == nil:
		cur.Spec = a.cfg.Spec
		err = c.Update(ctx, kube.NodePath(a.cfg.Name), &cur, nil)
	}
	if err != nil {
		return fmt.Errorf("agent: register node %s: %w", a.cfg.Name, err)
	}
	// A heartbeat of this boot at once, before the first period: until
	// then the node's status holds the last one of a run before (a
	// restarted agent), whose instances are gone, and the controller
	// would count them ready.
	return a.heartbeat(ctx)
}

func (a *Agent) renew(ctx context.Context) error {
	c, ns, name := a.cfg.Client, a.cfg.Namespace, api.LeaseName(a.cfg.Name)
	now := time.Now()
	if a.lease == nil {
		var l api.Lease
		err := c.Get(ctx, kube.LeasePath(ns, name), &l)
		if errors.Is(err, kube.ErrNotFound) {
			nl := kube.NewLease(ns, name, a.cfg.Name, a.cfg.LeaseDuration, now)
			if err := c.Create(ctx, kube.LeasesPath(ns), nl, &l); err != nil {
				return err
			}
			a.lease = &l
			return nil
		}
		if err != nil {
			return err
		}
		a.lease = &l
	}
	d := int32(a.cfg.LeaseDuration / time.Second)
	a.lease.Spec.RenewTime = &api.MicroTime{Time: now}
	a.lease.Spec.LeaseDurationSeconds = &d
	a.lease.Spec.HolderIdentity = &a.cfg.Name
	var l api.Lease
	if err := c.Update(ctx, kube.LeasePath(ns, name), a.lease, &l); err != nil {
		a.lease = nil // read it again next time
		return err
	}
	a.lease = &l
	return nil
}

// apply makes the node run what an assignment says.
func (a *Agent) apply(ctx context.Context, asg *api.SpryAssignment) error {
	kb, _ := json.Marshal(asg.Spec)
	key := string(kb)
	if key == a.applied {
		return nil
	}
	// The apps, parsed once per generation; counts rewritten per node.
	var apps []*config.App
	next := map[string]*appliedApp{}
	for _, aa := range asg.Spec.Apps {
		prev := a.apps[aa.Name]
		if prev == nil || prev.generation != aa.Generation {
			cfg, err := config.Parse(aa.Name, aa.Spec, "", a.cfg.Options)
			if err != nil {
				a.cfg.Log.Warn("cluster agent: app spec invalid, skipped", "app", aa.Name, "err", err)
				continue
			}
			prev = &appliedApp{generation: aa.Generation, cfg: forCluster(cfg, aa.Instances)}
		}
		next[aa.Name] = prev
		apps = append(apps, prev.cfg)
	}
	if _, err := a.cfg.Node.Apply(ctx, apps); err != nil {
		return fmt.Errorf("apply %d apps: %w", len(apps), err)
	}
	a.apps = next
	var peers []peer.Peer
	for _, p := range asg.Spec.Peers {
		peers = append(peers, peer.Peer{Name: p.Node, Address: p.Address})
	}
	a.cfg.Node.SetPeers(peers)
	var errs []error
	for _, aa := range asg.Spec.Apps {
		ap := next[aa.Name]
		if ap == nil {
			continue
		}
		byFn := map[string][]peer.NodeCount{}
		for _, fp := range aa.Placement {
			for _, ni := range fp.Nodes {
				byFn[fp.Function] = append(byFn[fp.Function], peer.NodeCount{Node: ni.Node, Instances: int(ni.Instances)})
			}
		}
		if err := a.cfg.Node.SetPlacement(ap.cfg.Name, byFn); err != nil {
			errs = append(errs, err)
		}
		for _, f := range ap.cfg.Functions {
			n := 0
			for _, in := range aa.Instances {
				if in.Function == f.Name {
					n = int(in.N)
				}
			}
			if err := a.cfg.Node.SetInstances(ap.cfg.Name, f.Name, n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	a.applied = key
	return nil
}

// forCluster adapts an app's config to a node under the controller: each
// function starts with the instances assigned here and has slots for as
// many as the whole cluster may run (scale.max), and its count is set by
// the agent from then on.
func forCluster(cfg *config.App, assigned []api.Instances) *config.App {
	for _, f := range cfg.Functions {
		n := 0
		for _, in := range assigned {
			if in.Function == f.Name {
				n = int(in.N)
			}
		}
		f.Scale.Max = max(f.Scale.Max, f.Instances, n, 1)
		f.Scale.Min = 0
		f.Instances = n
		if f.Scale.Policy == config.PolicyFixed {
			// The node's own loop then only measures; it never sizes.
			f.Scale.SLO = 0
		}
	}
	return cfg
}

// heartbeat writes the node's counters into its SpryNode's status.
func (a *Agent) heartbeat(ctx context.Context) error {
	byApp := map[string]string{} // node app name → namespace/name
	for k, ap := range a.apps {
		byApp[ap.cfg.Name] = k
	}
	var fcs []api.FunctionCounts
	for _, c := range a.cfg.Node.Counters() {
		k, ok := byApp[c.App]
		if !ok {
			continue
		}
		fcs = append(fcs, api.FunctionCounts{App: k, Function: c.Function, Arrivals: c.Arrivals,
			Completions: c.Completions, BusyNanos: c.Busy, SLOMet: c.SLOMet, Queued: int32(c.Queued),
			InFlight: int32(c.InFlight), Ready: int32(c.Ready), Starting: int32(c.Start)})
	}
	slices.SortFunc(fcs, func(x, y api.FunctionCounts) int {
		return strings.Compare(x.App+"/"+x.Function, y.App+"/"+y.Function)
	})
	c := a.cfg.Client
	var cur api.SpryNode
	if err := c.Get(ctx, kube.NodePath(a.cfg.Name), &cur); err != nil {
		if errors.Is(err, kube.ErrNotFound) {
			return a.register(ctx) // deleted under us: register again
		}
		return err
	}
	// To the microsecond: the controller takes rates over the interval
	// between two heartbeats (250 ms apart in a bench; whole seconds made
	// them ±100% off).
	now := time.Now().UTC().Truncate(time.Microsecond)
	cur.Status = api.NodeStatus{Heartbeat: &now, Boot: a.boot, Functions: fcs}
	return c.Update(ctx, kube.NodePath(a.cfg.Name)+"/status", &cur, nil)
}
