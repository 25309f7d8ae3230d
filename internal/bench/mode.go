package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spry-dev/spry/bench"
	"github.com/spry-dev/spry/internal/bench/baseline"
	"github.com/spry-dev/spry/internal/bench/load"
	"github.com/spry-dev/spry/internal/bpf"
	"github.com/spry-dev/spry/internal/transport"
)

// Roles of the processes under test.
const (
	RoleGateway  = "gateway" // Spry's node daemon (gateway, supervisor, admin API)
	RoleFunction = "function"
	RoleSidecar  = "sidecar"
	RoleBroker   = "broker"
)

// Proc is one process of a system under test.
type Proc struct {
	PID       int
	Role      string
	Component string // the hop endpoint it is: "gateway", "broker", "fn:NAME", "sidecar:NAME"
}

// System is one mode running one workload.
type System interface {
	// Addr is where the load generator sends the client's requests.
	Addr() string
	// Procs lists the processes under test now.
	Procs() []Proc
	// Stop stops every process and reports any that survived.
	Stop() error
}

// Env is what modes need to start a workload.
type Env struct {
	Exe   string // the spry executable
	Dir   string // a scratch directory for configs and logs
	Proto string // what the load generator speaks to Spry (load.Proto*)
	// WasmSrc is bench/wasmfn for the wasm mode (default: in the working
	// directory).
	WasmSrc string
	// Nodes is the cluster mode's number of nodes (default 2).
	Nodes int
}

// Mode is a way to run a workload's chains.
type Mode interface {
	Name() string
	// Start runs w and returns once it can take requests.
	Start(ctx context.Context, w *bench.Workload, env Env) (System, error)
	// Path describes what happens to a request of chain c, transfer by
	// transfer (request and answer), as this mode is built.
	Path(c *bench.Chain) []Transfer
}

// Baseline mode names.
const (
	ModeKnative = "knative"
	ModeHTTP    = "http"
	ModeGRPC    = "grpc"
)

// ModeWasm runs the workload's steps as wasm: functions in the app's
// sandbox host (on the transport auto picks), built from the very same
// handlers (bench/wasmfn).
const ModeWasm = "wasm"

// ModeNames lists every mode this build offers: each Spry transport, Spry
// with wasm steps, then the baselines.
func ModeNames() []string {
	return append(append(slices.Clone(transport.Names), ModeWasm, ModeKnative, ModeHTTP, ModeGRPC), KindModes...)
}

// DefaultModes are the modes `spry bench` compares when not told: the
// transport a node on this machine picks by itself (skmsg where eBPF
// loads, else uds), then the baselines. The other transports are there to
// be named (poll keeps a core busy per endpoint).
func DefaultModes() []string {
	auto, _, err := transport.Resolve("auto", func() error {
		sm, err := bpf.New()
		if err == nil {
			sm.Close()
		}
		return err
	})
	if err != nil {
		auto = "uds"
	}
	return []string{auto, ModeKnative, ModeHTTP, ModeGRPC}
}

// NewMode returns mode name.
func NewMode(name string) (Mode, error) {
	switch name {
	case ModeKnative, ModeHTTP, ModeGRPC:
		return &baselineMode{name: name}, nil
	case ModeSpryPython, ModeSpryHTTP, ModeSpryLambda:
		return &kindMode{name: name}, nil
	case ModeKnativePython, ModeKnativeHTTP:
		return &seqMode{name: name}, nil
	}
	if name == ModeWasm {
		return &spryMode{wasm: true}, nil
	}
	if name == ModeCluster || name == ModeSpread {
		return clusterMode{spread: name == ModeSpread}, nil
	}
	// wasm-TRANSPORT: wasm steps on a transport other than auto's.
	if tr, ok := strings.CutPrefix(name, ModeWasm+"-"); ok && slices.Contains(transport.Names, tr) {
		return &spryMode{wasm: true, transport: tr}, nil
	}
	if t, variant, ok := strings.Cut(name, "+"); ok && slices.Contains(transport.Names, t) && variant != "" {
		return &spryMode{transport: t, variant: variant}, nil
	}
	if slices.Contains(transport.Names, name) {
		return &spryMode{transport: name}, nil
	}
	return nil, fmt.Errorf("bench: no mode %q (this build has: %s)", name, strings.Join(ModeNames(), ", "))
}

