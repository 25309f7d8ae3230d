package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spry-dev/spry/bench"
	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/cluster/kube"
)

// ModeCluster runs the workload on a local cluster of Env.Nodes node
// agents (spry-controller local: etcd, kube-apiserver, the controller and
// the agents, all on this machine), each function's instances on a node
// of their own where there are enough nodes: a chain's steps then hop
// between nodes. The load goes to the node that runs the first step.
const ModeCluster = "cluster"

// ModeSpread runs the workload on a local cluster of Env.Nodes node
// agents with every node running the whole chain (one copy of each
// function per node, so its hops stay in the node's shared memory) and
// the load generator's connections spread evenly over every node's
// gateway: the cluster's throughput, to set beside one node's.
const ModeSpread = "cluster-spread"

// RoleControl is the cluster's control plane in a cluster mode's costs:
// spry-controller local with its etcd and kube-apiserver.
const RoleControl = "control"

// demandMillis is what the controller counts for an instance without
// limits: (250m, 128 MiB): each node offers room for one function's
// instances only, so placement has to put the steps apart.
const demandMillis = 250

// clusterMode is ModeCluster, or ModeSpread when spread.
type clusterMode struct{ spread bool }

func (m clusterMode) Name() string {
	if m.spread {
		return ModeSpread
	}
	return ModeCluster
}

// CodecPeer is a request frame on a link between two nodes (a binary
// header, then the payload).
const CodecPeer = "spry-peer"

// Path: steps on different nodes; each hop after the first step leaves
// through the node's peer endpoint, crosses the link between the nodes'
// gateways, and enters the next node's pool; the answer comes back the
// same way. Spread, a request stays on the node it came to, as on one.
func (m clusterMode) Path(c *bench.Chain) []Transfer {
	if m.spread {
		return (&spryMode{transport: "auto"}).Path(c)
	}
	d := "descriptor/auto"
	t := []Transfer{{From: "client", To: "gateway", Medium: MediumTCP, Codec: CodecHTTP},
		{From: "gateway", To: "fn:" + c.Steps[0], Medium: d, Codec: CodecNone}}
	prev := "fn:" + c.Steps[0]
	for _, s := range c.Steps[1:] {
		t = append(t, Transfer{From: prev, To: "gateway", Medium: d, Codec: CodecNone},
			Transfer{From: "gateway", To: "gateway", Medium: MediumTCP, Codec: CodecPeer},
			Transfer{From: "gateway", To: "fn:" + s, Medium: d, Codec: CodecNone})
		prev = "fn:" + s
	}
	t = append(t, Transfer{From: prev, To: "gateway", Medium: d, Codec: CodecNone, Answer: true})
	for range c.Steps[1:] {
		t = append(t, Transfer{From: "gateway", To: "gateway", Medium: MediumTCP, Codec: CodecPeer, Answer: true})
	}
	return append(t, Transfer{From: "gateway", To: "client", Medium: MediumTCP, Codec: CodecHTTP, Answer: true})
}

// localInfo is what spry-controller local --info-out writes.
type localInfo struct {
	Kubeconfig string      `json:"kubeconfig"`
	Nodes      []localNode `json:"nodes"`
}

// localNode is one agent of a local cluster.
type localNode struct {
	Name    string `json:"name"`
	Gateway string `json:"gateway"`
	Admin   string `json:"admin"`
	Peer    string `json:"peer"`
}

type clusterRun struct {
	ctl   *child
	info  localInfo
	addr  string   // the first step's node's gateway
	addrs []string // spread: every node's gateway
	procs []Proc
}

// localCluster is a running spry-controller local: etcd, kube-apiserver,
// the controller and the node agents.
type localCluster struct {
	ctl     *child
	info    localInfo
	kc      *kube.Client
	logPath string
}

