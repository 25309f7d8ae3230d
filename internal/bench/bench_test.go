package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spry-dev/spry/bench"
	"github.com/spry-dev/spry/internal/transport"
)

// spryBin is the spry binary the end-to-end tests run (built in TestMain).
var spryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spry-bench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	spryBin = filepath.Join(dir, "spry")
	if out, err := exec.Command("go", "build", "-o", spryBin, "../../cmd/spry").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build spry: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// children lists this process's live child processes.
func children(t *testing.T) []string {
	t.Helper()
	var out []string
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		for _, f := range bytes.Fields(b) {
			if alive(atoi(string(f))) {
				out = append(out, string(f))
			}
		}
	}
	return out
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// Every mode this build offers runs every workload for a moment: every
// answer is checked against the chain run in-process, nothing fails, and
// no process is left behind.
//
// Each mode answers requests of its window, but on a machine shared by
// many busy processes a request may take longer than the whole 600 ms
// window: one answered correctly after it (Overtime) shows the mode works
// as well as one inside it. A mode that hangs fails the requests in flight
// (timeouts count as errors however late), so it cannot pass as slow.
func TestEveryModeEveryWorkload(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	workloads := []struct {
		name  string
		shape bench.Options
		extra []string // modes of variants
	}{
		{"chain", bench.Options{Steps: 3, Payload: 4 << 10}, nil},
		{"boutique", bench.Options{}, []string{transport.Names[0] + "+calls"}},
		{"fanout", bench.Options{Branches: 4, Payload: 2 << 10}, []string{transport.Names[0] + "+seq"}},
		{"motion", bench.Options{Scale: 0.05, BurstEvery: 250 * time.Millisecond, BurstSize: 6}, nil},
		{"parking", bench.Options{Scale: 0.0005, BurstEvery: 250 * time.Millisecond, BurstSize: 3}, nil},
		{"hello", bench.Options{}, nil},
	}
	for _, wl := range workloads {
		modes := ModeNames()
		if wl.name != "chain" {
			// The kinds' modes have the chain workload's step only.
			modes = slices.DeleteFunc(modes, func(m string) bool { return slices.Contains(KindModes, m) })
		}
		if wl.name != "hello" && wl.name != "chain" {
			// The wasm mode builds and loads a module per run: seconds.
			// The demo and the synthetic chain show it runs the same
			// handlers; `spry bench` covers the rest.
			modes = slices.DeleteFunc(modes, func(m string) bool { return m == ModeWasm })
		}
		modes = append(modes, wl.extra...)
		t.Run(wl.name, func(t *testing.T) {
			// On a machine other work shares, a busy-polling mode can be
			// starved for the whole short window: its answers come after
			// it (Overtime; see the comment above), no second run needed.
			rep, err := Run(context.Background(), Options{
				Workload: wl.name, Shape: wl.shape, Modes: modes, Duration: 600 * time.Millisecond,
				Rounds: 1, Connections: 2, Idle: 100 * time.Millisecond, Exe: spryBin, WasmSrc: "../../bench/wasmfn",
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Modes) != len(modes) {
				t.Fatalf("%d mode results for %d modes", len(rep.Modes), len(modes))
			}
			for _, m := range rep.Modes {
				if m.Errors != 0 || m.Requests+m.Overtime == 0 {
					t.Errorf("%s: %d answered (%d after the window), %d errors: %s", m.Mode, m.Requests, m.Overtime, m.Errors, m.FirstError)
				} else if m.Requests == 0 {
					t.Logf("%s: answered only after its window (%d requests): a busy machine", m.Mode, m.Overtime)
				}
				if m.CPUPerReq <= 0 || m.Processes < 2 {
					t.Errorf("%s: CPU %v s/req over %d processes", m.Mode, m.CPUPerReq, m.Processes)
				}
			}
			dir := t.TempDir()
			if err := rep.Write(dir); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"report.json", "report.md", "throughput.png", "cpu.png", "latency_cdf.png", "cpu_timeline.png"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Error(err)
				}
			}
			if left := children(t); len(left) > 0 {
				t.Fatalf("processes left running: %v", left)
			}
		})
	}
}