// ---- Spry ----

// spryMode runs a workload on a node with one transport; with a variant,
// the workload shaped otherwise (bench.Workload.Variants).
type spryMode struct {
	transport string // "" for wasm: the one auto picks
	wasm      bool
	variant   string
	chains    map[string]*bench.Chain // the variant's, by name (set by Start, for Path)
}

func (m *spryMode) Name() string {
	if m.wasm {
		if m.transport != "" {
			return ModeWasm + "-" + m.transport
		}
		return ModeWasm
	}
	if m.variant != "" {
		return m.transport + "+" + m.variant
	}
	return m.transport
}

type spryRun struct{ node *spryNode }

// appYAML writes w (shaped as variant) as a spry.yaml; with wasmSrc, its
// functions are wasm: functions built from that package (bench/wasmfn),
// each running its builtin.
func appYAML(w *bench.Workload, transport, variant, wasmSrc string) (string, error) {
	fns, chains, err := w.Shaped(variant)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "app: bench\ntransport: %s\n%sfunctions:\n", transport, poolYAML(w, 512))
	env := w.Settings.Env()
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, f := range fns {
		if wasmSrc != "" {
			// A wasm instance runs one step at a time: as many instances
			// as the process mode has handlers. The clock is granted: the
			// handlers are the same code as in the process modes, and
			// some sleep.
			fmt.Fprintf(&b, "  %s:\n    wasm: %s\n    instances: %d\n    timeout: 10m\n    grants: [clock]\n    env:\n      %s: %s\n",
				f.Name, wasmSrc, f.Instances*f.Concurrency, envBuiltin, f.Builtin)
		} else {
			fmt.Fprintf(&b, "  %s:\n    builtin: %s\n    instances: %d\n    concurrency: %d\n    timeout: 10m\n", f.Name, f.Builtin, f.Instances, f.Concurrency)
			if len(keys) > 0 {
				b.WriteString("    env:\n")
			}
		}
		for _, k := range keys {
			fmt.Fprintf(&b, "      %s: %q\n", k, env[k])
		}
	}
	b.WriteString("chains:\n")
	for _, c := range chains {
		fmt.Fprintf(&b, "  %s:\n    route: %s\n    methods: [%s]\n    timeout: 10m\n", c.Name, c.Route, strings.Join(c.Methods, ", "))
		if !c.Graph() {
			fmt.Fprintf(&b, "    steps: [%s]\n", strings.Join(c.Steps, ", "))
		} else {
			// A graph: the steps in a line up to the fan-out, the
			// branches, their join.
			b.WriteString("    steps:\n")
			for i, s := range c.Steps[:len(c.Steps)-1] {
				fmt.Fprintf(&b, "      %s: %s\n", s, c.Steps[i+1])
			}
			fmt.Fprintf(&b, "      %s: [%s]\n", c.Steps[len(c.Steps)-1], strings.Join(c.Branches, ", "))
			for _, br := range c.Branches {
				fmt.Fprintf(&b, "      %s: %s\n", br, c.Join)
			}
			fmt.Fprintf(&b, "      %s: {join: all}\n", c.Join)
		}
		if len(c.Headers) > 0 {
			fmt.Fprintf(&b, "    headers: [%s]\n", strings.Join(c.Headers, ", "))
		}
	}
	return b.String(), nil
}

// poolYAML is a workload's pool: and limits: (with up to bufs buffers).
// Payloads up to 1 MiB fit one buffer; larger ones (the payload sweep goes
// to 256 MiB) go to the large-extent region, sized for a few at once.
func poolYAML(w *bench.Workload, bufs int) string {
	if w.BufferSize <= 1<<20 {
		size := max(w.BufferSize, 16<<10)
		if size >= 512<<10 {
			bufs /= 2
		}
		return fmt.Sprintf("pool:\n  buffers: %d\n  bufferSize: %d\nlimits:\n  inflight: %d\n", bufs, size, bufs/2)
	}
	const bufSize = 64 << 10
	memory := uint64(bufs)*bufSize + 16*uint64(w.BufferSize) + 64<<20
	return fmt.Sprintf("pool:\n  memory: %d\n  buffers: %d\n  bufferSize: %d\nlimits:\n  inflight: %d\n  maxBody: %d\n",
		memory, bufs, bufSize, bufs/2, w.BufferSize)
}