// controllerExe finds spry-controller beside spry (exe) or on PATH.
func controllerExe(exe string) (string, error) {
	ctlExe := filepath.Join(filepath.Dir(exe), "spry-controller")
	if _, err := os.Stat(ctlExe); err == nil {
		return ctlExe, nil
	}
	if p, err := exec.LookPath("spry-controller"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("bench: a cluster needs spry-controller beside %s or on PATH (go build -o DIR ./cmd/spry ./cmd/spry-controller)", exe)
}

// startLocal starts spry-controller local with nodes agents of spry exe
// (its state and log in dir, extra flags after the bench's own) and
// waits until every agent registered and beats.
func startLocal(ctx context.Context, exe, dir string, nodes int, extra ...string) (*localCluster, error) {
	ctlExe, err := controllerExe(exe)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	infoPath := filepath.Join(dir, "cluster.json")
	os.Remove(infoPath)
	args := append([]string{"local", "--nodes", strconv.Itoa(nodes), "--port", "0", "--spry", exe,
		"--info-out", infoPath, "--quiet", "--any-builtin"}, extra...)
	cmd := exec.Command(ctlExe, args...)
	cmd.Env = os.Environ()
	lc := &localCluster{logPath: filepath.Join(dir, "cluster.log")}
	if lc.ctl, err = startChild("spry-controller local", cmd, lc.logPath); err != nil {
		return nil, err
	}
	if err := lc.wait(ctx, "the cluster", func() (bool, error) {
		b, err := os.ReadFile(infoPath)
		if err != nil {
			return false, err
		}
		return json.Unmarshal(b, &lc.info) == nil && len(lc.info.Nodes) == nodes, nil
	}); err != nil {
		return nil, lc.fail(err)
	}
	if lc.kc, err = kube.FromKubeconfig(lc.info.Kubeconfig); err != nil {
		return nil, lc.fail(err)
	}
	if err := lc.wait(ctx, "the agents' heartbeats", func() (bool, error) {
		for _, n := range lc.info.Nodes {
			var sn api.SpryNode
			if err := lc.kc.Get(ctx, kube.NodePath(n.Name), &sn); err != nil || sn.Status.Heartbeat == nil {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return nil, lc.fail(err)
	}
	return lc, nil
}

// wait polls ok until it says done, the cluster exits, ctx ends or 3
// minutes pass.
func (lc *localCluster) wait(ctx context.Context, what string, ok func() (bool, error)) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		done, err := ok()
		if done {
			return nil
		}
		if lc.ctl.exited() {
			return fmt.Errorf("spry-controller local exited while waiting for %s", what)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s (%v)", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop stops the cluster and reports any of *procs that outlived it in
// *err, unless *err holds an error already. Deferred, with the processes
// the run found and its named result: defer lc.stop(&procs, &err).
func (lc *localCluster) stop(procs *[]Proc, err *error) {
	lc.ctl.stop(30 * time.Second)
	if serr := survivors(*procs); serr != nil && *err == nil {
		*err = serr
	}
}

// fail stops the cluster and returns err with the end of its log.
func (lc *localCluster) fail(err error) error {
	lc.ctl.stop(15 * time.Second)
	log, _ := os.ReadFile(lc.logPath)
	return fmt.Errorf("bench: local cluster: %w\n%s", err, tail(log, 3000))
}

// deploy creates the SpryApp default/name from an app's spry.yaml.
func (lc *localCluster) deploy(ctx context.Context, name, y string) error {
	var v any
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		return err
	}
	spec, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := lc.kc.Create(ctx, kube.AppsPath("default"), kube.NewApp("default", name, spec), nil); err != nil {
		return fmt.Errorf("create SpryApp: %w", err)
	}
	return nil
}

func (m clusterMode) Start(ctx context.Context, w *bench.Workload, env Env) (System, error) {
	nodes := max(env.Nodes, 2)
	fns, chains, err := w.Shaped("")
	if err != nil {
		return nil, err
	}
	// Apart, each node has room for one function's instances; spread,
	// for one copy of every function, and the app asks for a copy per
	// node.
	room := 1
	for _, f := range fns {
		room = max(room, f.Instances)
	}
	if m.spread {
		room = 0
		for _, f := range fns {
			room += f.Instances
		}
		copied := *w
		copied.Functions = slices.Clone(w.Functions)
		for i := range copied.Functions {
			copied.Functions[i].Instances *= nodes
		}
		w, fns = &copied, copied.Functions
	}
	lc, err := startLocal(ctx, env.Exe, filepath.Join(env.Dir, m.Name()), nodes,
		"--heartbeat", "500ms", "--capacity-cpu", strconv.Itoa(room*demandMillis))
	if err != nil {
		return nil, err
	}
	c := lc.ctl
	r := &clusterRun{ctl: c, info: lc.info}
	fail := func(err error) (System, error) { return nil, lc.fail(err) }
	wait := func(what string, ok func() (bool, error)) error { return lc.wait(ctx, what, ok) }
	// The workload as a SpryApp.
	y, err := appYAML(w, "auto", "", "")
	if err != nil {
		return fail(err)
	}
	if err := lc.deploy(ctx, "bench", y); err != nil {
		return fail(err)
	}
	// Ready: every instance placed somewhere has started; the first step
	// of the (first) chain names the node the load goes to.
	first := ""
	if len(chains) > 0 && len(chains[0].Steps) > 0 {
		first = chains[0].Steps[0]
	}
	var firstNode map[string]bool // the functions the first step's node runs
	if err := wait("the app's instances", func() (bool, error) {
		ready := map[string]int{}
		firstNode = nil
		r.addr, r.procs = "", []Proc{{PID: c.pid(), Role: RoleControl, Component: "control"}}
		short := "" // spread: a node that does not run every function
		for _, n := range r.info.Nodes {
			s, err := fetchStatus(n.Admin)
			if err != nil {
				return false, err
			}
			r.procs = append(r.procs, Proc{PID: s.Node.PID, Role: RoleGateway, Component: "gateway"})
			runs := map[string]bool{}
			for _, a := range s.Apps {
				for _, f := range a.Functions {
					for _, in := range f.Instances {
						if in.State != "ready" || in.PID <= 0 {
							continue
						}
						ready[f.Name]++
						r.procs = append(r.procs, Proc{PID: in.PID, Role: RoleFunction, Component: "fn:" + f.Name})
						runs[f.Name] = true
						if f.Name == first {
							r.addr = n.Gateway
							firstNode = runs
						}
					}
				}
			}
			if m.spread && len(runs) < len(fns) && short == "" {
				short = n.Name
			}
		}
		for _, f := range fns {
			if ready[f.Name] < f.Instances {
				return false, fmt.Errorf("%s: %d of %d instances ready", f.Name, ready[f.Name], f.Instances)
			}
		}
		if short != "" {
			return false, fmt.Errorf("node %s does not run every step (%s)", short, r.Placement())
		}
		return r.addr != "", nil
	}); err != nil {
		return fail(err)
	}
	if m.spread {
		for _, n := range r.info.Nodes {
			r.addrs = append(r.addrs, n.Gateway)
		}
		return r, nil
	}
	// The point of the mode: some hop of the chain crosses nodes.
	if len(firstNode) == len(fns) {
		return fail(fmt.Errorf("placement put every step on one node (%s)", r.Placement()))
	}
	return r, nil
}

func (r *clusterRun) Addr() string { return r.addr }

// Addrs is every node's gateway when the load is spread (else nil: all
// of it goes to Addr).
func (r *clusterRun) Addrs() []string { return r.addrs }

func (r *clusterRun) Procs() []Proc { return r.procs }

// Transits sums the hops of every node's chains.
func (r *clusterRun) Transits() (n, ns uint64, err error) {
	for _, nd := range r.info.Nodes {
		s, err := fetchStatus(nd.Admin)
		if err != nil {
			return 0, 0, err
		}
		dn, dns := s.transits()
		n, ns = n+dn, ns+dns
	}
	return n, ns, nil
}

// Placement says which node runs which function (for the log).
func (r *clusterRun) Placement() string {
	var parts []string
	for _, nd := range r.info.Nodes {
		s, err := fetchStatus(nd.Admin)
		if err != nil {
			continue
		}
		var fs []string
		for _, a := range s.Apps {
			for _, f := range a.Functions {
				if k := len(f.Instances); k > 0 {
					fs = append(fs, f.Name+"×"+strconv.Itoa(k))
				}
			}
		}
		parts = append(parts, nd.Name+": "+strings.Join(fs, ","))
	}
	return strings.Join(parts, "; ")
}

func (r *clusterRun) Stop() error {
	r.ctl.stop(30 * time.Second)
	var errs []error
	if err := survivors(r.procs); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
