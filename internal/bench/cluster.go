package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// RoleControl is the cluster's control plane in a cluster mode's costs:
// spry-controller local with its etcd and kube-apiserver.
const RoleControl = "control"

// demandMillis is what the controller counts for an instance without
// limits: (250m, 128 MiB): each node offers room for one function's
// instances only, so placement has to put the steps apart.
const demandMillis = 250

type clusterMode struct{}

func (clusterMode) Name() string { return ModeCluster }

// CodecPeer is a request frame on a link between two nodes (a binary
// header, then the payload).
const CodecPeer = "spry-peer"

// Path: steps on different nodes; each hop after the first step leaves
// through the node's peer endpoint, crosses the link between the nodes'
// gateways, and enters the next node's pool; the answer comes back the
// same way.
func (clusterMode) Path(c *bench.Chain) []Transfer {
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
	Kubeconfig string `json:"kubeconfig"`
	Nodes      []struct {
		Name    string `json:"name"`
		Gateway string `json:"gateway"`
		Admin   string `json:"admin"`
		Peer    string `json:"peer"`
	} `json:"nodes"`
}

type clusterRun struct {
	ctl   *child
	info  localInfo
	addr  string // the first step's node's gateway
	procs []Proc
}

func (m clusterMode) Start(ctx context.Context, w *bench.Workload, env Env) (System, error) {
	nodes := max(env.Nodes, 2)
	ctlExe := filepath.Join(filepath.Dir(env.Exe), "spry-controller")
	if _, err := os.Stat(ctlExe); err != nil {
		if ctlExe, err = exec.LookPath("spry-controller"); err != nil {
			return nil, fmt.Errorf("bench: mode cluster needs spry-controller beside %s or on PATH (go build -o DIR ./cmd/spry ./cmd/spry-controller)", env.Exe)
		}
	}
	fns, chains, err := w.Shaped("")
	if err != nil {
		return nil, err
	}
	most := 1
	for _, f := range fns {
		most = max(most, f.Instances)
	}
	dir := filepath.Join(env.Dir, ModeCluster)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	infoPath := filepath.Join(dir, "cluster.json")
	os.Remove(infoPath)
	cmd := exec.Command(ctlExe, "local", "--nodes", strconv.Itoa(nodes), "--port", "0", "--spry", env.Exe,
		"--info-out", infoPath, "--quiet", "--heartbeat", "500ms", "--any-builtin",
		"--capacity-cpu", strconv.Itoa(most*demandMillis))
	cmd.Env = os.Environ()
	logPath := filepath.Join(dir, "cluster.log")
	c, err := startChild("spry-controller local", cmd, logPath)
	if err != nil {
		return nil, err
	}
	r := &clusterRun{ctl: c}
	fail := func(err error) (System, error) {
		c.stop(15 * time.Second)
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("bench: local cluster: %w\n%s", err, tail(log, 3000))
	}
	// Up: the info file, every agent registered and beating.
	deadline := time.Now().Add(3 * time.Minute)
	wait := func(what string, ok func() (bool, error)) error {
		for {
			done, err := ok()
			if done {
				return nil
			}
			if c.exited() {
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
	if err := wait("the cluster", func() (bool, error) {
		b, err := os.ReadFile(infoPath)
		if err != nil {
			return false, err
		}
		return json.Unmarshal(b, &r.info) == nil && len(r.info.Nodes) == nodes, nil
	}); err != nil {
		return fail(err)
	}
	kc, err := kube.FromKubeconfig(r.info.Kubeconfig)
	if err != nil {
		return fail(err)
	}
	if err := wait("the agents' heartbeats", func() (bool, error) {
		for _, n := range r.info.Nodes {
			var sn api.SpryNode
			if err := kc.Get(ctx, kube.NodePath(n.Name), &sn); err != nil || sn.Status.Heartbeat == nil {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return fail(err)
	}
	// The workload as a SpryApp.
	y, err := appYAML(w, "auto", "", "")
	if err != nil {
		return fail(err)
	}
	var v any
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		return fail(err)
	}
	spec, err := json.Marshal(v)
	if err != nil {
		return fail(err)
	}
	if err := kc.Create(ctx, kube.AppsPath("default"), kube.NewApp("default", "bench", spec), nil); err != nil {
		return fail(fmt.Errorf("create SpryApp: %w", err))
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
		}
		for _, f := range fns {
			if ready[f.Name] < f.Instances {
				return false, fmt.Errorf("%s: %d of %d instances ready", f.Name, ready[f.Name], f.Instances)
			}
		}
		return r.addr != "", nil
	}); err != nil {
		return fail(err)
	}
	// The point of the mode: some hop of the chain crosses nodes.
	if len(firstNode) == len(fns) {
		return fail(fmt.Errorf("placement put every step on one node (%s)", r.Placement()))
	}
	return r, nil
}

func (r *clusterRun) Addr() string { return r.addr }

func (r *clusterRun) Procs() []Proc { return r.procs }

// Transits sums the hops of every node's chains.
func (r *clusterRun) Transits() (n, ns uint64, err error) {
	for _, nd := range r.info.Nodes {
		s, err := fetchStatus(nd.Admin)
		if err != nil {
			return 0, 0, err
		}
		for _, a := range s.Apps {
			n += a.Requests.Transits
			ns += a.Requests.TransitNs
		}
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