func (m *spryMode) Start(ctx context.Context, w *bench.Workload, env Env) (System, error) {
	args := []string{"--log-level", "warn"}
	if !m.wasm {
		args = append(args, "--transport", m.transport)
	}
	if env.Proto == load.ProtoTLS || env.Proto == load.ProtoH2 {
		cert, key, err := selfSigned(env.Dir)
		if err != nil {
			return nil, err
		}
		args = append(args, "--tls-cert", cert, "--tls-key", key)
	}
	tr, src := m.transport, ""
	if m.wasm {
		var err error
		if src, err = wasmSource(env); err != nil {
			return nil, err
		}
		tr = cmp.Or(m.transport, "auto")
		// Compiled modules are kept across runs (by content): a fresh
		// compile of the handlers' module takes seconds.
		args = append(args, "--cache-dir", filepath.Join(os.TempDir(), "spry-bench-cache"))
	}
	yaml, err := appYAML(w, tr, m.variant, src)
	if err != nil {
		return nil, err
	}
	if _, chains, _ := w.Shaped(m.variant); m.variant != "" {
		m.chains = map[string]*bench.Chain{}
		for i := range chains {
			m.chains[chains[i].Name] = &chains[i]
		}
	}
	n, err := startNode(env.Exe, filepath.Join(env.Dir, m.Name()), "spry node ("+m.Name()+")", yaml, args...)
	if err != nil {
		return nil, err
	}
	// The node binds its ports first and serves once every instance is
	// ready: wait for the admin API to answer. The node fails by itself
	// when an instance is not ready within its ready timeout (30 s), and
	// waitUp returns when it exits: the bound here is for a hang. With
	// wasm steps it first builds their module (go build, GOOS=wasip1) and
	// compiles it, more than a minute on a busy machine: wait as long as
	// the node allows a compile.
	within := 2 * time.Minute
	if m.wasm {
		within = 10 * time.Minute
	}
	if err := n.waitUp(ctx, within, func() error { _, err := fetchStatus(n.admin); return err }); err != nil {
		n.stop(5 * time.Second)
		return nil, fmt.Errorf("bench: %w", err)
	}
	return &spryRun{n}, nil
}

// spryNode is a node the bench started: `spry up` on a config of its own.
type spryNode struct {
	*child
	name, addr, admin, log string

	mu   sync.Mutex
	pids map[int]bool // the node and every instance process seen
}

// saw records instance processes of the node, for shutdown to check.
func (n *spryNode) saw(pids ...int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range pids {
		if p > 0 {
			n.pids[p] = true
		}
	}
}

// shutdown stops the node and reports any of its processes seen (saw)
// that outlive it.
func (n *spryNode) shutdown() error {
	n.stop(15 * time.Second)
	n.mu.Lock()
	var ps []Proc
	for p := range n.pids {
		ps = append(ps, Proc{PID: p, Component: "spry"})
	}
	n.mu.Unlock()
	return survivors(ps)
}

// startNode writes yaml into dir/spry.yaml and starts `spry up` on it:
// ports of its own, its runtime directory, build cache and log (node.log)
// in dir, log level info, and then args, which may override any of those.
func startNode(exe, dir, name, yaml string, args ...string) (*spryNode, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "spry.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	argv := append([]string{"up", "-f", cfg, "--listen", ports[0], "--admin", ports[1],
		"--runtime-dir", filepath.Join(dir, "run"), "--cache-dir", filepath.Join(dir, "cache"),
		"--data-dir", filepath.Join(dir, "data"),
		"--log-level", "info", "--drain-timeout", "5s"}, args...)
	cmd := exec.Command(exe, argv...)
	cmd.Env = os.Environ()
	log := filepath.Join(dir, "node.log")
	c, err := startChild(name, cmd, log)
	if err != nil {
		return nil, err
	}
	return &spryNode{child: c, name: name, addr: ports[0], admin: ports[1], log: log, pids: map[int]bool{c.pid(): true}}, nil
}

