package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// steady keeps conns clients sending to route until stop is called, and
// counts every answer that is not a 200 with one of the bodies allowed.
type steady struct {
	sent, failed atomic.Int64
	firstErr     atomic.Pointer[string]
	stopped      atomic.Bool
	wg           sync.WaitGroup
	once         sync.Once
}

func startSteady(t *testing.T, n *spryNode, conns int, route, body string, allowed func(string) bool) *steady {
	s := &steady{}
	c := client(conns)
	limit := time.Now().Add(2 * time.Minute) // bounded even if the test stalls
	for range conns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for !s.stopped.Load() && time.Now().Before(limit) {
				status, got, err := n.post(c, route, body)
				s.sent.Add(1)
				if err == nil && (status != 200 || !allowed(got)) {
					err = fmt.Errorf("status %d: %q", status, got)
				}
				if err != nil {
					s.failed.Add(1)
					msg := err.Error()
					s.firstErr.CompareAndSwap(nil, &msg)
				}
			}
		}()
	}
	return s
}

func (s *steady) stop(t *testing.T) {
	t.Helper()
	s.once.Do(func() {
		s.stopped.Store(true)
		s.wg.Wait()
		if f := s.failed.Load(); f > 0 {
			t.Errorf("%d of %d requests during the reloads failed; first: %s", f, s.sent.Load(), *s.firstErr.Load())
		}
		t.Logf("%d requests during the reloads, %d failed", s.sent.Load(), s.failed.Load())
	})
}

// waitFor polls route until it answers want (or fails the test after 30 s).
func (n *spryNode) waitFor(route, body string, want func(status int, got string) bool) {
	n.t.Helper()
	c := client(1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, got, err := n.post(c, route, body)
		if err == nil && want(status, got) {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s did not change: last %d %q %v\n%s", route, status, got, err, n.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *spryNode) reload(t *testing.T) (string, error) {
	t.Helper()
	out, err := exec.Command(spryBin, "reload", "--admin", n.admin).CombinedOutput()
	return string(out), err
}

// A reload changes a function, adds an app's chain and function, removes
// them, and refuses a broken config, all while clients keep sending: not
// one request fails, and nothing leaks.
func TestReloadUnderLoad(t *testing.T) {
	const v1 = `app: live
functions:
  f: {builtin: upper}
chains:
  c: {route: /live, steps: [f]}
`
	cfg := writeConfig(t, v1)
	n := startNode(t, "-f", cfg)
	write := func(yaml string) {
		if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Every answer of /live is one of these, whichever config runs.
	s := startSteady(t, n, 16, "/live", "spry", func(got string) bool { return got == "SPRY" || got == "yrps" })
	defer s.stop(t)
	time.Sleep(200 * time.Millisecond)

	// Change the function.
	write(strings.Replace(v1, "upper", "reverse", 1))
	if out, err := n.reload(t); err != nil || !strings.Contains(out, "changed live") {
		t.Fatalf("spry reload: %v\n%s", err, out)
	}
	n.waitFor("/live", "spry", func(st int, got string) bool { return st == 200 && got == "yrps" })

	// Add a function and a chain.
	v3 := strings.Replace(v1, "upper", "reverse", 1) + "  added: {route: /added, steps: [g]}\n"
	v3 = strings.Replace(v3, "functions:\n", "functions:\n  g: {builtin: upper}\n", 1)
	write(v3)
	if out, err := n.reload(t); err != nil {
		t.Fatalf("spry reload: %v\n%s", err, out)
	}
	n.waitFor("/added", "x", func(st int, got string) bool { return st == 200 && got == "X" })

	// A broken config changes nothing and says why.
	write(strings.Replace(v3, "steps: [g]", "steps: [nope]", 1))
	out, err := n.reload(t)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(out, `unknown function "nope"`) || !strings.Contains(out, "running config stays") {
		t.Fatalf("reload of a broken config: %v\n%s", err, out)
	}
	n.waitFor("/added", "x", func(st int, got string) bool { return st == 200 && got == "X" })

	// Remove them again, by SIGHUP this time.
	write(v1)
	n.cmd.Process.Signal(syscall.SIGHUP)
	n.waitFor("/added", "x", func(st int, _ string) bool { return st == 404 })
	n.waitFor("/live", "spry", func(st int, got string) bool { return st == 200 && got == "SPRY" })
	s.stop(t)

	// The replaced apps are gone: one app, one instance, every buffer back.
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := n.mustStatus()
		if len(st.Apps) == 1 && len(st.Apps[0].Functions) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the reloads: %+v", st.Apps)
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.waitFreeBuffers("live")
	if !strings.Contains(n.logs(), "app drained and stopped") {
		t.Errorf("no replaced app was drained:\n%s", n.logs())
	}
}

// --watch reloads when the config file changes.
func TestWatch(t *testing.T) {
	const v1 = "app: w\nfunctions:\n  f: {builtin: upper}\nchains:\n  c: {route: /w, steps: [f]}\n"
	cfg := writeConfig(t, v1)
	n := startNode(t, "--watch", "-f", cfg)
	n.waitFor("/w", "ab", func(st int, got string) bool { return st == 200 && got == "AB" })
	time.Sleep(1100 * time.Millisecond) // a new modification time on coarse clocks
	if err := os.WriteFile(cfg, []byte(strings.Replace(v1, "upper", "reverse", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	n.waitFor("/w", "ab", func(st int, got string) bool { return st == 200 && got == "ba" })
}

// A second node on a busy port fails at once, saying so, before it builds
// anything or starts an instance.
func TestBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	began := time.Now()
	cmd := exec.Command(spryBin, "up", "--listen", ln.Addr().String(), "--admin", "127.0.0.1:0", "-f", "examples/hello/spry.yaml")
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("spry up on a busy port: %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), ln.Addr().String()+" is already in use") || !strings.Contains(string(out), "--listen") {
		t.Errorf("message does not name the address and the flag:\n%s", out)
	}
	if strings.Contains(string(out), "function built") || strings.Contains(string(out), "instance ready") {
		t.Errorf("built or started before it found the port busy:\n%s", out)
	}
	t.Logf("failed in %s", time.Since(began))
}

// Two nodes on one host never run apps under one uid: each leases its
// apps' uids host-wide.
func TestTwoNodesDistinctUIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("instances run under per-app uids only when the node runs as root")
	}
	cfg := "app: a\nfunctions:\n  f: {builtin: echo}\nchains:\n  c: {route: /a, steps: [f]}\n"
	n1 := startNode(t, "-f", writeConfig(t, cfg))
	n2 := startNode(t, "-f", writeConfig(t, cfg))
	u1, u2 := findApp(t, n1.mustStatus(), "a").UID, findApp(t, n2.mustStatus(), "a").UID
	if u1 == u2 || u1 < 61000 || u2 < 61000 {
		t.Fatalf("the app of each node runs as uid %d and %d: want two distinct uids of the range", u1, u2)
	}
}
