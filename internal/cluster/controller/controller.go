// Package controller is Spry's cluster controller (`spry controller`,
// the spry-controller binary): it runs the control.Fleet — mu autoscaling
// on cluster-wide counters, then DRF placement — over the node agents
// registered in Kubernetes, and writes each node's SpryAssignment. It
// lives in its own binary so that the node (and every function instance
// it starts) carries no client-go or controller-runtime.
package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/control"
)

// ControllerConfig configures the cluster controller.
type ControllerConfig struct {
	// Namespace holds the node leases and the leader-election lease.
	// Default "spry-system".
	Namespace string
	// Period is the control period. Default 1s.
	Period time.Duration
	// Placement chooses the placement strategy.
	Placement control.PlacementConfig
	// LostGrace is how long a lost node (its lease expired) keeps the
	// assignment it had, instances and all: a node that only stalled (a
	// loaded machine, a slow API server) or is cut off from the control
	// plane but not from its clients keeps serving what it runs, while
	// its instances are placed on the live nodes too. After the grace it
	// keeps every app with no instances of its own and the live nodes as
	// peers. Default 30s; negative: none.
	LostGrace time.Duration
	// DefaultDemand is what one instance holds when its function says
	// nothing (limits: in spry.yaml). Default 250m CPU, 128 MiB.
	DefaultDemand control.Resources
	// Builtins validates builtin function names (nil accepts all).
	Builtins func(string) bool
	Logger   *slog.Logger
}

func (c *ControllerConfig) fill() {
	if c.Namespace == "" {
		c.Namespace = "spry-system"
	}
	if c.Period <= 0 {
		c.Period = time.Second
	}
	if c.LostGrace == 0 {
		c.LostGrace = 30 * time.Second
	}
	if c.DefaultDemand == (control.Resources{}) {
		c.DefaultDemand = control.Resources{250, 128 << 20}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Controller decides how many instances of each function run on which
// node: every period it reads the apps, the nodes and their leases and
// heartbeats, runs the fleet (mu autoscaling on cluster-wide counters,
// then DRF placement), and writes each node's SpryAssignment and each
// app's status. Its only state between rounds is the autoscalers' memory
// and the counters of the previous heartbeat; after a restart it reads the
// placement back from the assignments it wrote.
type Controller struct {
	c        client.Client
	reader   client.Reader // reads past the cache (to retry a write that lost to a stale read)
	cfg      ControllerConfig
	fleet    *control.Fleet
	start    time.Time
	restored bool
	apps     map[string]*appState // by namespace/name
	nodes    map[string]*nodeState
	fnApp    map[string]string // fleet function name → app key
	log      *slog.Logger
	// lastRound is when the previous round ran and interval the time
	// since then: the span a round's observations cover.
	lastRound time.Time
	interval  time.Duration
}

type appState struct {
	key        string
	generation int64
	spec       json.RawMessage
	cfg        *config.App
	err        error    // why spec is not a valid app (cfg is nil then)
	conflict   error    // why it is not placed: another app has its name or a route of it
	fns        []string // fleet names
}

type nodeState struct {
	up   bool
	boot string
	beat time.Time // the heartbeat last's counters came with
	seen time.Time // when (the controller's clock) beat last moved
	// expires is when the node's lease runs (or ran) out, as of the
	// round; zero without a lease.
	expires time.Time
	last    map[string]api.FunctionCounts // by fleet function name
	// rates are the per-second rates between the node's last two
	// heartbeats with new counters, on the agent's own clock: a round
	// scales them to its own interval, so that a round that sees 3 or 5
	// heartbeats of 250 ms (or the same one as the round before) does not
	// read 25% more or fewer arrivals, or none.
	rates map[string]fnRates
	obs   map[string]control.Observation // gauges, read at the round
}

// fnRates are one function's counters per second of a node's heartbeats.
type fnRates struct{ arrivals, completions, busy float64 }

// NewController returns a controller using c.
func NewController(c client.Client, cfg ControllerConfig) (*Controller, error) {
	cfg.fill()
	f, err := control.NewFleet(cfg.Placement)
	if err != nil {
		return nil, err
	}
	return &Controller{c: c, reader: c, cfg: cfg, fleet: f, start: time.Now(),
		apps: map[string]*appState{}, nodes: map[string]*nodeState{}, fnApp: map[string]string{}, log: cfg.Logger}, nil
}

// Run runs rounds every period until ctx ends; poke starts one early,
// and wake runs a wake round (WakeRound) between them.
func (ctl *Controller) Run(ctx context.Context, poke, wake <-chan struct{}) error {
	t := time.NewTicker(ctl.cfg.Period)
	defer t.Stop()
	for {
		if err := ctl.Round(ctx); err != nil && ctx.Err() == nil {
			ctl.log.Warn("cluster controller round", "err", err)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				break wait
			case <-poke:
				break wait
			case <-wake:
				if err := ctl.WakeRound(ctx); err != nil && ctx.Err() == nil {
					ctl.log.Warn("cluster controller wake round", "err", err)
				}
			}
		}
	}
}

// Waiting reports whether a node's heartbeat says requests wait there for
// a function with no instance on it (the node asks for a scale from
// zero).
func Waiting(n *SpryNode) bool {
	for _, f := range n.Status.Functions {
		if waits(f) {
			return true
		}
	}
	return false
}

// waits reports whether requests wait on a node for function f, which has
// no instance there.
func waits(f api.FunctionCounts) bool { return f.Queued > 0 && f.Ready+f.Starting == 0 }

// WakeRound answers nodes whose requests wait for a function with no
// instance: each such function with no instance placed anywhere gets one
// at once, and the changed assignments are written. It ticks no
// autoscaler and consumes no heartbeat counters (the next round does),
// so it may run at any time.
func (ctl *Controller) WakeRound(ctx context.Context) error {
	var nodes SpryNodeList
	if err := ctl.c.List(ctx, &nodes); err != nil {
		return fmt.Errorf("list sprynodes: %w", err)
	}
	var names []string
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if st := ctl.nodes[n.Name]; st == nil || !st.up {
			continue
		}
		for _, f := range n.Status.Functions {
			if waits(f) {
				names = append(names, fnName(f.App, f.Function))
			}
		}
	}
	changes := ctl.fleet.Wake(time.Since(ctl.start), names...)
	if len(changes) == 0 {
		return nil
	}
	for _, c := range changes {
		ctl.log.Info("wake", "fn", c.Function, "node", c.Node, "delta", c.Delta)
	}
	var asg SpryAssignmentList
	if err := ctl.c.List(ctx, &asg); err != nil {
		return fmt.Errorf("list spryassignments: %w", err)
	}
	return errors.Join(ctl.writeAssignments(ctx, nodes.Items, asg.Items)...)
}

