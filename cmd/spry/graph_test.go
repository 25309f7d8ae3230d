package main

import (
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// graphApp is an app of graph chains whose functions are the graphfn test
// program (testdata/graphfn: what each does depends on its name).
func graphApp(t *testing.T, extra string) string {
	fn := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "graphfn")
	return writeConfig(t, strings.ReplaceAll(`
app: graph
pool: {buffers: 1024, bufferSize: 16KiB}
limits: {inflight: 256}
functions:
  pass: {go: FN, concurrency: 4}
  branch-a: {go: FN, concurrency: 4}
  branch-b: {go: FN, concurrency: 4}
  branch-c: {go: FN, concurrency: 4}
  merge: {go: FN, concurrency: 4}
  route: {go: FN}
  upper: {go: FN, concurrency: 4}
chains:
  fan:
    route: /fan
    timeout: 20s
    steps:
      pass: [branch-a, branch-b, branch-c]
      branch-a: merge
      branch-b: merge
      branch-c: merge
      merge: {join: all}
  quorum:
    route: /quorum
    steps:
      first: {function: pass, next: [qa, qb, qc]}
      qa: {function: branch-a, next: qj}
      qb: {function: branch-b, next: qj}
      qc: {function: branch-c, next: qj}
      qj: {function: merge, join: 2}
  wait:
    route: /wait
    steps:
      first: {function: pass, next: [wa, wb]}
      wa: {function: branch-a, next: wj}
      wb: {function: branch-b, next: wj}
      wj: {function: merge, join: all, wait: 1s} # the fast branch comes well within it, even at load
  route:
    route: /route
    steps:
      r: {function: route, choose: [up, rest]}
      up: {function: upper}
      rest: {function: pass}
`+extra, "FN", fn))
}

// branchOut is what branch step s of graphfn answers for body.
func branchOut(s, body string) string {
	return fmt.Sprintf("%s:%d:%08x", s, len(body), crc32.ChecksumIEEE([]byte(body)))
}

// Fan-out of one payload to three branches and their join, under 64
// concurrent clients: every answer right, every buffer back, none freed
// twice (the free list stays sound: the node never has to rebuild it).
func TestFanOutJoin(t *testing.T) {
	n := startNode(t, "-f", graphApp(t, ""))
	c := client(64)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				body := fmt.Sprintf("client %d request %d %s", g, i, strings.Repeat("x", g*37+i))
				s, got, err := n.post(c, "/fan", body)
				want := branchOut("branch-a", body) + "|" + branchOut("branch-b", body) + "|" + branchOut("branch-c", body)
				if err != nil || s != 200 || got != want {
					errs <- fmt.Errorf("client %d: %d %q %v, want %q", g, s, got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n.waitFreeBuffers("graph")
	if strings.Contains(n.logs(), "rebuilt the pool") || strings.Contains(n.logs(), "gave back") {
		t.Fatalf("the pool needed repairs:\n%s", n.logs())
	}
}

// A join of 2 of 3 runs once two branches succeeded; the late one is
// dropped. A join with a wait runs with what arrived. A failed branch is a
// failed input the join sees.
func TestJoinQuorumWaitAndFailure(t *testing.T) {
	n := startNode(t, "-f", graphApp(t, ""))
	c := client(4)
	body := "sleep-qc\nquorum"
	s, got, err := n.post(c, "/quorum", body)
	// "-" for qc: the join ran before the slow branch ended (a join that
	// waited for it would show its output), whatever the machine's load.
	if want := branchOut("qa", body) + "|" + branchOut("qb", body) + "|-"; err != nil || s != 200 || got != want {
		t.Fatalf("quorum: %d %q %v, want %q", s, got, err, want)
	}
	body = "sleep-wb\nwait"
	s, got, err = n.post(c, "/wait", body)
	if want := branchOut("wa", body) + "|-"; err != nil || s != 200 || got != want {
		t.Fatalf("wait: %d %q %v, want %q", s, got, err, want)
	}
	body = "fail-branch-b\nfailing"
	s, got, err = n.post(c, "/fan", body)
	if want := branchOut("branch-a", body) + "|409 branch-b failed|" + branchOut("branch-c", body); err != nil || s != 200 || got != want {
		t.Fatalf("failed branch: %d %q %v, want %q", s, got, err, want)
	}
	// The slow branches end (2 s, more at load): their outputs come late
	// and are dropped, their buffers come back.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if findApp(t, n.mustStatus(), "graph").Requests.LateInputs >= 2 || time.Now().After(deadline) {
			break
		}
	}
	n.waitFreeBuffers("graph")
	if a := findApp(t, n.mustStatus(), "graph"); a.Requests.LateInputs != 2 {
		t.Errorf("late inputs %d, want 2 (the quorum's and the wait's slow branches)", a.Requests.LateInputs)
	}
}

