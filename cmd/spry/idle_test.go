package main

import (
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/bench/proc"
)

// wakeups counts the times the daemon's threads were switched to (their
// voluntary and involuntary context switches, summed).
func (n *spryNode) wakeups() int {
	n.t.Helper()
	u, err := proc.Read(n.cmd.Process.Pid)
	if err != nil || u.Threads == 0 {
		n.t.Fatalf("the daemon's threads: %v", err)
	}
	return int(u.VolCS + u.InvolCS)
}

// treeWakeups is wakeups for the daemon and its instances.
func (n *spryNode) treeWakeups() int {
	sum := 0
	for _, pid := range proc.Descendants(n.cmd.Process.Pid) {
		if u, err := proc.Read(pid); err == nil {
			sum += int(u.VolCS + u.InvolCS)
		}
	}
	return sum
}

// settle waits until half a second passes with at most 2 wake-ups (count),
// within 30 s: the watcher ticks every 100 ms until the app has been quiet
// for 1.5 s (its own ticks, slower under load), then sleeps. Waiting for
// that by the clock made a window after it catch the last ticks at load (60
// wake-ups once). One that never settles fails the window after.
func settle(count func() int) {
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		w0 := count()
		time.Sleep(500 * time.Millisecond)
		if count()-w0 <= 2 {
			return
		}
	}
}

// sleepsQuietly checks that count (wake-ups so far) grows by at most bound
// in a window. Nothing periodic may run in an idle system, but a loaded
// machine can still wake it for reasons not its own (a forced GC every
// two minutes, a late log write): the window is tried up to tries times,
// and one quiet window passes. Periodic work is in every window, and fails.
func sleepsQuietly(t *testing.T, what string, count func() int, window time.Duration, bound, tries int) {
	t.Helper()
	var seen []int
	for range tries {
		w0 := count()
		time.Sleep(window)
		w := count() - w0
		if w <= bound {
			t.Logf("%s woke %d times in %v (windows before: %v)", what, w, window, seen)
			return
		}
		seen = append(seen, w)
	}
	t.Errorf("%s woke %v times in %d windows of %v, want at most %d in one (no periodic work while idle)", what, seen, tries, window, bound)
}

// An idle node costs no CPU: once an app is quiet its watcher no longer
// ticks every 100 ms (once per control period while an autoscaler may still
// scale down, then not at all), the gateway's date loop stops, and the next
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
	time.Sleep(2 * time.Second) // settled: no instance left to scale down
	settle(n.wakeups)
	sleepsQuietly(t, "the idle daemon", n.wakeups, 5*time.Second, 25, 2)
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
