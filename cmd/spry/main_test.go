package main

// End-to-end tests: they build the real spry binary, start nodes with it
// (`spry up`), and drive them over HTTP and the admin API like a user does.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/bpf"
	"github.com/spry-dev/spry/internal/bpf/bpftest"
	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/node"
)

var spryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spry-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Instances of other uids run a staged copy, so the binary's directory
	// needs no special permissions.
	spryBin = filepath.Join(dir, "spry")
	var tags []string
	if crash.Enabled {
		tags = []string{"-tags", "spry_crash"} // the crash-point walk (crash_test.go)
	}
	out, err := exec.Command("go", append(append([]string{"build", "-o", spryBin}, tags...), ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build spry: %v\n%s", err, out)
		os.Exit(1)
	}
	// The builtin runner beside it, as an install has it.
	out, err = exec.Command("go", append(append([]string{"build", "-o", filepath.Join(dir, "spry-fn")}, tags...), "../spry-fn")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build spry-fn: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// eachTransport runs test once per transport, as a subtest named after it.
// skmsg needs eBPF: without it the subtest skips with the reason, or fails
// when SPRY_REQUIRE_BPF=1.
func eachTransport(t *testing.T, test func(t *testing.T, transport string)) {
	for _, tr := range []string{"uds", "skmsg", "adaptive", "poll"} {
		t.Run(tr, func(t *testing.T) {
			if tr == "skmsg" {
				if err := bpfAvailable(); err != nil {
					bpftest.Unavailable(t, err)
				}
			}
			test(t, tr)
		})
	}
}

var bpfAvailable = sync.OnceValue(func() error {
	sm, err := bpf.New()
	if err == nil {
		sm.Close()
	}
	return err
})

// spryNode is a `spry up` process under test.
type spryNode struct {
	t     testing.TB
	cmd   *exec.Cmd
	http  string // gateway address
	admin string
	mu    sync.Mutex
	log   bytes.Buffer
	exit  chan error
}

var upLine = regexp.MustCompile(`msg="spry is up" http=(\S+) admin=(\S+)`)

// startNode runs `spry up` with args (plus loopback listeners on free
// ports) and waits until it is serving. The node is stopped, and checked
// for leftovers, when the test ends.
func startNode(t testing.TB, args ...string) *spryNode {
	t.Helper()
	return startNodeWithin(t, 90*time.Second, args...)
}

// startNodeWithin is startNode for a node whose start does more than
// start processes (pip installing a virtualenv, say), with its own bound.
func startNodeWithin(t testing.TB, within time.Duration, args ...string) *spryNode {
	t.Helper()
	args = append([]string{"up", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, args...)
	if !slices.Contains(args, "--data-dir") {
		// Each node its own activation store (the default one is shared
		// by the machine, and one node at a time may use it).
		args = append(args, "--data-dir", t.TempDir())
	}
	n := &spryNode{t: t, exit: make(chan error, 1)}
	n.cmd = exec.Command(spryBin, args...)
	n.cmd.Dir = repoRoot(t)
	pr, pw := io.Pipe()
	n.cmd.Stderr = pw
	n.cmd.Stdout = pw
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			n.log.WriteString(line + "\n")
			n.mu.Unlock()
			if m := upLine.FindStringSubmatch(line); m != nil {
				up <- m
			}
		}
	}()
	go func() {
		n.exit <- n.cmd.Wait()
		pw.Close()
	}()
	select {
	case m := <-up:
		n.http, n.admin = m[1], m[2]
	case err := <-n.exit:
		t.Fatalf("spry up exited before serving: %v\n%s", err, n.logs())
	case <-time.After(within):
		n.cmd.Process.Kill()
		t.Fatalf("spry up did not come up in %v\n%s", within, n.logs())
	}
	t.Cleanup(n.stop)
	return n
}

func (n *spryNode) logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.String()
}

