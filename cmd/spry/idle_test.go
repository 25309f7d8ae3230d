package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wakeups counts the times the daemon's threads were switched to (their
// voluntary and involuntary context switches, summed).
func (n *spryNode) wakeups() int {
	n.t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", n.cmd.Process.Pid))
	if err != nil || len(tasks) == 0 {
		n.t.Fatalf("the daemon's threads: %v", err)
	}
	sum := 0
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that just ended
		}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				x, _ := strconv.Atoi(strings.TrimSpace(v))
				sum += x
			}
		}
	}
	return sum
}

// An idle node costs no CPU: once an app is quiet its watcher no longer
// ticks every 100 ms (once per control period while an autoscaler may still
// scale down, then every 10 s), the gateway's date loop stops, and the next
// request wakes both. Scale to zero still comes on time meanwhile. Before:
// about 45 wakeups a second, for ever.
func TestIdleNodeSleeps(t *testing.T) {
	cfg := writeConfig(t, `app: idle
functions:
  up: {builtin: upper, scale: {min: 0, max: 1, slo: 100ms, window: 1s, idle: 2s}}
  echo: {builtin: echo}
chains:
  up: {route: /up, steps: [up], methods: [POST]}
  echo: {route: /echo, steps: [echo], methods: [POST]}
`)
	n := startNode(t, "-f", cfg)
	c := client(1)
	if s, got, err := n.post(c, "/up", "abc"); err != nil || s != 200 || got != "ABC" {
		t.Fatalf("up: %d %q %v", s, got, err)
	}
	start := time.Now()
	n.waitInstances("idle", "up", 0, 20*time.Second)
	t.Logf("scaled to zero %v after the last request (scale.idle 2s)", time.Since(start).Round(time.Millisecond))
	// Settled: the watcher ticks every 100 ms until the app has been
	// quiet for 1.5 s (its own ticks, slower under load), then sleeps.
	// Waiting for that by the clock made the window below catch the last
	// ticks at load (60 wakeups once): wait until half a second passes
	// with at most 2, within 30 s (a daemon that never sleeps fails below).
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		w0 := n.wakeups()
		time.Sleep(500 * time.Millisecond)
		if n.wakeups()-w0 <= 2 {
			break
		}
	}
	// The bound: periodic work wakes it in every window; a one-off (a
	// forced GC, a late log write) in one, so a second window decides.
	const window, most = 5 * time.Second, 25
	for try := 1; ; try++ {
		w0 := n.wakeups()
		time.Sleep(window)
		w := n.wakeups() - w0
		t.Logf("the idle daemon woke %d times in %v", w, window)
		if w <= most {
			break
		}
		if try == 2 {
			t.Fatalf("the idle daemon woke %d times in %v, twice in a row more than %d (no periodic work while idle)", w, window, most)
		}
	}
	// The next requests wake it: answered, and the function scales up
	// from zero.
	if s, got, err := n.post(c, "/echo", "x"); err != nil || s != 200 || got != "x" {
		t.Fatalf("echo after idle: %d %q %v", s, got, err)
	}
	if s, got, err := n.post(c, "/up", "def"); err != nil || s != 200 || got != "DEF" {
		t.Fatalf("up after idle: %d %q %v", s, got, err)
	}
	n.waitInstances("idle", "up", 0, 20*time.Second)
}
