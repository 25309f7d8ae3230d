//go:build spry_crash

package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/activation"
	"github.com/spry-dev/spry/internal/bpf/bpftest"
	"github.com/spry-dev/spry/internal/crash"
)

// The crash-point walk at the node (issue 17): for every transport and
// every named point an instance passes (receive, accept, transfer, send,
// the rings' and skmsg's own), both steps of a chain are real instance
// processes killed (SIGKILL) at their fifth pass of the point, again after
// every restart, while requests run. Afterwards: every request was answered
// once, with its own body (200) or an error (502, 503, 504); every buffer
// is back; the node is alive and serves.
//
//	go test -tags spry_crash -run CrashPoints ./cmd/spry
func TestCrashPoints(t *testing.T) {
	points := map[string][]string{
		"uds":      {"recv.popped", "recv.accepted", "send.transferred", "send.sent"},
		"skmsg":    {"recv.popped", "recv.accepted", "send.transferred", "send.sent", "skmsg.reserved"},
		"poll":     {"recv.popped", "recv.accepted", "send.transferred", "send.sent", "ring.reserved", "ring.claimed", "ring.published"},
		"adaptive": {"recv.popped", "recv.accepted", "send.transferred", "send.sent", "ring.reserved", "ring.claimed", "ring.published", "ring.sleeping"},
	}
	eachTransport(t, func(t *testing.T, tr string) {
		for _, point := range points[tr] {
			t.Run(point, func(t *testing.T) { crashWalk(t, tr, point) })
		}
	})
}

// The same walk over a fan-out and its join (issue 12): the fan-out step,
// its branches and the join are killed at every point they pass, the
// fan-out's own among them (its tokens made, its output published).
func TestCrashPointsGraph(t *testing.T) {
	points := []string{"recv.popped", "recv.accepted", "send.transferred", "send.sent", "fanout.tokens", "fanout.published"}
	for _, tr := range []string{"uds", "skmsg"} {
		t.Run(tr, func(t *testing.T) {
			if tr == "skmsg" {
				if err := bpfAvailable(); err != nil {
					bpftest.Unavailable(t, err)
				}
			}
			for _, point := range points {
				t.Run(point, func(t *testing.T) { crashWalkGraph(t, tr, point) })
			}
		})
	}
}

func crashWalk(t *testing.T, tr, point string) {
	crashRun(t, tr, point, fmt.Sprintf(`
app: crash
functions:
  a: {builtin: echo, env: {CRASH_POINT: "%[1]s@5"}}
  b: {builtin: echo, env: {CRASH_POINT: "%[1]s@5"}}
chains:
  c: {route: /c, steps: [a, b], timeout: 2s}
`, point), func(body string) string { return body }, "a", "b")
}

func crashWalkGraph(t *testing.T, tr, point string) {
	crashRun(t, tr, point, fmt.Sprintf(`
app: crash
functions:
  a: {builtin: echo, env: {CRASH_POINT: "%[1]s@5"}}
  b: {builtin: echo, instances: 2, env: {CRASH_POINT: "%[1]s@5"}}
  j: {builtin: concat, env: {CRASH_POINT: "%[1]s@5"}}
chains:
  c:
    route: /c
    timeout: 2s
    steps:
      a: [b1, b2, b3]
      b1: {function: b, next: j}
      b2: {function: b, next: j}
      b3: {function: b, next: j}
      j: {join: all}
`, point), func(body string) string { return body + body + body }, "a", "b", "j")
}

// crashRun sends requests to a node running cfg, whose functions fns are
// killed at point, and checks what the walk promises; a request's
// answer when nothing failed is want(body).
func crashRun(t *testing.T, tr, point, cfg string, want func(string) string, fns ...string) {
	cfg = writeConfig(t, cfg)
	n := startNode(t, "--transport", tr, "-f", cfg)
	c := client(4)
	const total = 40
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 4 {
				body := "req-" + strconv.Itoa(i)
				s, got, err := n.post(c, "/c", body)
				mu.Lock()
				codes[s]++
				mu.Unlock()
				switch {
				case err != nil:
					t.Errorf("request %d: %v", i, err)
				case s == 200 && got != want(body):
					t.Errorf("request %d: 200 with %q, want %q", i, got, want(body))
				case s != 200 && s != 502 && s != 503 && s != 504:
					t.Errorf("request %d: %d %q", i, s, got)
				case s != 200 && !strings.HasPrefix(got, "spry"):
					t.Errorf("request %d: %d without spry's message: %q", i, s, got)
				}
			}
		}()
	}
	wg.Wait()
	n.waitFreeBuffers("crash")
	a := findApp(t, n.mustStatus(), "crash")
	restarts := 0
	for _, fn := range fns {
		for _, in := range findFunction(t, a, fn).Instances {
			restarts += in.Restarts
		}
	}
	if restarts == 0 {
		t.Fatalf("no instance died at %s (codes %v)", point, codes)
	}
	// Alive and serving once the instances are back.
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, got, err := n.post(c, "/c", "after")
		if err == nil && s == 200 && got == want("after") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the crashes: %d %q %v", s, got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s/%s: %v, %d restarts, %d reclaimed", tr, point, codes, restarts, a.Pool.Reclaimed)
}