// stop sends SIGTERM and checks that the node leaves nothing behind: no
// instance process, no runtime directory.
func (n *spryNode) stop() {
	t := n.t
	if n.cmd.ProcessState != nil {
		return
	}
	var pids []int
	var runDir string
	if s, err := n.status(); err == nil {
		for _, a := range s.Apps {
			for _, f := range a.Functions {
				for _, in := range f.Instances {
					if in.PID > 0 {
						pids = append(pids, in.PID)
					}
				}
			}
		}
		runDir = s.Node.RuntimeDir
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.exit:
		if err != nil {
			t.Errorf("spry up exited with %v after SIGTERM\n%s", err, n.logs())
		}
	case <-time.After(30 * time.Second):
		n.cmd.Process.Kill()
		t.Errorf("spry up did not stop within 30s of SIGTERM\n%s", n.logs())
		return
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("instance process %d outlived the node", pid)
		}
	}
	if runDir != "" {
		if _, err := os.Stat(runDir); !os.IsNotExist(err) {
			t.Errorf("runtime directory %s left behind (stat: %v)", runDir, err)
		}
	}
}

// fds counts the daemon's open file descriptors.
func (n *spryNode) fds() int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", n.cmd.Process.Pid))
	if err != nil {
		n.t.Fatal(err)
	}
	return len(ents)
}

// fdTargets lists what the daemon's open fds point at (socket:[…],
// anon_inode:[eventpoll], a file's path), to say which ones leaked.
func (n *spryNode) fdTargets() map[string]string {
	dir := fmt.Sprintf("/proc/%d/fd", n.cmd.Process.Pid)
	ents, _ := os.ReadDir(dir)
	m := make(map[string]string, len(ents))
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil {
			m[e.Name()] = l
		}
	}
	return m
}

// processAlive reports whether pid runs (a zombie does not count).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func repoRoot(t testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "..", "..")
}

// adminClient does not keep connections open, so the daemon's fd count
// is not the test's doing.
var adminClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (n *spryNode) status() (*node.Status, error) {
	resp, err := adminClient.Get("http://" + n.admin + "/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s node.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

func (n *spryNode) mustStatus() *node.Status {
	n.t.Helper()
	s, err := n.status()
	if err != nil {
		n.t.Fatalf("status: %v\n%s", err, n.logs())
	}
	return s
}

// wantMetrics fails the test for each of the lines that the node's
// /metrics lacks.
func (n *spryNode) wantMetrics(lines ...string) {
	n.t.Helper()
	resp, err := adminClient.Get("http://" + n.admin + "/metrics")
	if err != nil {
		n.t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range lines {
		if !strings.Contains(string(m), want) {
			n.t.Errorf("/metrics lacks %s", want)
		}
	}
}

// waitFreeBuffers waits until app's pool has every buffer back, and fails
// the test if that does not happen in time (a leak).
func (n *spryNode) waitFreeBuffers(app string) {
	n.t.Helper()
	n.waitFreeBuffersWithin(app, 10*time.Second)
}

// waitFreeBuffersWithin is waitFreeBuffers with its own bound.
func (n *spryNode) waitFreeBuffersWithin(app string, within time.Duration) {
	n.t.Helper()
	deadline := time.Now().Add(within)
	for {
		a := findApp(n.t, n.mustStatus(), app)
		if a.Pool.Free == int(a.Pool.Buffers) && a.Requests.Inflight == 0 && a.Pool.ExtentUsed == 0 {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("app %s: %d of %d buffers free, %d requests in flight, %v after the load ended: leaked",
				app, a.Pool.Free, a.Pool.Buffers, a.Requests.Inflight, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func findApp(t testing.TB, s *node.Status, name string) *node.AppStatus {
	t.Helper()
	for i := range s.Apps {
		if s.Apps[i].Name == name {
			return &s.Apps[i]
		}
	}
	t.Fatalf("no app %q in status", name)
	return nil
}

func findFunction(t testing.TB, a *node.AppStatus, name string) *node.FunctionStatus {
	t.Helper()
	for i := range a.Functions {
		if a.Functions[i].Name == name {
			return &a.Functions[i]
		}
	}
	t.Fatalf("no function %q in app %s", name, a.Name)
	return nil
}

// client returns an HTTP client with keep-alive connections for conns
// concurrent users.
func client(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
	}
}

// post sends body to route and returns the status and response body.
func (n *spryNode) post(c *http.Client, route, body string, hdr ...string) (int, string, error) {
	req, err := http.NewRequestWithContext(context.Background(), "POST", "http://"+n.http+route, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// writeConfig writes a spry.yaml into a new directory and returns its path.
func writeConfig(t testing.TB, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spry.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