// A mode the build does not offer is refused by name; the tests above run
// only the modes it does (skmsg, poll, adaptive appear once merged).
func TestModes(t *testing.T) {
	for _, name := range []string{"skmsg", "poll", "adaptive"} {
		_, err := NewMode(name)
		if !slices.Contains(ModeNames(), name) {
			if err == nil {
				t.Errorf("mode %s accepted but not in this build", name)
			}
			t.Logf("mode %s not in this build: skipped", name)
		} else if err != nil {
			t.Errorf("mode %s: %v", name, err)
		}
	}
	if _, err := NewMode("carrier-pigeon"); err == nil {
		t.Error("unknown mode accepted")
	}
}

// The audit's design columns follow from the transfers: SPRIGHT's
// accounting for a two-step chain.
func TestAuditDesign(t *testing.T) {
	c := &bench.Chain{Name: "c", Steps: []string{"a", "b"}}
	cases := []struct {
		mode                       string
		transfers                  int
		copies, proto, ser, deserl int
	}{
		// client→gw, gw→a, a→b, b→gw, gw→client: the two socket copies
		// and one parse/encode at the gateway, nothing inside the chain.
		{"uds", 5, 2, 2, 1, 1},
		// client→fn a, a→b, and back: 1+2+2+1 copies over TCP.
		{"http", 4, 6, 4, 3, 3},
		// as http, plus protobuf encode/decode copies on the a↔b legs.
		{"grpc", 4, 10, 4, 3, 3},
		// client→broker→sidecar→a→broker→sidecar→b, and back: 12 TCP
		// transfers, of which 2 touch the client.
		{"knative", 12, 22, 12, 11, 11},
	}
	for _, tc := range cases {
		m, err := NewMode(tc.mode)
		if err != nil {
			t.Fatal(err)
		}
		path := m.Path(c)
		a := BuildAudit(tc.mode, "c", path, nil, nil, Measured{})
		got := a.Totals
		if len(path) != tc.transfers || got.Copies != tc.copies || got.Proto != tc.proto || got.Ser != tc.ser || got.Deser != tc.deserl {
			t.Errorf("%s: %d transfers, totals %+v; want %d transfers, copies %d proto %d ser %d deser %d",
				tc.mode, len(path), got, tc.transfers, tc.copies, tc.proto, tc.ser, tc.deserl)
		}
		for _, r := range a.Rows {
			if strings.HasPrefix(r.Via, "descriptor") && (r.Copies != 0 || r.Proto != 0 || r.Ser != 0) {
				t.Errorf("%s: a descriptor transfer costs %+v", tc.mode, r)
			}
		}
	}
}

// A fan-out's audit: a descriptor to every branch, from every branch to
// the gateway and one from the gateway to the join on Spry; on the
// baselines, the parallel calls and their answers over TCP. Calls are
// descriptors there and back.
func TestAuditGraph(t *testing.T) {
	c := &bench.Chain{Name: "c", Steps: []string{"s"}, Branches: []string{"a", "b", "c"}, Join: "j"}
	for _, tc := range []struct {
		mode              string
		transfers, copies int
	}{
		{"uds", 2 + 1 + 3*2 + 1 + 1, 2}, // client↔gw, gw→s, s→x→gw, gw→j, j→gw
		{"http", 2 + 4*2, 2 + 4*4},      // client↔s, s↔a, s↔b, s↔c, s↔j
		{"knative", 6 + 4*6, 10 + 4*12}, // every leg through broker and sidecar
	} {
		m, _ := NewMode(tc.mode)
		a := BuildAudit(tc.mode, "c", m.Path(c), nil, nil, Measured{})
		if len(a.Rows) != tc.transfers || a.Totals.Copies != tc.copies {
			t.Errorf("%s: %d transfers, %d copies; want %d, %d", tc.mode, len(a.Rows), a.Totals.Copies, tc.transfers, tc.copies)
		}
		if r := a.Rows[len(a.Rows)-3]; tc.mode == "uds" && (r.From != "gateway" || r.To != "fn:j") {
			t.Errorf("uds: the join's transfer is %s→%s, want gateway→j", r.From, r.To)
		}
	}
	calls := &bench.Chain{Name: "c", Steps: []string{"f"}, Calls: [][2]string{{"f", "a"}, {"f", "b"}, {"b", "c"}}}
	a := BuildAudit("uds", "c", (&spryMode{transport: "uds"}).Path(calls), nil, nil, Measured{})
	if len(a.Rows) != 4+2*3 || a.Totals.Copies != 2 {
		t.Errorf("calls: %d transfers, %d copies; want 10, 2", len(a.Rows), a.Totals.Copies)
	}
}

