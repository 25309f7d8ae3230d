//go:build spry_crash

package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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

func crashWalk(t *testing.T, tr, point string) {
	cfg := writeConfig(t, fmt.Sprintf(`
app: crash
functions:
  a: {builtin: echo, env: {CRASH_POINT: "%[1]s@5"}}
  b: {builtin: echo, env: {CRASH_POINT: "%[1]s@5"}}
chains:
  c: {route: /c, steps: [a, b], timeout: 2s}
`, point))
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
				case s == 200 && got != body:
					t.Errorf("request %d: 200 with %q, want its own body %q", i, got, body)
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
	restarts := findFunction(t, a, "a").Instances[0].Restarts + findFunction(t, a, "b").Instances[0].Restarts
	if restarts == 0 {
		t.Fatalf("no instance died at %s (codes %v)", point, codes)
	}
	// Alive and serving once the instances are back.
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, got, err := n.post(c, "/c", "after")
		if err == nil && s == 200 && got == "after" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the crashes: %d %q %v", s, got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s/%s: %v, %d restarts, %d reclaimed", tr, point, codes, restarts, a.Pool.Reclaimed)
}
