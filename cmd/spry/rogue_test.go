package main

import (
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Issue 17's defects, driven from outside: through the node, its gateway,
// its transports and real instance processes, a function that misbehaves
// as a broken or hostile one can (testdata/rogue), and kill -9. They use
// only what the node, the SDK and the pool offered before the issue's
// fixes, so the same tests run against the code before them (main at
// a4836e3), where each fails for its defect (see the test's comment).

func rogueDir(t *testing.T) string {
	return filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "rogue")
}

// Defect 3: a step that takes a request past its deadline hands it back
// unrun, and that hand-back could win the completion before the deadline
// timer fired: the client got 200 with its own body. Here requests queue
// behind one another in the first step's one instance, so many reach it
// past the chain's deadline; the answer is upper-cased by the second step,
// and a 200 with the request's own (lower-case) body is the defect. Before
// the fix: 200s with the client's body.
func TestLateHandBackIs504(t *testing.T) {
	cfg := writeConfig(t, `app: late
functions:
  slow: {builtin: sleep}
  upper: {builtin: upper}
chains:
  late: {route: /late, steps: [slow, upper], timeout: 100ms, methods: [POST]}
`)
	n := startNode(t, "-f", cfg)
	c := client(4)
	var ok, late, own atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				body := "w" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
				s, got, err := n.post(c, "/late?ms=60", body)
				switch {
				case err != nil:
					t.Errorf("unanswered: %v", err)
					return
				case s == 200 && got == strings.ToUpper(body):
					ok.Add(1)
				case s == 504:
					late.Add(1)
				case s == 200 && got == body:
					own.Add(1)
				default:
					t.Errorf("%s: %d %q", body, s, got)
				}
			}
		}()
	}
	wg.Wait()
	if own.Load() != 0 {
		t.Errorf("%d requests past their deadline answered 200 with the client's own body, want 504", own.Load())
	}
	if late.Load() == 0 {
		t.Errorf("no request reached the step past its deadline (%d answered in time): the test did not test", ok.Load())
	}
	t.Logf("%d in time, %d answered 504", ok.Load(), late.Load())
	n.waitFreeBuffers("late")
}

// Defect 4: the routing table is in the app's shared memory, and any
// instance can map it read-write and write slot bases out of range; the
// daemon indexed its slots with them and panicked, taking every app of
// the node down. Before the fix: the node dies at the next request.
func TestRoutingTableScribble(t *testing.T) {
	cfg := writeConfig(t, `app: scribbled
functions:
  rogue: {go: `+rogueDir(t)+`}
  upper: {builtin: upper}
chains:
  rogue: {route: /rogue, steps: [rogue], methods: [POST]}
  up: {route: /up, steps: [upper], methods: [POST]}
`)
	by := writeConfig(t, `app: bystander
functions:
  echo: {builtin: echo}
chains:
  by: {route: /by, steps: [echo], methods: [POST]}
`)
	n := startNode(t, "-f", cfg, "-f", by)
	c := client(1)
	if s, got, err := n.post(c, "/rogue", "route"); err != nil || s != 200 || got != "done" {
		t.Fatalf("scribble: %d %q %v", s, got, err)
	}
	// Every request is answered (errors allowed until the table is
	// repaired), the node lives, and the app serves correctly again.
	deadline := time.Now().Add(20 * time.Second)
	for good := 0; good < 20; {
		s, got, err := n.post(c, "/up", "abc")
		if err != nil {
			t.Fatalf("after the scribble: %v\n%s", err, n.logs())
		}
		if s == 200 && got == "ABC" {
			good++
			continue
		}
		good = 0
		if time.Now().After(deadline) {
			t.Fatalf("not repaired: %d %q\n%s", s, got, n.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s, got, err := n.post(c, "/by", "x"); err != nil || s != 200 || got != "x" {
		t.Fatalf("bystander: %d %q %v", s, got, err)
	}
	n.waitFreeBuffers("scribbled")
}

// Defect 5: a step handing its output to the next step that dies after
// the hand-over began and before the descriptor went (the rogue does the
// SDK's forward up to the send and kills itself there). The request is
// answered and its buffer comes back. Before the fix the buffer's owner
// was the next step's live instance, which never got the descriptor: the
// reclaim of the dead sender skipped it, and buffer and request entry were
// lost for good (the client got 504, and the pool never filled again).
// The next step's queue count, taken before the hand-over, stays behind
// too: the node's shutdown must not wait on it (it drains on the
// ownership words; it used to wait out the function's timeout).
func TestDiedHandingOn(t *testing.T) {
	cfg := writeConfig(t, `app: handoff
functions:
  rogue: {go: `+rogueDir(t)+`}
  upper: {builtin: upper}
chains:
  h: {route: /h, steps: [rogue, upper], methods: [POST], timeout: 2s}
`)
	n := startNode(t, "-f", cfg)
	c := client(1)
	for range 3 {
		s, got, err := n.post(c, "/h", "handoff")
		if err != nil || s < 500 {
			t.Fatalf("a request whose step died handing it on: %d %q %v, want an error status", s, got, err)
		}
		t.Logf("answered %d %q", s, got)
	}
	n.waitFreeBuffers("handoff")
	if s, got, err := n.post(c, "/h", "abc"); err != nil || s != 200 || got != "ABC" {
		t.Fatalf("after: %d %q %v", s, got, err)
	}
}

// Defect 7: a descriptor naming a buffer the gateway holds (one it is
// filling, or writing out) passed the gateway's owner-and-generation check
// and was freed as stale under it; two requests then shared a buffer. Here
// an instance forges such replies as fast as it can while clients run:
// every client must get its own answer, and every buffer must come back.
// Before the fix: wrong answers, and a free list that no longer adds up.
func TestForgedReplies(t *testing.T) {
	cfg := writeConfig(t, `app: forged
pool: {buffers: 64}
functions:
  rogue: {go: `+rogueDir(t)+`}
  upper: {builtin: upper}
chains:
  rogue: {route: /rogue, steps: [rogue], methods: [POST], timeout: 10s}
  up: {route: /up, steps: [upper], methods: [POST]}
`)
	n := startNode(t, "--transport", "uds", "-f", cfg)
	c := client(9)
	forging := make(chan struct{})
	go func() {
		defer close(forging)
		if s, got, err := n.post(c, "/rogue", "forge:1500ms"); err != nil || s != 200 || got != "done" {
			t.Errorf("forge: %d %q %v", s, got, err)
		}
	}()
	var answered, wrong atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-forging:
					return
				default:
				}
				body := "w" + strconv.Itoa(w) + "-" + strconv.Itoa(i) + "-" + strings.Repeat("x", rand.IntN(64))
				s, got, err := n.post(c, "/up", body)
				if err != nil {
					t.Errorf("unanswered: %v", err)
					return
				}
				answered.Add(1)
				if s != 200 || got != strings.ToUpper(body) {
					if wrong.Add(1) <= 3 {
						t.Errorf("%s: %d %q", body, s, got)
					}
				}
			}
		}()
	}
	wg.Wait()
	<-forging
	if wrong.Load() > 0 {
		t.Errorf("%d of %d answers were not the request's own", wrong.Load(), answered.Load())
	}
	n.waitFreeBuffers("forged")
	if a := findApp(t, n.mustStatus(), "forged"); a.Pool.Free != int(a.Pool.Buffers) {
		t.Errorf("%d buffers free of %d", a.Pool.Free, a.Pool.Buffers)
	}
}