// spry audit against a running node: every transfer is listed and the
// node's processes are measured.
func TestAuditNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	w, err := bench.New("chain", bench.Options{Steps: 2})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := NewMode(ModeNames()[0])
	dir, err := os.MkdirTemp("", "spry-audit-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // instances run under other uids as root
	sys, err := m.Start(context.Background(), w, Env{Exe: spryBin, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := sys.Stop(); err != nil {
			t.Error(err)
		}
	}()
	var out bytes.Buffer
	a, err := AuditNode(context.Background(), AuditOptions{Admin: sys.(*spryRun).node.admin, Route: "/chain",
		Body: w.Requests[0].Body, Requests: 500, Connections: 2}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Rows) != 5 || a.Totals.Copies != 2 || a.CtxSwPerReq <= 0 {
		t.Fatalf("audit %+v\n%s", a, out.String())
	}
	if os.Geteuid() == 0 && (a.Rows[1].Syscalls == nil || a.Totals.Syscalls == nil) {
		t.Errorf("as root, syscalls are measured:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "gateway") {
		t.Errorf("output:\n%s", out.String())
	}
}

// TestClusterMode: spry bench's cluster modes bring up a local cluster
// (spry-controller local: etcd, kube-apiserver, controller, two agents):
// cluster deploys the chain with its steps on different nodes; spread
// runs the whole chain on each node and sends the load to every gateway.
// Every answer is checked (Run probes each request before measuring).
// Needs the control plane's binaries (deploy/kubernetes/testbin.sh).
func TestClusterMode(t *testing.T) {
	needCluster(t)
	rep, err := Run(context.Background(), Options{
		Workload: "chain", Shape: bench.Options{Steps: 2}, Modes: []string{ModeCluster, ModeSpread}, Nodes: 2,
		Duration: 500 * time.Millisecond, Rounds: 1, Connections: 2, Idle: 100 * time.Millisecond, Exe: spryBin,
	})
	if err != nil {
		t.Fatal(err)
	}
	// As in TestEveryModeEveryWorkload, an answer after the short window
	// (Overtime) shows the mode works as well as one inside it.
	for _, m := range rep.Modes {
		if m.Requests+m.Overtime == 0 || m.Errors != 0 || rep.Config.Nodes != 2 {
			t.Fatalf("mode %s: %d requests (%d after the window), %d errors (%s), %d nodes",
				m.Mode, m.Requests, m.Overtime, m.Errors, m.FirstError, rep.Config.Nodes)
		}
	}
}

// TestRecoveryBench: spry bench recovery kills the agent of the node
// running the chain's last step under load; the step is placed on another
// node, the requests in between fail or wait, and the run says when
// traffic flowed again.
func TestRecoveryBench(t *testing.T) {
	needCluster(t)
	rep, err := RunRecovery(context.Background(), RecoveryOptions{Exe: spryBin, Runs: 1, Rate: 200,
		Before: time.Second, Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Runs[0]
	t.Logf("%+v", r)
	if r.Spare == "" || r.Spare == r.Killed || r.Requests == 0 || r.Failed+r.Slow == 0 || r.RecoveredMillis <= 0 || r.ReplacedMillis <= 0 {
		t.Fatalf("run: %+v", r)
	}
	if rep.RecoveredMillis != r.RecoveredMillis || !strings.Contains(rep.Markdown(), r.Killed) {
		t.Fatalf("report: %+v\n%s", rep, rep.Markdown())
	}
}

// needCluster skips a test without the control plane's binaries (or fails
// with SPRY_REQUIRE_K8S), and builds spry-controller beside spry.
func needCluster(t *testing.T) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if os.Getenv("SPRY_REQUIRE_K8S") != "" {
			t.Fatal("SPRY_REQUIRE_K8S is set but KUBEBUILDER_ASSETS is not (deploy/kubernetes/testbin.sh)")
		}
		t.Skip("KUBEBUILDER_ASSETS not set: no kube-apiserver/etcd to run a local cluster with (deploy/kubernetes/testbin.sh)")
	}
	buildController.Do(func() {
		ctl := filepath.Join(filepath.Dir(spryBin), "spry-controller")
		if out, err := exec.Command("go", "build", "-o", ctl, "../../cmd/spry-controller").CombinedOutput(); err != nil {
			buildControllerErr = fmt.Errorf("build spry-controller: %v\n%s", err, out)
		}
	})
	if buildControllerErr != nil {
		t.Fatal(buildControllerErr)
	}
}

var (
	buildController    sync.Once
	buildControllerErr error
)
