package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/spry-dev/spry/deploy/kubernetes"
	"github.com/spry-dev/spry/internal/builtin"
	"github.com/spry-dev/spry/internal/cluster/controller"
)

// local runs a whole cluster on this machine for development and
// benchmarks: etcd and kube-apiserver (built by deploy/kubernetes/testbin.sh),
// Spry's CRDs, the controller, and N node agents on 127.0.0.1 with
// gateways on consecutive ports. Ctrl-C stops everything.
func local(args []string) int {
	fs := flag.NewFlagSet("spry-controller local", flag.ExitOnError)
	nodes := fs.Int("nodes", 3, "node agents to start")
	port := fs.Int("port", 8080, "first node's gateway port (node i: port+i; admin port+100+i; peer links port+200+i); 0: ephemeral ports")
	assets := fs.String("assets", os.Getenv("KUBEBUILDER_ASSETS"), "directory with kube-apiserver, etcd, kubectl (default: deploy/kubernetes/testbin.sh's cache)")
	spry := fs.String("spry", "", "the spry binary (default: beside this one, then PATH)")
	crds := fs.String("crds", "", "the CRDs file (default: the ones built in)")
	cpu := fs.String("capacity-cpu", "", "each agent's --capacity-cpu (millicores offered to instances; default all CPUs)")
	mem := fs.String("capacity-memory", "", "each agent's --capacity-memory (default all memory)")
	heartbeat := fs.Duration("heartbeat", time.Second, "the agents' heartbeat (and the controller's period, unless --period)")
	period := fs.Duration("period", 0, "the controller's control period (default: --heartbeat)")
	lease := fs.Duration("lease", 0, "the agents' lease: a node that has not renewed it for this long is lost (whole seconds; default max(10s, 3 heartbeats))")
	grace := fs.Duration("lost-grace", 30*time.Second, "how long a lost node keeps its instances; negative: none")
	kcOut := fs.String("kubeconfig-out", "", "also write the cluster's kubeconfig to this file")
	infoOut := fs.String("info-out", "", "once the agents are started, write the cluster as JSON to this file: {kubeconfig, nodes: [{name, gateway, admin, peer}]}")
	quiet := fs.Bool("quiet", false, "log warnings and errors only")
	anyBuiltin := fs.Bool("any-builtin", false, "let the agents judge builtin names (spry bench's steps are builtins only the spry binary knows)")
	var agentArgs multiFlag
	fs.Var(&agentArgs, "agent-arg", "one more argument for every agent's spry up (repeat: --agent-arg=--transport --agent-arg=uds)")
	_ = fs.Parse(args)
	level := slog.LevelInfo
	if *quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "spry-controller local:", err); return 1 }
	if *assets == "" {
		home, _ := os.UserHomeDir()
		*assets = filepath.Join(home, ".cache", "spry", "k8s-v1.37.2")
	}
	if *spry == "" {
		self, _ := os.Executable()
		*spry = filepath.Join(filepath.Dir(self), "spry")
		if _, err := os.Stat(*spry); err != nil {
			if p, err := exec.LookPath("spry"); err == nil {
				*spry = p
			}
		}
	}
	ctx, stop := signalContext()
	defer stop()

	dir, err := os.MkdirTemp("", "spry-local-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	if *crds == "" {
		*crds = filepath.Join(dir, "crds.yaml")
		if err := os.WriteFile(*crds, kubernetes.CRDs, 0o644); err != nil {
			return fail(err)
		}
	}
	env := &envtest.Environment{BinaryAssetsDirectory: *assets, ErrorIfCRDPathMissing: true,
		CRDInstallOptions: envtest.CRDInstallOptions{Paths: []string{*crds}, ErrorIfPathMissing: true},
		Scheme:            controller.Scheme(),
		// The apiserver takes seconds to start on an idle machine, and far
		// more on a loaded one (envtest's default gives it 20 s).
		ControlPlaneStartTimeout: 2 * time.Minute}
	cfg, err := env.Start()
	if err != nil {
		return fail(fmt.Errorf("control plane (run deploy/kubernetes/testbin.sh first?): %w", err))
	}
	defer env.Stop()
	user, err := env.AddUser(envtest.User{Name: "spry-local", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fail(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return fail(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return fail(err)
	}
	if *kcOut != "" {
		if err := os.WriteFile(*kcOut, kc, 0o600); err != nil {
			return fail(err)
		}
	}
	s := controller.Scheme()
	_ = corev1.AddToScheme(s)
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return fail(err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "spry-system"}}); err != nil {
		return fail(err)
	}

	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	type nodeInfo struct {
		Name    string `json:"name"`
		Gateway string `json:"gateway"`
		Admin   string `json:"admin"`
		Peer    string `json:"peer"`
	}
	var infos []nodeInfo
	for i := range *nodes {
		name := "node-" + strconv.Itoa(i+1)
		at := func(off int) string {
			if *port == 0 {
				return freePort()
			}
			return "127.0.0.1:" + strconv.Itoa(*port+off+i)
		}
		ni := nodeInfo{Name: name, Gateway: at(0), Admin: at(100), Peer: at(200)}
		infos = append(infos, ni)
		argv := []string{"up", "--cluster", "--node-name", name, "--kubeconfig", kubeconfig,
			"--listen", ni.Gateway, "--admin", ni.Admin, "--peer-listen", ni.Peer,
			"--data-dir", filepath.Join(dir, name), "--heartbeat", heartbeat.String(),
			"--lease", cmp.Or(*lease, max(10*time.Second, 3*(*heartbeat))).String()}
		if *cpu != "" {
			argv = append(argv, "--capacity-cpu", *cpu)
		}
		if *mem != "" {
			argv = append(argv, "--capacity-memory", *mem)
		}
		cmd := exec.Command(*spry, append(argv, agentArgs...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		out, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			return fail(fmt.Errorf("start %s (%s): %w", name, *spry, err))
		}
		procs = append(procs, cmd)
		go prefix(name, out)
	}
	if *infoOut != "" {
		b, _ := json.Marshal(struct {
			Kubeconfig string     `json:"kubeconfig"`
			Nodes      []nodeInfo `json:"nodes"`
		}{kubeconfig, infos})
		tmp := *infoOut + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fail(err)
		}
		if err := os.Rename(tmp, *infoOut); err != nil {
			return fail(err)
		}
	}
	if *port != 0 {
		fmt.Fprintf(os.Stderr, `
  a local Spry cluster: %d nodes, gateways on 127.0.0.1:%d..%d
  export KUBECONFIG=%s
  spry deploy -f examples/hello/spry.yaml
  %s/kubectl get spryapps,sprynodes
  curl -s 127.0.0.1:%d/hello -d spry
  (Ctrl-C stops it all)

`, *nodes, *port, *port+*nodes-1, kubeconfig, *assets, *port)
	}
	ccfg := controller.ControllerConfig{Namespace: "spry-system", Logger: log, Period: cmp.Or(*period, *heartbeat), LostGrace: *grace,
		Builtins: func(name string) bool { _, ok := builtin.Lookup(name); return ok }}
	if *anyBuiltin {
		ccfg.Builtins = nil
	}
	// One controller and nothing to restart it: no leader election. With
	// it, an API server slowed down by load (this machine runs it, etcd
	// and every agent) let the leader lease lapse and the controller
	// exited mid-run ("leader election lost"), which a Deployment would
	// answer with a restart but a local cluster cannot.
	if err := controller.RunController(ctx, cfg, ccfg, controller.RunOptions{}); err != nil {
		return fail(err)
	}
	return 0
}

func prefix(name string, r interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fmt.Fprintf(os.Stderr, "[%s] %s\n", name, strings.TrimSpace(sc.Text()))
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signalNotify(ch)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func signalNotify(ch chan os.Signal) { signal.Notify(ch, os.Interrupt, syscall.SIGTERM) }

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// freePort reserves a loopback port by binding and releasing it.
func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer ln.Close()
	return ln.Addr().String()
}