// The gateway's own crash points (gateway.accepted: a reply taken off the
// app's endpoint; gateway.completed: its request completed, not yet
// answered) are in the daemon: dying there is the node dying. The walk
// kills the daemon at its fiftieth pass of each point while synchronous
// and asynchronous requests run, then checks what a node's death may not
// leave behind: no client waits (every request ends, answered or cut off),
// no instance process outlives the daemon, and a node restarted on the
// same data directory runs every asynchronous invocation it had accepted
// (answered 202) to success, serves, and has every buffer of its new pool.
func TestGatewayCrashPoints(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		for _, point := range []string{"gateway.accepted", "gateway.completed"} {
			t.Run(point, func(t *testing.T) { gatewayCrashWalk(t, tr, point) })
		}
	})
}

func gatewayCrashWalk(t *testing.T, tr, point string) {
	cfg := writeConfig(t, `
app: gw
functions:
  echo: {builtin: echo}
  slow: {builtin: sleep}
chains:
  s: {route: /s, steps: [echo], timeout: 5s}
  a: {route: /a, steps: [slow], timeout: 5s, async: {attempts: 3, backoff: 50ms}}
`)
	data := t.TempDir()
	t.Setenv(crash.EnvPoint, point+"@50") // the daemon's; its instances never pass it
	n := startNode(t, "--transport", tr, "--data-dir", data, "-f", cfg)
	os.Unsetenv(crash.EnvPoint) // not for the restarted node
	var pids []int
	for _, f := range findApp(t, n.mustStatus(), "gw").Functions {
		for _, in := range f.Instances {
			pids = append(pids, in.PID)
		}
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var mu sync.Mutex
	var accepted []string
	var wg sync.WaitGroup
	some := make(chan struct{}) // a few asynchronous invocations are in
	var once sync.Once
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w%2 == 0 {
				select {
				case <-some:
				case <-time.After(10 * time.Second):
				}
			}
			for i := 0; ; i++ {
				body := "w" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
				if w%2 == 0 {
					s, got, err := n.post(c, "/s", body)
					if err != nil {
						if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Timeout") {
							t.Errorf("a request waited on the dead node: %v", err)
						}
						return // the node died
					}
					if s != 200 || got != body {
						t.Errorf("%s: %d %q", body, s, got)
					}
					continue
				}
				id, _, err := n.postAsync(c, "/a?ms=5", body)
				if err != nil {
					return
				}
				mu.Lock()
				accepted = append(accepted, id)
				if len(accepted) == 8 {
					once.Do(func() { close(some) })
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-n.exit: // (and the cleanup's stop sees it is gone)
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("the node ended with %v, not killed at %s\n%s", err, point, n.logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the node did not die at %s", point)
	}
	if len(accepted) == 0 {
		t.Fatalf("no asynchronous invocation was accepted before the node died at %s: the walk did not test", point)
	}
	for _, pid := range pids {
		deadline := time.Now().Add(5 * time.Second)
		for processAlive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("instance process %d outlived the node", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	m := startNode(t, "--transport", tr, "--data-dir", data, "-f", cfg)
	for _, id := range accepted {
		if r := m.waitActivation(id, 60*time.Second); r.State != activation.Succeeded {
			t.Errorf("accepted activation %s ended %s: %+v", id, r.State, r)
		}
	}
	if s, got, err := m.post(c, "/s", "after"); err != nil || s != 200 || got != "after" {
		t.Fatalf("the restarted node: %d %q %v", s, got, err)
	}
	m.waitFreeBuffers("gw")
	t.Logf("%s/%s: %d asynchronous invocations accepted before the node died, all run", tr, point, len(accepted))
}
