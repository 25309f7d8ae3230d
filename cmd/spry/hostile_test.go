package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The hostile-instance fuzzer (issue 17): the first step of app victim
// writes random bytes into every part of its app's pool it can reach
// (testdata/hostile) while good traffic runs against victim and against a
// bystander app on the same node. The node never panics or hangs; the
// bystander is unaffected; every request to victim is answered (errors
// allowed); and once the hostile instance stops and is restarted, victim
// serves correctly again with every buffer accounted for.
func TestHostileInstance(t *testing.T) { eachTransport(t, testHostileInstance) }

func testHostileInstance(t *testing.T, tr string) {
	// Where the instance (under the app's own uid) can see it.
	dir, err := os.MkdirTemp("", "spry-hostile-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	flag := filepath.Join(dir, "scribble")
	t.Setenv("HOSTILE_FLAG", flag)
	victim := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "hostile.yaml")
	bystander := writeConfig(t, `
app: bystander
functions:
  echo: {builtin: echo}
chains:
  by: {route: /by, steps: [echo], timeout: 5s}
`)
	n := startNode(t, "--transport", tr, "-f", victim, "-f", bystander)
	c := client(8)
	if err := os.WriteFile(flag, nil, 0o644); err != nil { // the attack starts
		t.Fatal(err)
	}
	var victimDone, victimErr, byDone atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(2 * time.Second)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				body := "w" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
				if w < 4 {
					route := []string{"/victim", "/victim-fan", "/victim-big"}[i%3]
					if route == "/victim-big" {
						body += strings.Repeat("b", 300<<10) // the extent region
					}
					s, _, err := n.post(c, route, body)
					if err != nil {
						t.Errorf("victim request unanswered: %v", err)
						return
					}
					victimDone.Add(1)
					if s != 200 {
						victimErr.Add(1)
					}
					continue
				}
				s, got, err := n.post(c, "/by", body)
				if err != nil || s != 200 || got != body {
					t.Errorf("bystander: %d %q %v, want 200 %q", s, got, err, body)
					return
				}
				byDone.Add(1)
			}
		}()
	}
	wg.Wait()
	if !strings.Contains(n.logs(), "hostile: scribbling") {
		t.Fatalf("the hostile instance never attacked\n%s", n.logs())
	}
	if t.Failed() {
		// Where every goroutine of the node is (SIGQUIT: Go prints the
		// stacks), for the log below.
		n.cmd.Process.Signal(syscall.SIGQUIT)
		time.Sleep(time.Second)
		t.Fatalf("under attack\n%s", n.logs())
	}
	// The attack ends; the hostile instance is replaced.
	os.Remove(flag)
	a := findApp(t, n.mustStatus(), "victim")
	if pid := findFunction(t, a, "hostile").Instances[0].PID; pid != 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// Victim recovers: twenty correct answers in a row on each of its
	// chains, every buffer back.
	deadline := time.Now().Add(30 * time.Second)
	for ok := 0; ok < 60; {
		body := "after-" + strconv.Itoa(ok)
		route, want := "/victim", body
		switch ok % 3 {
		case 1:
			route, want = "/victim-fan", body+body
		case 2:
			body += strings.Repeat("b", 300<<10)
			route, want = "/victim-big", body
		}
		s, got, err := n.post(c, route, body)
		if err == nil && s == 200 && got == want {
			ok++
			continue
		}
		ok = 0
		if time.Now().After(deadline) {
			t.Fatalf("victim did not recover on %s: %d %q %v\n%s", route, s, got[:min(len(got), 200)], err, n.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.waitFreeBuffersWithin("victim", 20*time.Second)
	t.Logf("%s: victim %d requests under attack (%d errors), bystander %d", tr, victimDone.Load(), victimErr.Load(), byDone.Load())
}
