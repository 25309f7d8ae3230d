package controller

import (
	"bufio"
	"context"
	"io"
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

func startAgent(t *testing.T, h *harness, kubeconfig, name string) *agentProc {
	t.Helper()
	bin, err := spryBin()
	if err != nil {
		t.Fatalf("build spry: %v", err)
	}
	a := &agentProc{exit: make(chan error, 1)}
	a.cmd = exec.Command(bin, "up", "--cluster", "--node-name", name, "--namespace", h.ns, "--kubeconfig", kubeconfig,
		"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--heartbeat", "300ms", "--lease", "2s",
		"--capacity-cpu", "4000", "--capacity-memory", "8GiB", "--data-dir", t.TempDir())
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
	})
	h.nodes = append(h.nodes, name)
	return a
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
	h := newHarness(t)
	user, err := testEnv.AddUser(envtest.User{Name: "agent", Groups: []string{"system:masters"}}, nil)
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

	ctl, err := NewController(testClient, ControllerConfig{Namespace: h.ns, Period: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = ctl.Run(cctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })

	a1 := startAgent(t, h, kubeconfig, "e1")
	startAgent(t, h, kubeconfig, "e2")
	gw := map[string]string{}
	waitFor(t, 60*time.Second, func() bool {
		for _, n := range []string{"e1", "e2"} {
			var sn SpryNode
			if testClient.Get(h.ctx, client.ObjectKey{Name: n}, &sn) != nil || sn.Status.Heartbeat == nil {
				return false
			}
			gw[n] = sn.Spec.Gateway
		}
		return true
	}, "both agents register and beat")

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
