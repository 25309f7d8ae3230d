//go:build spry_crash

package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/bpf/bpftest"
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
