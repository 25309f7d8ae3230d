package main

// End-to-end tests of wasm: functions: chains that mix them with process
// steps, a runaway guest, a trapping guest, and kill -9 of the sandbox
// host, through the real binary.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func wasmConfig(t *testing.T, extra string) string {
	fn := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "wasmfn")
	return writeConfig(t, fmt.Sprintf(`
app: wasm
functions:
  up: {wasm: %[1]s, instances: 2, env: {MODE: upper}}
  wrap: {wasm: %[1]s, env: {MODE: wrap}}
  rev: {builtin: reverse}
  wrapgo: {go: %[1]s, env: {MODE: wrap}}
chains:
  same: {route: /same, steps: [up, wrapgo], methods: [POST]}
  mixed: {route: /mixed, steps: [up, rev, wrap], methods: [POST]}
  pure: {route: /pure, steps: [up, wrap], methods: [POST]}
  up: {route: /up, steps: [up], methods: [POST], timeout: 500ms}
  slow: {route: /slow, steps: [up], methods: [POST], timeout: 30s}
%[2]s`, fn, extra))
}

// Wasm steps and a process step in one chain, and wasm steps alone (their
// hops are calls in the sandbox host), under 64 concurrent clients.
func TestWasmChain(t *testing.T) {
	for _, tr := range []string{"uds", "skmsg"} {
		t.Run(tr, func(t *testing.T) {
			if tr == "skmsg" {
				if err := bpfAvailable(); err != nil {
					t.Skip(err)
				}
			}
			n := startNode(t, "--transport", tr, "-f", wasmConfig(t, ""))
			for _, route := range []string{"/mixed", "/pure", "/same"} {
				load(t, n, 64, 500, route, func(i int) (string, []string, func(int, string) error) {
					in := fmt.Sprintf("req %d", i)
					want := "w(" + strings.ToUpper(in) + ")"
					if route == "/mixed" {
						want = "w(" + reverse(strings.ToUpper(in)) + ")"
					}
					return in, nil, func(status int, got string) error {
						if status != 200 || got != want {
							return fmt.Errorf("got %d %q, want 200 %q", status, got, want)
						}
						return nil
					}
				})
			}
			n.waitFreeBuffers("wasm")
			// Every wasm instance is in one host process.
			a := findApp(t, n.mustStatus(), "wasm")
			pids := map[int]bool{}
			for _, name := range []string{"up", "wrap"} {
				for _, in := range findFunction(t, a, name).Instances {
					if in.State != "ready" || in.PID == 0 {
						t.Errorf("%s instance %+v", name, in)
					}
					pids[in.PID] = true
				}
			}
			if len(pids) != 1 {
				t.Errorf("wasm instances in %d processes, want 1 sandbox host", len(pids))
			}
			// Prometheus counts them like any other instances.
			n.wantMetrics(
				`spry_function_requests_total{app="wasm",function="up"} 1500`,
				`spry_function_requests_total{app="wasm",function="wrap"} 1000`,
				`spry_function_instances{app="wasm",function="up",state="ready"} 2`,
				`spry_function_inflight_requests{app="wasm",function="wrap"} 0`,
			)
		})
	}
}