// waitUp polls up every 20 ms until it succeeds; it fails, with the end of
// the node's log, when the node exits, ctx ends or timeout passes.
func (n *spryNode) waitUp(ctx context.Context, timeout time.Duration, up func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := up()
		if err == nil {
			return nil
		}
		if n.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			log, _ := os.ReadFile(n.log)
			return fmt.Errorf("%s did not come up (%v): %s", n.name, err, tail(log, 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *spryRun) Addr() string { return r.node.addr }

// status is the part of the admin API's /v1/status the bench reads.
type status struct {
	Node struct {
		PID    int    `json:"pid"`
		Listen string `json:"listen"`
	} `json:"node"`
	Apps []struct {
		Transport string `json:"transport"`
		Functions []struct {
			Name  string `json:"name"`
			Scale struct {
				Desired    int     `json:"desired"`
				RPS        float64 `json:"rps"`
				Predicted  float64 `json:"predictedRps"`
				Queue      int     `json:"queue"`
				P99Millis  float64 `json:"p99Millis"`
				Attainment float64 `json:"sloAttainment"`
				Reason     string  `json:"reason"`
			} `json:"scale"`
			Instances []struct {
				PID         int     `json:"pid"`
				State       string  `json:"state"`
				StartMillis float64 `json:"startMillis"`
			} `json:"instances"`
		} `json:"functions"`
		Chains []struct {
			Name  string   `json:"name"`
			Route string   `json:"route"`
			Steps []string `json:"steps"`
		} `json:"chains"`
		Requests struct {
			Transits  uint64 `json:"transits"`
			TransitNs uint64 `json:"transitNs"`
		} `json:"requests"`
	} `json:"apps"`
}

// Transits reads how many hops from one step to the next the node's
// chains took, and their time in all (System's optional hop stamps).
func (r *spryRun) Transits() (n, ns uint64, err error) {
	s, err := fetchStatus(r.node.admin)
	if err != nil {
		return 0, 0, err
	}
	n, ns = s.transits()
	return n, ns, nil
}

// transits sums the hops of the node's apps' chains, and their time.
func (s *status) transits() (n, ns uint64) {
	for _, a := range s.Apps {
		n += a.Requests.Transits
		ns += a.Requests.TransitNs
	}
	return n, ns
}

// ready returns the functions that have a ready instance on the node.
func (s *status) ready() map[string]bool {
	r := map[string]bool{}
	for _, a := range s.Apps {
		for _, f := range a.Functions {
			for _, in := range f.Instances {
				if in.State == "ready" && in.PID > 0 {
					r[f.Name] = true
				}
			}
		}
	}
	return r
}

// transiter is a System that measures the hops inside its chains (Spry's,
// from the buffers' hop stamps).
type transiter interface {
	Transits() (n, ns uint64, err error)
}

func fetchStatus(admin string) (*status, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("admin API: %s: %s", resp.Status, b)
	}
	var s status
	return &s, json.NewDecoder(resp.Body).Decode(&s)
}

// nodeProcs lists a node's processes from its admin API.
func nodeProcs(admin string) ([]Proc, error) {
	s, err := fetchStatus(admin)
	if err != nil {
		return nil, err
	}
	ps := []Proc{{PID: s.Node.PID, Role: RoleGateway, Component: "gateway"}}
	for _, a := range s.Apps {
		for _, f := range a.Functions {
			for _, in := range f.Instances {
				if in.PID > 0 {
					ps = append(ps, Proc{PID: in.PID, Role: RoleFunction, Component: "fn:" + f.Name})
				}
			}
		}
	}
	return ps, nil
}

func (r *spryRun) Procs() []Proc {
	ps, err := nodeProcs(r.node.admin)
	if err != nil {
		return []Proc{{PID: r.node.pid(), Role: RoleGateway, Component: "gateway"}}
	}
	return ps
}

func (r *spryRun) Stop() error {
	ps := r.Procs()
	r.node.stop(15 * time.Second)
	return survivors(ps)
}

func survivors(ps []Proc) error {
	var left []string
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range ps {
		for alive(p.PID) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(p.PID) {
			left = append(left, fmt.Sprintf("%s pid %d", p.Component, p.PID))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("bench: processes left running: %s", strings.Join(left, ", "))
	}
	return nil
}

// Path: the gateway parses the request once and writes the body into the
// pool; from there every hop is a descriptor over the transport (to every
// branch of a fan-out, from every branch to the gateway, which sends the
// join step its inputs in one, to a called function and back), and the last step's descriptor goes straight back to the
// gateway. With wasm steps, the hops between them are calls inside the
// sandbox host.
func (m *spryMode) Path(c *bench.Chain) []Transfer {
	if m.wasm {
		t := []Transfer{{From: "client", To: "gateway", Medium: MediumTCP, Codec: CodecHTTP}}
		prev := "gateway"
		for i, s := range c.Steps {
			medium := "descriptor/" + cmp.Or(m.transport, "auto")
			if i > 0 {
				medium = MediumCall
			}
			t = append(t, Transfer{From: prev, To: "fn:" + s, Medium: medium, Codec: CodecNone})
			prev = "fn:" + s
		}
		return append(t, Transfer{From: prev, To: "gateway", Medium: "descriptor/" + cmp.Or(m.transport, "auto"), Codec: CodecNone, Answer: true},
			Transfer{From: "gateway", To: "client", Medium: MediumTCP, Codec: CodecHTTP, Answer: true})
	}
	if m.variant != "" {
		// The variant's chain of that name (the audit is per name).
		if v, ok := m.shaped(c.Name); ok {
			c = v
		}
	}
	desc := "descriptor/" + m.transport
	t := []Transfer{{From: "client", To: "gateway", Medium: MediumTCP, Codec: CodecHTTP}}
	hop := func(from, to string, answer bool) {
		t = append(t, Transfer{From: from, To: to, Medium: desc, Codec: CodecNone, Answer: answer})
	}
	var calls func(caller string, depth int)
	calls = func(caller string, depth int) {
		for _, call := range c.Calls {
			if call[0] == caller && depth < 8 {
				hop("fn:"+call[0], "fn:"+call[1], false)
				calls(call[1], depth+1)
				hop("fn:"+call[1], "fn:"+call[0], true)
			}
		}
	}
	prev := "gateway"
	for _, s := range c.Steps {
		hop(prev, "fn:"+s, false)
		calls(s, 0)
		prev = "fn:" + s
	}
	if c.Graph() {
		// Every branch's output goes to the gateway, which collects the
		// join's inputs and sends the join step one buffer listing them.
		for _, b := range c.Branches {
			hop(prev, "fn:"+b, false)
			hop("fn:"+b, "gateway", false)
		}
		hop("gateway", "fn:"+c.Join, false)
		prev = "fn:" + c.Join
	}
	hop(prev, "gateway", true)
	return append(t, Transfer{From: "gateway", To: "client", Medium: MediumTCP, Codec: CodecHTTP, Answer: true})
}

func (m *spryMode) shaped(name string) (*bench.Chain, bool) {
	c, ok := m.chains[name]
	return c, ok
}

// ---- baselines ----

type baselineMode struct{ name string }

func (m *baselineMode) Name() string { return m.name }

type baselineRun struct {
	addr     string
	children []*child
	procs    []Proc
}

func (r *baselineRun) Addr() string  { return r.addr }
func (r *baselineRun) Procs() []Proc { return r.procs }

func (r *baselineRun) Stop() error {
	for _, c := range r.children {
		c.stop(5 * time.Second)
	}
	return survivors(r.procs)
}

// BrokerKind says what the knative mode's broker is: "nginx VERSION" when
// nginx is installed, else "go reverse proxy".
func BrokerKind() string {
	path, err := exec.LookPath("nginx")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
			return "go reverse proxy"
		}
		path = "/usr/sbin/nginx"
	}
	out, err := exec.Command(path, "-v").CombinedOutput()
	if err != nil {
		return "go reverse proxy"
	}
	v := strings.TrimSpace(string(out))
	if _, after, ok := strings.Cut(v, "nginx/"); ok {
		v = "nginx " + after
	}
	return v
}

