package controller

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/cluster/kube"
)

var spryBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "spry-cluster-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "spry")
	out, err := exec.Command("go", "build", "-o", bin, "../../../cmd/spry").CombinedOutput()
	if err != nil {
		return "", &exec.ExitError{Stderr: out}
	}
	return bin, nil
})

// agentProc is one `spry up --cluster` process.
type agentProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  strings.Builder
	exit chan error
}

func (a *agentProc) logs() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.log.String()
}

func startAgent(t *testing.T, h *harness, kubeconfig, name string, extra ...string) *agentProc {
	t.Helper()
	bin, err := spryBin()
	if err != nil {
		t.Fatalf("build spry: %v", err)
	}
	cmd := exec.Command(bin, "up", "--cluster", "--node-name", name, "--namespace", h.ns, "--kubeconfig", kubeconfig,
		"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--heartbeat", "300ms", "--lease", "2s",
		"--capacity-cpu", "4000", "--capacity-memory", "8GiB", "--data-dir", t.TempDir())
	cmd.Args = append(cmd.Args, extra...)
	a := runAgent(t, name, cmd)
	h.nodes = append(h.nodes, name)
	return a
}

// runAgent starts cmd (a `spry up --cluster`) with its output gathered in
// the agentProc's log; at the test's end the agent is stopped with SIGTERM
// (killed, and the test failed, if it does not stop within 20 s) and, if the
// test failed, the tail of its log is logged.
func runAgent(t *testing.T, name string, cmd *exec.Cmd) *agentProc {
	t.Helper()
	a := &agentProc{cmd: cmd, exit: make(chan error, 1)}
	pr, pw := io.Pipe()
	a.cmd.Stdout, a.cmd.Stderr = pw, pw
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			a.mu.Lock()
			a.log.WriteString(sc.Text() + "\n")
			a.mu.Unlock()
		}
	}()
	go func() { a.exit <- a.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			_ = a.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-a.exit:
			case <-time.After(20 * time.Second):
				_ = a.cmd.Process.Kill()
				<-a.exit
				t.Errorf("agent %s did not stop on SIGTERM\n%s", name, a.logs())
			}
		}
		if t.Failed() {
			t.Logf("agent %s:\n%s", name, tail(a.logs(), 40))
		}
	})
	return a
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-lines):], "\n")
}

func (a *agentProc) kill() {
	_ = a.cmd.Process.Kill()
	<-a.exit
}