// A runaway guest is stopped at its chain's deadline (504) while the host
// serves others; a trapping one answers 502; kill -9 of the sandbox host
// answers what it held 502, and the host and its instances come back.
func TestWasmFailures(t *testing.T) {
	n := startNode(t, "--transport", "uds", "-f", wasmConfig(t, "  slowwrap: {route: /slowwrap, steps: [wrap], methods: [POST], timeout: 30s}\n"))
	c := client(8)

	// The runaway's 504 can only be its chain's deadline (500 ms; the
	// client waits 30 s): that it was stopped, not just answered, shows
	// in its instance's replacement below.
	runaway := make(chan int, 1)
	go func() {
		s, _, _ := n.post(c, "/up?do=spin", "x")
		runaway <- s
	}()
	time.Sleep(50 * time.Millisecond)
	for range 20 {
		if s, b, err := n.post(c, "/pure", "meanwhile"); err != nil || s != 200 || b != "w(MEANWHILE)" {
			t.Fatalf("while a guest spins: %d %q %v", s, b, err)
		}
	}
	if s := <-runaway; s != 504 {
		t.Errorf("runaway guest: %d, want 504", s)
	}
	if s, b, err := n.post(c, "/up?do=oob", "x"); err != nil || s != 502 || !strings.Contains(b, "out of bounds") {
		t.Errorf("out-of-bounds guest: %d %q %v, want 502", s, b, err)
	}
	// The host reports each replacement on its control socket, which may
	// trail the answer (by seconds on a saturated machine).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		restarts := 0
		for _, in := range findFunction(t, findApp(t, n.mustStatus(), "wasm"), "up").Instances {
			restarts += in.Restarts
		}
		if restarts >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d restarts of up's instances, want 2 (the runaway and the trap)", restarts)
		}
	}

	// kill -9 of the host with requests running in it: one in up, one in
	// wrap. (Two to up may both go to one instance, the second queued
	// behind the first: the balancer weighs up's instances by their
	// measured speed, which the runaway made unequal once a control
	// period passed. A queued one is not the host's yet: it goes on to
	// the new host and spins to its deadline, 504.)
	host := findFunction(t, findApp(t, n.mustStatus(), "wasm"), "up").Instances[0].PID
	results := make(chan int, 2)
	for _, route := range []string{"/slow?do=spin", "/slowwrap?do=spin"} {
		go func() {
			s, _, _ := n.post(c, route, "x")
			results <- s
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		inflight := 0
		for _, name := range []string{"up", "wrap"} {
			for _, in := range findFunction(t, findApp(t, n.mustStatus(), "wasm"), name).Instances {
				inflight += int(in.Inflight)
			}
		}
		if inflight == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the requests did not reach the host")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Kill(host, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if s := <-results; s != 502 {
			t.Errorf("a request in the killed host: %d, want 502", s)
		}
	}
	// A new host loads its functions again (a compile, when its cache
	// misses): its own bound, not what the requests above left of one.
	deadline = time.Now().Add(60 * time.Second)
	for {
		ok := true
		for _, name := range []string{"up", "wrap"} {
			for _, in := range findFunction(t, findApp(t, n.mustStatus(), "wasm"), name).Instances {
				ok = ok && in.State == "ready" && in.PID != host && in.PID != 0
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host did not come back:\n%s", n.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s, b, err := n.post(c, "/mixed", "back"); err != nil || s != 200 || b != "w(KCAB)" {
		t.Errorf("after the host restarted: %d %q %v", s, b, err)
	}
	n.waitFreeBuffers("wasm")
}

// spry new wasm scaffolds a function that runs as it is; the same source
// as a go: function answers the same.
func TestNewWasm(t *testing.T) {
	dir := openDir(t)
	cmd := exec.Command(spryBin, "new", "wasm", "hello", "--spry-src", repoRoot(t))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "spry up -f spry.yaml") {
		t.Fatalf("spry new wasm: %v\n%s", err, out)
	}
	tidy := exec.Command("go", "mod", "tidy")
	tidy.Dir = filepath.Join(dir, "hello")
	if out, err := tidy.CombinedOutput(); err != nil {
		t.Fatalf("go mod tidy: %v\n%s", err, out)
	}
	y, err := os.ReadFile(filepath.Join(dir, "spry.yaml"))
	if err != nil || !strings.Contains(string(y), "wasm: ./hello") {
		t.Fatalf("spry.yaml: %v\n%s", err, y)
	}
	// The same package as a process too.
	y = []byte(strings.Replace(string(y), "functions:\n", "functions:\n  hellogo: {go: ./hello}\n", 1) +
		"  hellogo: {route: /hellogo, steps: [hellogo], methods: [POST]}\n")
	if err := os.WriteFile(filepath.Join(dir, "spry.yaml"), y, 0o644); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, "--transport", "uds", "-f", filepath.Join(dir, "spry.yaml"))
	c := client(1)
	for _, route := range []string{"/hello", "/hellogo"} {
		if s, b, err := n.post(c, route, "spry"); err != nil || s != 200 || b != "Hello, SPRY!" {
			t.Errorf("%s: %d %q %v\n%s", route, s, b, err, y)
		}
	}
}