func nginxPath() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// ForceGoBroker makes the knative mode use the Go broker even when nginx is
// installed (tests and comparisons).
var ForceGoBroker = false

func (m *baselineMode) Start(ctx context.Context, w *bench.Workload, env Env) (_ System, err error) {
	dir := filepath.Join(env.Dir, m.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &baselineRun{}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	var chains []baseline.ChainInfo
	for _, c := range w.Chains {
		if len(c.Calls) > 0 {
			return nil, fmt.Errorf("bench: %s: chain %s makes calls: the baselines run the workload's chains only", m.name, c.Name)
		}
		chains = append(chains, baseline.ChainInfo{Name: c.Name, Route: c.Route, Steps: c.Steps, Headers: c.Headers, Branches: c.Branches, Join: c.Join})
	}
	// Addresses: per instance an HTTP port (and a gRPC one, or a sidecar
	// one), and the broker's.
	type inst struct {
		fn               bench.Function
		k                int
		http, grpc, side string
	}
	var insts []*inst
	nports := 1
	for _, f := range w.Functions {
		for k := range f.Instances {
			insts = append(insts, &inst{fn: f, k: k})
			nports += 2
		}
	}
	ports, err := freePorts(nports)
	if err != nil {
		return nil, err
	}
	brokerAddr := ports[0]
	next := map[string][]string{}
	upstreams := map[string][]string{}
	for i, in := range insts {
		in.http = ports[1+2*i]
		switch m.name {
		case ModeGRPC:
			in.grpc = ports[2+2*i]
			next[in.fn.Name] = append(next[in.fn.Name], in.grpc)
		case ModeKnative:
			in.side = ports[2+2*i]
			upstreams[in.fn.Name] = append(upstreams[in.fn.Name], in.side)
		default:
			next[in.fn.Name] = append(next[in.fn.Name], in.http)
		}
	}
	firsts := map[string]bool{}
	routes := map[string]string{}
	for _, c := range w.Chains {
		firsts[c.Steps[0]] = true
		routes[c.Route] = c.Steps[0]
	}
	settings := w.Settings.Env()
	start := func(name, logName string, c baseline.Config) (*child, error) {
		js, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(env.Exe, "bench-proc")
		cmd.Env = append(os.Environ(), baseline.EnvConfig+"="+string(js))
		for k, v := range settings {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		ch, err := startChild(name, cmd, filepath.Join(dir, logName+".log"))
		if err != nil {
			return nil, err
		}
		r.children = append(r.children, ch)
		return ch, nil
	}
	var waits []func() error
	for _, in := range insts {
		c := baseline.Config{Role: baseline.RoleFn, Function: in.fn.Name, Builtin: in.fn.Builtin, Proto: m.name,
			Chains: chains, Next: next, BufferSize: min(max(w.BufferSize, 16<<10), 1<<20), MaxPayload: w.BufferSize, Broker: brokerAddr}
		switch m.name {
		case ModeGRPC:
			c.GRPC = in.grpc
			if firsts[in.fn.Name] {
				c.HTTP = in.http // the chain's entry: HTTP from the client
			}
		default:
			c.HTTP = in.http
		}
		tag := fmt.Sprintf("%s-%d", in.fn.Name, in.k)
		ch, err := start(m.name+" "+tag, "fn-"+tag, c)
		if err != nil {
			return nil, err
		}
		r.procs = append(r.procs, Proc{PID: ch.pid(), Role: RoleFunction, Component: "fn:" + in.fn.Name})
		for _, a := range []string{c.HTTP, c.GRPC} {
			if a != "" {
				waits = append(waits, func() error { return waitListening(a, 30*time.Second, ch) })
			}
		}
		if m.name == ModeKnative {
			sc := baseline.Config{Role: baseline.RoleSidecar, Listen: in.side, Target: in.http, Timeout: 10 * time.Minute}
			sch, err := start("sidecar "+tag, "sidecar-"+tag, sc)
			if err != nil {
				return nil, err
			}
			r.procs = append(r.procs, Proc{PID: sch.pid(), Role: RoleSidecar, Component: "sidecar:" + in.fn.Name})
			waits = append(waits, func() error { return waitListening(in.side, 30*time.Second, sch) })
		}
	}
	switch m.name {
	case ModeKnative:
		bc := baseline.Config{Role: baseline.RoleBroker, Listen: brokerAddr, Routes: routes, Upstreams: upstreams}
		var bch *child
		if ng := nginxPath(); ng != "" && !ForceGoBroker {
			conf, err := baseline.NginxConfig(filepath.Join(dir, "nginx"), brokerAddr, &bc)
			if err != nil {
				return nil, err
			}
			bch, err = startChild("nginx broker", exec.Command(ng, "-c", conf, "-p", filepath.Dir(conf)), filepath.Join(dir, "nginx.log"))
			if err != nil {
				return nil, err
			}
			r.children = append(r.children, bch)
		} else if bch, err = start("go broker", "broker", bc); err != nil {
			return nil, err
		}
		r.procs = append(r.procs, Proc{PID: bch.pid(), Role: RoleBroker, Component: "broker"})
		waits = append(waits, func() error { return waitListening(brokerAddr, 30*time.Second, bch) })
		r.addr = brokerAddr
	default:
		// The client talks to the first function of its chain; all
		// chains of a workload start with the same function.
		for _, in := range insts {
			if firsts[in.fn.Name] {
				r.addr = in.http
				break
			}
		}
	}
	if len(firsts) != 1 && m.name != ModeKnative {
		return nil, fmt.Errorf("bench: %s: chains start at different functions; the direct modes need one entry", m.name)
	}
	for _, wt := range waits {
		if err := wt(); err != nil {
			return nil, fmt.Errorf("bench: %s: %w", m.name, err)
		}
	}
	return r, nil
}

// Path: nested calls. knative: client → broker → sidecar → function, and
// every later hop function → broker → sidecar → function; the answers come
// back the same way. http and grpc: client → first function, then function
// to function directly (gRPC between functions). A fan-out: the last step
// calls every branch (each answers), then the join (which answers).
func (m *baselineMode) Path(c *bench.Chain) []Transfer {
	codec := CodecHTTP
	if m.name == ModeGRPC {
		codec = CodecGRPC
	}
	leg := func(from, s string, cd string) []Transfer {
		fn := "fn:" + s
		if m.name == ModeKnative {
			return []Transfer{
				{From: from, To: "broker", Medium: MediumTCP, Codec: CodecHTTP},
				{From: "broker", To: "sidecar:" + s, Medium: MediumTCP, Codec: CodecHTTP},
				{From: "sidecar:" + s, To: fn, Medium: MediumTCP, Codec: CodecHTTP}}
		}
		return []Transfer{{From: from, To: fn, Medium: MediumTCP, Codec: cd}}
	}
	back := func(req []Transfer) []Transfer {
		var t []Transfer
		for i := len(req) - 1; i >= 0; i-- {
			a := req[i]
			t = append(t, Transfer{From: a.To, To: a.From, Medium: a.Medium, Codec: a.Codec, Answer: true})
		}
		return t
	}
	var req []Transfer
	prev := "client"
	for i, s := range c.Steps {
		cd := codec
		if i == 0 {
			cd = CodecHTTP // the client speaks HTTP/1.1
		}
		req = append(req, leg(prev, s, cd)...)
		prev = "fn:" + s
	}
	t := slices.Clone(req)
	if c.Graph() {
		for _, s := range append(slices.Clone(c.Branches), c.Join) {
			l := leg(prev, s, codec)
			t = append(append(t, l...), back(l)...)
		}
	}
	return append(t, back(req)...)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// envBuiltin names the builtin bench/wasmfn runs.
const envBuiltin = "BENCH_BUILTIN"

// wasmSource finds bench/wasmfn, the package the wasm mode builds: from
// the environment (Env.WasmSrc), else in the working directory, a checkout
// of spry.
func wasmSource(env Env) (string, error) {
	src := env.WasmSrc
	if src == "" {
		src = filepath.Join("bench", "wasmfn")
	}
	abs, err := filepath.Abs(src)
	if err == nil {
		if _, err = os.Stat(filepath.Join(abs, "main.go")); err == nil {
			return abs, nil
		}
	}
	return "", fmt.Errorf("bench: mode wasm builds the workload's handlers for WebAssembly from spry's source (bench/wasmfn): run spry bench in a checkout of spry")
}