// post sends one request to a gateway and returns status and body.
func post(ctx context.Context, gw, path, body string) (int, string) {
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+gw+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAgentsEndToEnd: two real node agents (spry up --cluster) and the
// controller on a real API server. A deployed chain runs on both and
// answers on both gateways; kill -9 of one agent: its lease expires, its
// instances are re-placed on the survivor, which keeps answering; the
// node comes back and takes new instances.
func TestAgentsEndToEnd(t *testing.T) {
	h := agentHarness(t)
	kubeconfig := agentKubeconfig(t)

	ctl, err := NewController(testClient, ControllerConfig{Namespace: h.ns, Period: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = ctl.Run(cctx, nil, nil) }()
	t.Cleanup(func() { cancel(); <-done })

	a1 := startAgent(t, h, kubeconfig, "e1")
	startAgent(t, h, kubeconfig, "e2")
	gw := waitAgents(t, h, "e1", "e2")

	kcl, err := kube.FromKubeconfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := yaml.YAMLToJSON([]byte(chainApp))
	if err := kcl.Create(h.ctx, kube.AppsPath(h.ns), kube.NewApp(h.ns, "shop", spec), nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"e1", "e2"} {
		waitFor(t, 60*time.Second, func() bool {
			code, body := post(h.ctx, gw[n], "/buy", "spry")
			return code == 200 && body == "SPRY"
		}, "the chain answers on "+n)
	}
	waitFor(t, 30*time.Second, func() bool { return h.status("shop").Ready == "4/4" }, "status 4/4 ready")

	// kill -9 one agent: the other keeps answering, and gets everything.
	killed := time.Now()
	a1.kill()
	waitFor(t, 30*time.Second, func() bool { return h.assignedOK("e2") == "shop/back=2 shop/front=2" }, "instances re-placed on e2")
	replaced := time.Since(killed)
	for range 20 {
		if code, body := post(h.ctx, gw["e2"], "/buy", "spry"); code != 200 || body != "SPRY" {
			t.Fatalf("survivor answered %d %q", code, body)
		}
	}
	waitFor(t, 30*time.Second, func() bool { return h.status("shop").Ready == "4/4" }, "4/4 ready again after the loss")
	t.Logf("node loss (lease 2s, heartbeat 300ms, period 300ms): re-placed after %v, all instances ready after %v",
		replaced.Round(10*time.Millisecond), time.Since(killed).Round(10*time.Millisecond))

	// e1 comes back and is used when the app grows.
	startAgent(t, h, kubeconfig, "e1")
	var cur api.SpryApp
	if err := kcl.Get(h.ctx, kube.AppPath(h.ns, "shop"), &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec, _ = yaml.YAMLToJSON([]byte(strings.ReplaceAll(chainApp, "instances: 2", "instances: 4")))
	if err := kcl.Update(h.ctx, kube.AppPath(h.ns, "shop"), &cur, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool {
		var sn SpryNode
		if testClient.Get(h.ctx, client.ObjectKey{Name: "e1"}, &sn) != nil {
			return false
		}
		code, body := post(h.ctx, sn.Spec.Gateway, "/buy", "spry")
		return code == 200 && body == "SPRY"
	}, "the returning node serves the chain")
	waitFor(t, 30*time.Second, func() bool { return h.status("shop").Ready == "8/8" }, "8/8 ready")

	// spry status --cluster shows both nodes up and the app.
	bin, _ := spryBin()
	out, err := exec.CommandContext(h.ctx, bin, "status", "--cluster", "--kubeconfig", kubeconfig, "--namespace", h.ns).CombinedOutput()
	if err != nil {
		t.Fatalf("spry status --cluster: %v\n%s", err, out)
	}
	for _, want := range []string{"e1", "e2", "true", h.ns + "/shop", "8/8", "/buy", "front", "back"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("spry status --cluster lacks %q:\n%s", want, out)
		}
	}
}

// agentHarness is a harness for tests with real agents: spry is built
// first, and the test's context lasts long enough for processes on a
// loaded machine (a 60 s context once ran out before the test's last
// step, under load 40: "the returning node serves the chain").
func agentHarness(t *testing.T) *harness {
	t.Helper()
	needK8s(t)
	if _, err := spryBin(); err != nil {
		t.Fatalf("build spry: %v", err)
	}
	return newHarnessFor(t, 4*time.Minute)
}

// agentKubeconfig writes a kubeconfig for the agents (a user of the test
// control plane) and returns its path.
func agentKubeconfig(t *testing.T) string {
	t.Helper()
	user, err := testEnv.AddUser(envtest.User{Name: "agent-" + strings.ToLower(t.Name()), Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// waitAgents waits until the named agents registered and beat, and
// returns their gateways by name.
func waitAgents(t *testing.T, h *harness, names ...string) map[string]string {
	t.Helper()
	gw := map[string]string{}
	waitFor(t, 60*time.Second, func() bool {
		for _, n := range names {
			var sn SpryNode
			if testClient.Get(h.ctx, client.ObjectKey{Name: n}, &sn) != nil || sn.Status.Heartbeat == nil {
				return false
			}
			gw[n] = sn.Spec.Gateway
		}
		return true
	}, "agents register and beat")
	return gw
}

const lazyApp = `
app: lazy
functions:
  front: {builtin: upper, scale: {min: 0, max: 4, policy: mu, idle: 1s, window: 1s}}
  back:  {builtin: echo,  scale: {min: 0, max: 4, policy: mu, idle: 1s, window: 1s}}
chains:
  lazy: {route: /lazy, steps: [front, back], timeout: 20s}
`

// TestWakeFromZero: a chain whose functions scale to zero everywhere is
// woken by a request at any node's gateway, and that request is answered
// (not 503). Three real agents under the real controller (the manager,
// with its wake watch on heartbeats): the app idles to no instance on any
// node, then a request arrives at e1, then (after it idled to zero again)
// at e2, then at e3.
func TestWakeFromZero(t *testing.T) {
	h := agentHarness(t)
	kubeconfig := agentKubeconfig(t)
	logs := &syncBuffer{}
	h.runManaged(ControllerConfig{Namespace: h.ns, Period: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(os.Stderr, logs), nil))})
	names := []string{"z1", "z2", "z3"}
	for _, n := range names {
		// A lease that outlives a loaded machine's stalls: a node lost
		// for a moment is emptied (its apps gone: 404), which is not
		// what this test is about.
		startAgent(t, h, kubeconfig, n, "--lease", "10s")
	}
	gw := waitAgents(t, h, names...)
	kcl, err := kube.FromKubeconfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := yaml.YAMLToJSON([]byte(lazyApp))
	if err := kcl.Create(h.ctx, kube.AppsPath(h.ns), kube.NewApp(h.ns, "lazy", spec), nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		h.waitZero("lazy", names)
		began := time.Now()
		code, body := post(h.ctx, gw[n], "/lazy", "zzz")
		took := time.Since(began)
		if code != 200 || body != "ZZZ" {
			t.Fatalf("%s at zero answered %d %q after %v", n, code, body, took)
		}
		t.Logf("request at %s, no instance anywhere: answered after %v", n, took.Round(time.Millisecond))
		// Woken by the wake round the waiting request asked for, or by a
		// periodic round that saw it first (TestControllerWakeRound checks
		// the wake round alone).
		t.Logf("wake rounds so far: %d", strings.Count(logs.String(), "msg=wake fn="+h.ns+"/lazy/front"))
		// It scaled up: the next requests are served warm, on any node.
		for _, m := range names {
			if code, body := post(h.ctx, gw[m], "/lazy", "warm"); code != 200 || body != "WARM" {
				t.Fatalf("%s after the wake answered %d %q", m, code, body)
			}
		}
	}
}

// waitZero waits until an app runs on the nodes with no instance placed
// and none running on any of them.
func (h *harness) waitZero(app string, nodes []string) {
	h.t.Helper()
	waitFor(h.t, 60*time.Second, func() bool {
		s := h.status(app)
		if len(s.Functions) == 0 {
			return false
		}
		for _, f := range s.Functions {
			if f.Placed != 0 {
				return false
			}
		}
		for _, n := range nodes {
			var sn SpryNode
			if testClient.Get(h.ctx, client.ObjectKey{Name: n}, &sn) != nil || h.assignedOK(n) != "" {
				return false
			}
			runs := 0 // the node runs the app (its functions in the heartbeat)
			for _, f := range sn.Status.Functions {
				if f.Ready+f.Starting > 0 {
					return false
				}
				if f.App == h.ns+"/"+app {
					runs++
				}
			}
			if runs != len(s.Functions) {
				return false
			}
		}
		return true
	}, app+" scaled to zero on every node")
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