// Defect 8: requests waiting for an instance (one starting, here one that
// never becomes ready) are retried in the background, and those retries
// outlived the app's pool at shutdown: the node crashed with SIGSEGV in
// Pick. Before the fix: spry up dies of a fault after SIGTERM. And once
// the time to drain is up they are answered 503 at once, not at their
// chain's deadline (the node used to wait for that, whatever
// --drain-timeout said).
func TestShutdownWhileWaiting(t *testing.T) {
	cfg := writeConfig(t, `app: cold
functions:
  stall:
    go: `+rogueDir(t)+`
    instances: 0
    scale: {min: 0, max: 1}
    env: {ROGUE_STALL: "1"}
chains:
  c: {route: /c, steps: [stall], methods: [POST], timeout: 90s}
`)
	// The node waits a second for requests in flight, then stops: these
	// are still waiting.
	n := startNode(t, "--drain-timeout", "1s", "-f", cfg)
	c := client(4)
	var wg sync.WaitGroup
	var answered atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, _, err := n.post(c, "/c", "x"); err == nil && s == 503 {
				answered.Add(1)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // they wait for an instance
	n.cmd.Process.Signal(syscall.SIGTERM)
	stopped := time.Now()
	select {
	case err := <-n.exit:
		n.exit <- err // for the cleanup's check
		if err != nil {
			t.Fatalf("spry up exited with %v after SIGTERM\n%s", err, n.logs())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("spry up did not stop\n%s", n.logs())
	}
	if took := time.Since(stopped); took > 30*time.Second {
		t.Errorf("spry up took %v to stop with --drain-timeout 1s", took)
	}
	wg.Wait()
	if answered.Load() != 4 {
		t.Errorf("%d of 4 waiting requests answered 503", answered.Load())
	}
	if l := n.logs(); strings.Contains(l, "SIGSEGV") || strings.Contains(l, "panic:") || strings.Contains(l, "fatal error") {
		t.Fatalf("crashed at shutdown\n%s", l)
	}
}

// pool.SlotStats.Keeps (state an instance keeps between requests: the FL
// top's jobs) makes the node leave the instance's buffers alone and keeps
// it from being scaled to zero. Any instance can write its own stats slot,
// so the node believes it only of the builtins that keep state: here a
// function that is not one writes it and holds a buffer for good; the
// buffer comes back, and the function still scales to zero. Before the
// fix the buffer stayed held and the instance stayed up.
func TestKeepsBelievedOnlyOfStatefulBuiltins(t *testing.T) {
	cfg := writeConfig(t, `app: keeper
functions:
  rogue:
    go: `+rogueDir(t)+`
    scale: {min: 0, max: 1, slo: 100ms, window: 1s, idle: 1s}
chains:
  k: {route: /k, steps: [rogue], methods: [POST]}
`)
	n := startNode(t, "-f", cfg)
	c := client(1)
	if s, got, err := n.post(c, "/k", "keep"); err != nil || s != 200 || got != "done" {
		t.Fatalf("keep: %d %q %v", s, got, err)
	}
	n.waitInstances("keeper", "rogue", 1, 5*time.Second)
	n.waitFreeBuffersWithin("keeper", 15*time.Second)
	n.waitInstances("keeper", "rogue", 0, 20*time.Second)
}