// kill -9 of a branch's instance while it runs: its join gets a failed
// input (the rest of the request goes on), nothing leaks, and the instance
// comes back.
func TestBranchKilled(t *testing.T) {
	n := startNode(t, "-f", graphApp(t, ""))
	c := client(4)
	victim := findFunction(t, findApp(t, n.mustStatus(), "graph"), "branch-b").Instances[0]
	type result struct {
		s    int
		body string
		err  error
	}
	res := make(chan result, 4)
	for i := range 4 {
		go func() {
			s, b, err := n.post(c, "/fan", "sleep-branch-b\nkill "+strconv.Itoa(i))
			res <- result{s, b, err}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for findFunction(t, findApp(t, n.mustStatus(), "graph"), "branch-b").Instances[0].Inflight < 4 {
		if time.Now().After(deadline) {
			t.Fatal("the requests did not reach branch-b")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		r := <-res
		parts := strings.Split(r.body, "|")
		if r.err != nil || r.s != 200 || len(parts) != 3 || !strings.HasPrefix(parts[1], "502 ") || !strings.Contains(parts[1], "instance") {
			t.Errorf("request with a killed branch: %d %q %v, want the join with a 502 input", r.s, r.body, r.err)
		}
	}
	n.waitFreeBuffers("graph")
	for i := range 10 {
		body := "after " + strconv.Itoa(i)
		if s, got, err := n.post(c, "/fan", body); err != nil || s != 200 || !strings.Contains(got, branchOut("branch-b", body)) {
			t.Fatalf("after the restart: %d %q %v", s, got, err)
		}
	}
}

// A handler picks the next step by name; a name the graph does not allow
// is a 502 that names the step; stopping ends the chain early.
func TestDynamicRouting(t *testing.T) {
	n := startNode(t, "-f", graphApp(t, ""))
	c := client(1)
	for _, tc := range []struct {
		body string
		s    int
		want string
	}{
		{"up\nhello", 200, "UP\nHELLO"},
		{"rest\nhello", 200, "rest\nhello"},
		{"stop\nhello", 200, "stop\nhello"},
		{"fraud-check\nhello", 502, `spry: step r chose next step "fraud-check", which its chain does not allow (it goes on to up, rest)`},
	} {
		s, got, err := n.post(c, "/route", tc.body)
		if err != nil || s != tc.s || got != tc.want {
			t.Errorf("%q: %d %q %v, want %d %q", tc.body, s, got, err, tc.s, tc.want)
		}
	}
	n.waitFreeBuffers("graph")
}

func callApp(t *testing.T) string {
	fn := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "graphfn")
	return writeConfig(t, strings.ReplaceAll(`
app: calls
functions:
  front: {go: FN}
  front-many: {go: FN, concurrency: 4}
  upper: {go: FN, concurrency: 4}
  slow: {go: FN, concurrency: 4}
  crash: {go: FN}
  cyc-a: {go: FN}
  cyc-b: {go: FN}
chains:
  front: {route: /front, steps: [front], timeout: 10s}
  front4: {route: /front4, steps: [front-many], timeout: 10s}
`, "FN", fn))
}

// Calls from a handler: several at once, nested, a cycle A → B → A served
// by instances of concurrency 1 that wait for each other, one that never
// ends (508), a callee that crashes, a caller killed while its callees run.
func TestCalls(t *testing.T) {
	n := startNode(t, "-f", callApp(t))
	c := client(4)
	for _, tc := range []struct {
		route, body string
		s           int
		want        string
	}{
		{"/front", "upper,upper,upper\nabc", 200, "ABC|ABC|ABC"},
		{"/front4", "upper,upper\nxyz", 200, "XYZ|XYZ"},
		{"/front", "cyc-a\ncyc-b\ncyc-a\n", 200, "cyc-a<cyc-b<done"},
		{"/front", "cyc-a\n" + strings.Repeat("cyc-b\ncyc-a\n", 20), 200, "ERR 508 "},
		{"/front", "crash,upper\nx", 200, "ERR 502 "},
		{"/front", "nosuch\nx", 200, `ERR 502 sdk: call to "nosuch": no function of that name in this app`},
	} {
		s, got, err := n.post(c, tc.route, tc.body)
		if err != nil || s != tc.s || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s %q: %d %q %v, want %d %q…", tc.route, tc.body, s, got, err, tc.s, tc.want)
		}
		if strings.HasPrefix(tc.body, "crash") && !strings.HasSuffix(got, "|X") {
			t.Errorf("the call beside the crashed one: %q", got)
		}
	}

	// The caller dies while its callees run: the client gets 502; their
	// answers, when they come, are dropped and freed.
	victim := findFunction(t, findApp(t, n.mustStatus(), "calls"), "front-many").Instances[0]
	done := make(chan int, 2)
	for range 2 {
		go func() {
			s, _, _ := n.post(c, "/front4", "slow,slow\nx")
			done <- s
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for findFunction(t, findApp(t, n.mustStatus(), "calls"), "slow").Instances[0].Inflight < 4 {
		if time.Now().After(deadline) {
			t.Fatal("the calls did not reach slow")
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(victim.PID, syscall.SIGKILL)
	for range 2 {
		if s := <-done; s != 502 {
			t.Errorf("the killed caller's request: %d, want 502", s)
		}
	}
	time.Sleep(1200 * time.Millisecond) // the callees answer the dead caller
	n.waitFreeBuffers("calls")
	if s, got, err := n.post(c, "/front4", "upper\nagain"); err != nil || s != 200 || got != "AGAIN" {
		t.Fatalf("after the caller's restart: %d %q %v", s, got, err)
	}
}

// The builtins that change their input in place (upper, reverse) leave a
// fan-out's shared input alone: a branch writes into a fresh buffer, so its
// siblings and the join still see what the step before them sent.
func TestInPlaceBuiltinsInBranches(t *testing.T) {
	cfg := writeConfig(t, `
app: branches
functions:
  e: {builtin: echo}
  u: {builtin: upper}
  r: {builtin: reverse}
  j: {builtin: concat}
chains:
  x:
    route: /x
    steps:
      e: [u, r, j]
      u: j
      r: j
      j: {join: all}
`)
	n := startNode(t, "-f", cfg)
	c := client(4)
	for i := range 50 {
		body := fmt.Sprintf("hello %d", i)
		s, got, err := n.post(c, "/x", body)
		pieces := []string{body, strings.ToUpper(body), reverse(body)}
		ok := err == nil && s == 200 && len(got) == 3*len(body)
		for _, p := range pieces {
			ok = ok && strings.Contains(got, p)
		}
		if !ok {
			t.Fatalf("%q: %d %q %v, want the concatenation of %q in some order", body, s, got, err, pieces)
		}
	}
	n.waitFreeBuffers("branches")
}