// A Go function calls wasm functions (their answers come back through the
// sandbox host to the caller), a wasm step takes a line's hop after a
// process step, and a payload larger than a wasm guest's input window (one
// pool buffer) is refused 413 with nothing left allocated.
func TestWasmCallsAndLargePayloads(t *testing.T) {
	wfn := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "wasmfn")
	gfn := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "graphfn")
	cfg := writeConfig(t, fmt.Sprintf(`
app: wasm
pool: {memory: 256MiB, bufferSize: 64KiB}
limits: {maxBody: 8MiB}
functions:
  up: {wasm: %[1]s, env: {MODE: upper}}
  wrap: {wasm: %[1]s, env: {MODE: wrap}}
  front: {go: %[2]s}
  pass: {go: %[2]s}
chains:
  front: {route: /front, steps: [front], methods: [POST]}
  big: {route: /big, steps: [pass, up], methods: [POST]}
`, wfn, gfn))
	n := startNode(t, "--transport", "uds", "-f", cfg)
	c := client(8)
	if s, b, err := n.post(c, "/front", "up,wrap\nhello"); err != nil || s != 200 || b != "HELLO|w(hello)" {
		t.Errorf("calls to wasm functions: %d %q %v", s, b, err)
	}
	if s, b, err := n.post(c, "/big", "small"); err != nil || s != 200 || b != "SMALL" {
		t.Errorf("a small payload: %d %q %v", s, b, err)
	}
	large := strings.Repeat("x", 1<<20)
	s, b, err := n.post(c, "/big", large)
	if err != nil || s != 413 || !strings.Contains(b, "larger than wasm function up's input window") {
		t.Errorf("a 1 MiB payload to a wasm step: %d %.200q %v, want 413", s, b, err)
	}
	n.waitFreeBuffers("wasm")
	if u := findApp(t, n.mustStatus(), "wasm").Pool.ExtentUsed; u != 0 {
		t.Errorf("%d bytes of extents still used", u)
	}
}

// Apps never share a sandbox host: two apps with wasm functions on one
// node get a host each, under each app's own uid (as root).
func TestWasmAppsNeverShareAHost(t *testing.T) {
	fn := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "wasmfn")
	other := writeConfig(t, fmt.Sprintf(`
app: other
functions:
  up: {wasm: %s, env: {MODE: upper}}
chains:
  oup: {route: /oup, steps: [up], methods: [POST]}
`, fn))
	n := startNode(t, "--transport", "uds", "-f", wasmConfig(t, ""), "-f", other)
	c := client(2)
	for route, want := range map[string]string{"/pure": "w(ONE)", "/oup": "ONE"} {
		if s, b, err := n.post(c, route, "one"); err != nil || s != 200 || b != want {
			t.Fatalf("%s: %d %q %v, want 200 %q", route, s, b, err, want)
		}
	}
	st := n.mustStatus()
	hosts := map[string]int{}
	for _, app := range []string{"wasm", "other"} {
		for _, in := range findFunction(t, findApp(t, st, app), "up").Instances {
			hosts[app] = in.PID
		}
	}
	if hosts["wasm"] == 0 || hosts["other"] == 0 || hosts["wasm"] == hosts["other"] {
		t.Fatalf("sandbox hosts by app: %v, want one each", hosts)
	}
	if os.Geteuid() != 0 {
		return // without root every app runs as the node's own user
	}
	uid := func(pid int) string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
				return f[1]
			}
		}
		t.Fatalf("no Uid in /proc/%d/status", pid)
		return ""
	}
	if a, b := uid(hosts["wasm"]), uid(hosts["other"]); a == b || a == "0" || b == "0" {
		t.Errorf("sandbox hosts run as uids %s and %s, want each app's own", a, b)
	}
}