// fnName is a function's name in the fleet.
func fnName(app, fn string) string { return app + "/" + fn }

// Round runs one control round.
func (ctl *Controller) Round(ctx context.Context) error {
	var apps SpryAppList
	var nodes SpryNodeList
	var asg SpryAssignmentList
	var leases coordinationv1.LeaseList
	if err := ctl.c.List(ctx, &apps); err != nil {
		return fmt.Errorf("list spryapps: %w", err)
	}
	if err := ctl.c.List(ctx, &nodes); err != nil {
		return fmt.Errorf("list sprynodes: %w", err)
	}
	if err := ctl.c.List(ctx, &asg); err != nil {
		return fmt.Errorf("list spryassignments: %w", err)
	}
	if err := ctl.c.List(ctx, &leases, client.InNamespace(ctl.cfg.Namespace)); err != nil {
		return fmt.Errorf("list leases: %w", err)
	}
	now := time.Now()
	ctl.begin(now)
	p := ctl.fleet.Placer()

	// Nodes: up while their lease is fresh.
	leaseOf := map[string]*coordinationv1.Lease{}
	for i := range leases.Items {
		leaseOf[leases.Items[i].Name] = &leases.Items[i]
	}
	seen := map[string]bool{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		seen[n.Name] = true
		st := ctl.nodes[n.Name]
		if st == nil {
			st = &nodeState{last: map[string]api.FunctionCounts{}, rates: map[string]fnRates{}, obs: map[string]control.Observation{}}
			ctl.nodes[n.Name] = st
		}
		st.expires = expiry(leaseOf[api.LeaseName(n.Name)])
		up := !st.expires.IsZero() && now.Before(st.expires)
		switch {
		case up:
			if !st.up {
				ctl.log.Info("node up", "node", n.Name, "cpu_millis", n.Spec.Capacity.CPUMillis, "memory", n.Spec.Capacity.MemoryBytes)
			}
			p.SetNode(n.Name, control.Resources{n.Spec.Capacity.CPUMillis, n.Spec.Capacity.MemoryBytes})
		case st.up:
			ctl.log.Warn("node lost: lease expired, re-placing its instances", "node", n.Name)
			p.RemoveNode(n.Name)
		}
		st.up = up
		ctl.observe(n, st, now)
	}
	for name, st := range ctl.nodes {
		if !seen[name] {
			if st.up {
				ctl.log.Warn("node deregistered", "node", name)
			}
			p.RemoveNode(name)
			delete(ctl.nodes, name)
		}
	}

	// Apps.
	live := map[string]bool{}
	for i := range apps.Items {
		a := &apps.Items[i]
		key := a.Namespace + "/" + a.Name
		live[key] = true
		ctl.syncApp(key, a)
	}
	for key, st := range ctl.apps {
		if !live[key] {
			for _, f := range st.fns {
				ctl.fleet.RemoveFunction(f)
				delete(ctl.fnApp, f)
			}
			delete(ctl.apps, key)
		}
	}
	ctl.checkConflicts()

	// After a (re)start, take back the placement the assignments hold.
	if !ctl.restored {
		for _, a := range asg.Items {
			for _, app := range a.Spec.Apps {
				for _, in := range app.Instances {
					p.Restore(fnName(app.Name, in.Function), a.Name, int(in.N))
				}
			}
		}
		ctl.restored = true
	}

	changes := ctl.fleet.Tick(now.Sub(ctl.start), ctl.observation)
	for _, c := range changes {
		ctl.log.Debug("place", "fn", c.Function, "node", c.Node, "delta", c.Delta)
	}
	errs := ctl.writeAssignments(ctx, nodes.Items, asg.Items)
	for i := range apps.Items {
		if err := ctl.writeStatus(ctx, &apps.Items[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// begin starts a round at now: its observations cover the time since the
// last one (one period at the first).
func (ctl *Controller) begin(now time.Time) {
	ctl.interval = ctl.cfg.Period
	if !ctl.lastRound.IsZero() && now.After(ctl.lastRound) {
		ctl.interval = now.Sub(ctl.lastRound)
	}
	ctl.lastRound = now
}

// expiry returns when a node's lease runs out (zero: no lease).
func expiry(l *coordinationv1.Lease) time.Time {
	if l == nil || l.Spec.RenewTime == nil {
		return time.Time{}
	}
	al := api.Lease{Spec: api.LeaseSpec{LeaseDurationSeconds: l.Spec.LeaseDurationSeconds, RenewTime: &api.MicroTime{Time: l.Spec.RenewTime.Time}}}
	return al.Expires()
}

// checkConflicts keeps out of the placement every app that has the name
// (app:) or a route of an app before it (by namespace/name): every node
// runs every app, and a node runs one app of a name and one chain per
// route. The first of two keeps running; the other's status says why it
// does not, and it is placed once the conflict is gone.
func (ctl *Controller) checkConflicts() {
	keys := make([]string, 0, len(ctl.apps))
	for k := range ctl.apps {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var placed []*config.App
	for _, k := range keys {
		st := ctl.apps[k]
		if st.cfg == nil {
			continue
		}
		err := config.Conflicts(append(slices.Clone(placed), st.cfg))
		if err == nil {
			if st.conflict != nil {
				st.conflict = nil
				st.generation = -1 // placed again at the next round's sync
			}
			placed = append(placed, st.cfg)
			continue
		}
		if st.conflict == nil {
			ctl.log.Warn("app not placed: it conflicts with another", "app", k, "err", err)
		}
		st.conflict = err
		for _, f := range st.fns {
			ctl.fleet.RemoveFunction(f)
			delete(ctl.fnApp, f)
		}
		st.fns = nil
	}
}

// observe takes a node's heartbeat: its gauges as they are, and from its
// cumulative counters the rates since the previous heartbeat that
// advanced them, over the interval the agent's timestamps give (a new
// boot restarts them). A heartbeat the controller saw before changes no
// rate: the round keeps the last ones rather than reading none, for up to
// staleRounds periods; then the node's rates count as unknown (0).
func (ctl *Controller) observe(n *SpryNode, st *nodeState, now time.Time) {
	clear(st.obs)
	if !st.up {
		return
	}
	if n.Status.Boot != st.boot {
		st.boot = n.Status.Boot
		st.beat = time.Time{}
		clear(st.last)
		clear(st.rates)
	}
	var beat time.Time
	if n.Status.Heartbeat != nil {
		beat = *n.Status.Heartbeat
	}
	newer := beat.After(st.beat)
	for _, fc := range n.Status.Functions {
		name := fnName(fc.App, fc.Function)
		st.obs[name] = control.Observation{Queued: int(fc.Queued), InFlight: int(fc.InFlight),
			Ready: int(fc.Ready), Starting: int(fc.Starting)}
		prev, had := st.last[name]
		switch {
		case had && !newer:
			// The same heartbeat (or an agent whose timestamps are
			// coarser than its heartbeats): keep the counters to take
			// the delta from once the time moves.
		case had && !st.beat.IsZero() && fc.Arrivals >= prev.Arrivals && fc.Completions >= prev.Completions && fc.BusyNanos >= prev.BusyNanos:
			dt := beat.Sub(st.beat).Seconds()
			st.rates[name] = fnRates{
				arrivals:    float64(fc.Arrivals-prev.Arrivals) / dt,
				completions: float64(fc.Completions-prev.Completions) / dt,
				busy:        float64(fc.BusyNanos-prev.BusyNanos) / dt,
			}
			st.last[name] = fc
		default:
			delete(st.rates, name)
			st.last[name] = fc
		}
	}
	switch {
	case newer:
		st.beat, st.seen = beat, now
	case now.Sub(st.seen) > staleRounds*ctl.cfg.Period:
		clear(st.rates)
	}
}

// staleRounds is how many periods a node's last rates stand in for
// heartbeats that do not come.
const staleRounds = 3

// observation sums a function's observations over the nodes that are up:
// the gauges as the heartbeats gave them, the counters as the nodes' rates
// over the round's interval.
func (ctl *Controller) observation(name string) control.Observation {
	var o control.Observation
	var r fnRates
	for _, st := range ctl.nodes {
		if x, ok := st.obs[name]; ok && st.up {
			o.Queued += x.Queued
			o.InFlight += x.InFlight
			o.Ready += x.Ready
			o.Starting += x.Starting
			x := st.rates[name]
			r.arrivals += x.arrivals
			r.completions += x.completions
			r.busy += x.busy
		}
	}
	dt := ctl.interval.Seconds()
	o.Arrivals = uint64(math.Round(r.arrivals * dt))
	o.Completions = uint64(math.Round(r.completions * dt))
	o.Busy = time.Duration(math.Round(r.busy * dt))
	// What is placed but not yet reported ready is starting.
	if placed := ctl.fleet.Placer().Placed(name); placed > o.Ready+o.Starting {
		o.Starting = placed - o.Ready
	}
	return o
}

// syncApp parses an app's spec when it changed and updates its functions
// in the fleet.
func (ctl *Controller) syncApp(key string, a *SpryApp) {
	st := ctl.apps[key]
	if st != nil && st.generation == a.Generation && bytes.Equal(st.spec, a.Spec) {
		return
	}
	if st == nil {
		st = &appState{key: key}
		ctl.apps[key] = st
	}
	st.generation, st.spec = a.Generation, slices.Clone(a.Spec)
	cfg, err := ParseApp(key, a.Spec, ctl.cfg.Builtins)
	st.err = err
	if err != nil {
		// Keep what runs; report the problem in the status.
		ctl.log.Warn("app invalid", "app", key, "err", err)
		st.cfg = nil
		return
	}
	st.cfg = cfg
	var names []string
	for _, f := range cfg.Functions {
		name := fnName(key, f.Name)
		names = append(names, name)
		ctl.fnApp[name] = key
		var links []string
		for _, c := range cfg.Chains {
			for i, s := range c.Steps {
				if s == f.Index && i+1 < len(c.Steps) {
					links = append(links, fnName(key, cfg.Functions[c.Steps[i+1]].Name))
				}
			}
		}
		spec := control.FleetFunction{Name: name, Demand: ctl.demand(f), Scale: f.Autoscaler(ctl.cfg.Period, 50*time.Millisecond), Links: links}
		if err := ctl.fleet.SetFunction(spec); err != nil {
			ctl.log.Warn("app function", "app", key, "fn", f.Name, "err", err)
		}
	}
	for _, old := range st.fns {
		if !slices.Contains(names, old) {
			ctl.fleet.RemoveFunction(old)
			delete(ctl.fnApp, old)
		}
	}
	st.fns = names
}

func (ctl *Controller) demand(f *config.Function) control.Resources {
	// An instance may use up to its limits (limits: in spry.yaml, enforced
	// by a cgroup per instance): that is what placement reserves for it.
	d := ctl.cfg.DefaultDemand
	if f.Limits.CPU > 0 {
		d[control.CPU] = int64(math.Ceil(f.Limits.CPU * 1000))
	}
	if f.Limits.Memory > 0 {
		d[control.Memory] = int64(f.Limits.Memory)
	}
	return d
}

// ParseApp validates a SpryApp's spec (the spry.yaml app, as JSON, which
// is YAML) with the same rules as `spry up --check`.
func ParseApp(key string, spec json.RawMessage, builtins func(string) bool) (*config.App, error) {
	if len(spec) == 0 {
		return nil, errors.New("spec: empty, want the app's spry.yaml")
	}
	return config.Parse(key, spec, "", config.Options{Builtins: builtins})
}

// writeAssignments makes every node's SpryAssignment say what the placer
// decided; a node that is down gets an empty one.
func (ctl *Controller) writeAssignments(ctx context.Context, nodes []SpryNode, existing []SpryAssignment) []error {
	have := map[string]*SpryAssignment{}
	for i := range existing {
		have[existing[i].Name] = &existing[i]
	}
	var peers []api.Peer
	for _, n := range nodes {
		if ctl.nodes[n.Name] != nil && ctl.nodes[n.Name].up && n.Spec.Peer != "" {
			peers = append(peers, api.Peer{Node: n.Name, Address: n.Spec.Peer})
		}
	}
	byNode := map[string]*api.AssignmentSpec{}
	for _, n := range nodes {
		byNode[n.Name] = &api.AssignmentSpec{Peers: peers}
	}
	keys := make([]string, 0, len(ctl.apps))
	for k := range ctl.apps {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	p := ctl.fleet.Placer()
	for _, k := range keys {
		st := ctl.apps[k]
		if len(st.fns) == 0 {
			continue // never valid: nothing of it runs
		}
		// Every node gets every app, with the instances it runs (perhaps
		// none) and where the others run theirs: any node's gateway serves
		// the app's routes, and a step with no instance on a node goes to
		// one that has.
		var placement []api.FunctionPlacement
		local := map[string][]api.Instances{}
		for _, fn := range st.fns {
			name := strings.TrimPrefix(fn, k+"/")
			fp := api.FunctionPlacement{Function: name, Nodes: []api.NodeInstances{}}
			for _, nc := range p.Assignment(fn) {
				if byNode[nc.Node] == nil {
					continue
				}
				fp.Nodes = append(fp.Nodes, api.NodeInstances{Node: nc.Node, Instances: int32(nc.N)})
				local[nc.Node] = append(local[nc.Node], api.Instances{Function: name, N: int32(nc.N)})
			}
			placement = append(placement, fp)
		}
		for _, n := range nodes {
			byNode[n.Name].Apps = append(byNode[n.Name].Apps, api.AssignedApp{Name: k, Generation: st.generation,
				Spec: st.spec, Instances: local[n.Name], Placement: placement})
		}
	}
	var errs []error
	now := time.Now()
	for _, n := range nodes {
		// A lost node (its lease expired: dead, cut off, or only stalled
		// on a loaded machine) keeps what it has for LostGrace: if it is
		// alive it goes on serving with its own instances. Then it keeps
		// every app with no instances of its own and the live nodes as
		// peers: its instances run elsewhere now, and while it is up at
		// all its gateway still serves the routes through them (not 404)
		// until it renews its lease. Only a node the controller no longer
		// knows gets nothing.
		want := byNode[n.Name]
		st := ctl.nodes[n.Name]
		if st == nil {
			want = &api.AssignmentSpec{}
		}
		cur := have[n.Name]
		if st != nil && !st.up && cur != nil && !st.expires.IsZero() && now.Sub(st.expires) < ctl.cfg.LostGrace {
			continue
		}
		if cur == nil {
			a := &SpryAssignment{ObjectMeta: metav1.ObjectMeta{Name: n.Name}, Spec: *want}
			if err := ctl.c.Create(ctx, a); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("create assignment %s: %w", n.Name, err))
			}
			continue
		}
		if equalAssignment(cur.Spec, *want) {
			continue
		}
		cur.Spec = *want
		err := ctl.c.Update(ctx, cur)
		if apierrors.IsConflict(err) {
			// The cache had not yet seen this controller's last write (a
			// wake round just after a round, or the other way round):
			// read the object itself and write once more, rather than
			// leave the node a period behind.
			fresh := &SpryAssignment{}
			if err = ctl.reader.Get(ctx, client.ObjectKey{Name: n.Name}, fresh); err == nil && !equalAssignment(fresh.Spec, *want) {
				fresh.Spec = *want
				err = ctl.c.Update(ctx, fresh)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("update assignment %s: %w", n.Name, err))
		}
	}
	return errs
}

func equalAssignment(a, b api.AssignmentSpec) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// writeStatus updates an app's status when it changed.
func (ctl *Controller) writeStatus(ctx context.Context, a *SpryApp) error {
	key := a.Namespace + "/" + a.Name
	st := ctl.apps[key]
	s := deepCopy(a.Status)
	s.ObservedGeneration = a.Generation
	cond := api.Condition{Type: "Valid", Status: "True", Reason: "Parsed", Message: "spec is a valid spry.yaml app", ObservedGeneration: a.Generation}
	if st != nil && st.err != nil {
		cond.Status, cond.Reason, cond.Message = "False", "Invalid", st.err.Error()
	} else if st != nil && st.conflict != nil {
		cond.Status, cond.Reason, cond.Message = "False", "Conflict", st.conflict.Error()
	}
	s.Conditions = api.SetCondition(s.Conditions, cond, time.Now().Truncate(time.Second))
	if st != nil && st.cfg != nil {
		p := ctl.fleet.Placer()
		var ready, desired int32
		nodes := map[string]bool{}
		s.Functions = s.Functions[:0]
		var met, total uint64
		for _, f := range st.cfg.Functions {
			name := fnName(key, f.Name)
			d := ctl.fleet.Decision(name)
			o := ctl.observation(name)
			fs := api.FunctionStatus{Name: f.Name, Desired: int32(d.Desired), Placed: int32(p.Placed(name)),
				Ready: int32(o.Ready), Reason: d.Reason}
			if d.Predicted > 0 {
				fs.Predicted = fmt.Sprintf("%.1f", d.Predicted)
			}
			for _, nc := range p.Assignment(name) {
				fs.Nodes = append(fs.Nodes, api.NodeInstances{Node: nc.Node, Instances: int32(nc.N)})
				nodes[nc.Node] = true
			}
			ready += fs.Ready
			desired += fs.Desired
			s.Functions = append(s.Functions, fs)
			for _, ns := range ctl.nodes {
				if ns.up {
					if fc, ok := ns.last[name]; ok {
						met += fc.SLOMet
						total += fc.Completions
					}
				}
			}
		}
		s.Ready = fmt.Sprintf("%d/%d", ready, desired)
		s.NodeCount = int32(len(nodes))
		s.Routes = s.Routes[:0]
		for _, c := range st.cfg.Chains {
			s.Routes = append(s.Routes, c.Route)
		}
		s.RouteList = strings.Join(s.Routes, ",")
		if total > 0 {
			s.SLOAttainment = fmt.Sprintf("%.1f%%", 100*float64(met)/float64(total))
		}
	}
	old, _ := json.Marshal(a.Status)
	now, _ := json.Marshal(s)
	if bytes.Equal(old, now) {
		return nil
	}
	a.Status = s
	err := ctl.c.Status().Update(ctx, a)
	if apierrors.IsConflict(err) {
		// The cache's copy was older than the last status written: write
		// onto the object itself rather than leave the status a round
		// behind.
		fresh := &SpryApp{}
		if err = ctl.reader.Get(ctx, client.ObjectKeyFromObject(a), fresh); err == nil && fresh.Generation == a.Generation {
			fresh.Status = s
			err = ctl.c.Status().Update(ctx, fresh)
		}
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			err = nil // changed again meanwhile, or gone: the next round sees it
		}
	}
	if err != nil {
		return fmt.Errorf("status of %s: %w", key, err)
	}
	return nil
}