// The autoscaler treats wasm instances like any other: a burst scales a
// wasm function up (new instances in the same sandbox host), idleness
// down, and every request is answered meanwhile.
func TestWasmScales(t *testing.T) {
	fn := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "wasmfn")
	cfg := writeConfig(t, fmt.Sprintf(`
app: elastic
limits: {inflight: 256}
functions:
  work:
    wasm: %s
    env: {MODE: upper}
    grants: [clock]
    scale: {min: 1, max: 3, slo: 60ms, window: 1s}
chains:
  work: {route: /work, steps: [work], methods: [POST], timeout: 20s}
`, fn))
	n := startNode(t, "--transport", "uds", "-f", cfg)
	n.waitInstances("elastic", "work", 1, 10*time.Second)
	// 12 clients of 20 ms steps on instances that run one at a time.
	b := n.burst(12, "/work?do=nap", strings.ToUpper)
	began := time.Now()
	n.waitInstances("elastic", "work", 3, 20*time.Second)
	t.Logf("up after %v", time.Since(began))
	pids := map[int]bool{}
	for _, in := range findFunction(t, findApp(t, n.mustStatus(), "elastic"), "work").Instances {
		pids[in.PID] = true
	}
	b.stop()
	// Idle: it scales down, draining an instance and stopping it in the
	// host (to min in steps: at load 40 it once held 2 for 20 s).
	began = time.Now()
	for deadline := time.Now().Add(30 * time.Second); ready(findFunction(t, findApp(t, n.mustStatus(), "elastic"), "work")) >= 3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still 3 ready instances 30 s after the burst\n%s", n.logs())
		}
	}
	t.Logf("down after %v", time.Since(began))
	b.check()
	if len(pids) != 1 {
		t.Errorf("the scaled instances in %d processes, want the one sandbox host", len(pids))
	}
	n.waitFreeBuffers("elastic")
}

// A wasm function at zero: the request that wakes it is sent as soon as
// the node has claimed a slot for it (the host starts the instance at that
// request, without a start command first), and it is served; again after
// each return to zero, always in the one sandbox host, and nothing leaks.
func TestWasmScalesFromZero(t *testing.T) {
	fn := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "wasmfn")
	cfg := writeConfig(t, fmt.Sprintf(`
app: zero
functions:
  up:
    wasm: %s
    env: {MODE: upper}
    scale: {min: 0, max: 1, idle: 1s, window: 1s}
chains:
  up: {route: /up, steps: [up], methods: [POST], timeout: 20s}
`, fn))
	n := startNode(t, "--transport", "uds", "-f", cfg)
	c := client(1)
	pids := map[int]bool{}
	for i := range 3 {
		n.waitInstances("zero", "up", 0, 20*time.Second)
		body := fmt.Sprintf("cold %d", i)
		if s, b, err := n.post(c, "/up", body); err != nil || s != 200 || b != strings.ToUpper(body) {
			t.Fatalf("cold start %d: %d %q %v\n%s", i, s, b, err, n.logs())
		}
		// The start the request did not wait for is confirmed.
		n.waitInstances("zero", "up", 1, 10*time.Second)
		for _, in := range findFunction(t, findApp(t, n.mustStatus(), "zero"), "up").Instances {
			if in.PID > 0 {
				pids[in.PID] = true
			}
		}
		for range 3 {
			if s, b, err := n.post(c, "/up", "warm"); err != nil || s != 200 || b != "WARM" {
				t.Fatalf("after cold start %d: %d %q %v", i, s, b, err)
			}
		}
	}
	if len(pids) != 1 {
		t.Errorf("the instances ran in %d processes, want the one sandbox host: %v", len(pids), pids)
	}
	n.waitFreeBuffers("zero")
}
