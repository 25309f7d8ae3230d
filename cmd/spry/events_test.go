package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/activation"
)

// Asynchronous invocations, activation records, retries, dead letters and
// redrive, against a real node.

const eventsYAML = `
app: ev
pool: {buffers: 256, bufferSize: 4KiB}
limits: {inflight: 64, async: 16}
functions:
  upper: {builtin: upper}
  sleep: {builtin: sleep, concurrency: 8}
  fail: {builtin: fail}
chains:
  up:
    route: /up
    steps: [upper]
    async: {queue: 5000}
  slow:
    route: /slow
    steps: [sleep, upper]
    timeout: 5s
    async: {attempts: 4, backoff: 50ms}
  job:
    route: /job
    steps: [fail]
    record: all
    async: {attempts: 3, backoff: 20ms}
  tiny:
    route: /tiny
    steps: [sleep]
    async: {queue: 1}
`

// getJSON GETs an admin API path into v and returns the status.
func (n *spryNode) getJSON(path string, v any) int {
	n.t.Helper()
	resp, err := http.Get("http://" + n.admin + path)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			n.t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

func (n *spryNode) activation(id string) *activation.Record {
	var r activation.Record
	if st := n.getJSON("/v1/activations/"+id, &r); st != 200 {
		n.t.Fatalf("GET activation %s: %d", id, st)
	}
	return &r
}

// waitActivation waits until activation id is in a terminal state.
func (n *spryNode) waitActivation(id string, within time.Duration) *activation.Record {
	n.t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := n.activation(id)
		if r.State.Terminal() {
			return r
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("activation %s still %s after %v: %+v", id, r.State, within, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postAsync sends body to route with Prefer: respond-async and returns the
// 202's activation id.
func (n *spryNode) postAsync(c *http.Client, route, body string, hdr ...string) (string, *http.Response, error) {
	req, _ := http.NewRequest("POST", "http://"+n.http+route, strings.NewReader(body))
	req.Header.Set("Prefer", "respond-async")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 202 {
		return "", resp, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", resp, err
	}
	return out.ID, resp, nil
}

func TestAsyncInvocation(t *testing.T) {
	t.Parallel()
	n := startNode(t, "-f", writeConfig(t, eventsYAML))
	c := client(4)

	id, resp, err := n.postAsync(c, "/up?x=1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("X-Spry-Activation-Id") != id || !strings.HasSuffix(resp.Header.Get("Location"), "/v1/activations/"+id) ||
		resp.Header.Get("Preference-Applied") != "respond-async" {
		t.Fatalf("202 headers: %v", resp.Header)
	}
	r := n.waitActivation(id, 10*time.Second)
	if r.State != activation.Succeeded || r.Status != 200 || r.Attempts != 1 || r.Cause.Kind != "async" ||
		r.Request.Query != "x=1" || len(r.Steps) != 1 || r.Steps[0].Function != "upper" || r.Result.Size != 5 {
		t.Fatalf("record: %+v", r)
	}
	res, _ := http.Get("http://" + n.admin + "/v1/activations/" + id + "/result")
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "HELLO" || res.Header.Get("X-Spry-Status") != "200" {
		t.Fatalf("result %q %v", b, res.Header)
	}

	// The admin API's own door, with an idempotency key: one activation.
	post := func(key string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", "http://"+n.admin+"/v1/chains/up/invocations", strings.NewReader("again"))
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	st1, m1 := post("k-1")
	st2, m2 := post("k-1")
	if st1 != 202 || st2 != 202 || m1["id"] != m2["id"] || m2["duplicate"] != true {
		t.Fatalf("idempotency: %d %v / %d %v", st1, m1, st2, m2)
	}
	// Over the gateway too.
	k1, _, _ := n.postAsync(c, "/up", "z", "Idempotency-Key", "k-2")
	k2, _, _ := n.postAsync(c, "/up", "z", "Idempotency-Key", "k-2")
	if k1 == "" || k1 != k2 {
		t.Fatalf("idempotency over the gateway: %q %q", k1, k2)
	}

	// A step that always fails: retried, then dead; recorded with its error.
	id, _, err = n.postAsync(c, "/job?status=503", "boom")
	if err != nil {
		t.Fatal(err)
	}
	r = n.waitActivation(id, 10*time.Second)
	if r.State != activation.Dead || r.Attempts != 3 || r.Status != 503 || !strings.Contains(r.Error, "boom") {
		t.Fatalf("dead: %+v", r)
	}
	var list struct {
		Activations []activation.Record
		Next        string
	}
	n.getJSON("/v1/activations?state=dead&chain=job", &list)
	if len(list.Activations) != 1 || list.Activations[0].ID != id {
		t.Fatalf("dead list: %+v", list)
	}
	// A 4xx from the chain is not retried.
	id4, _, _ := n.postAsync(c, "/job?status=422", "bad")
	if r := n.waitActivation(id4, 10*time.Second); r.State != activation.Failed || r.Attempts != 1 {
		t.Fatalf("4xx: %+v", r)
	}
	// A synchronous failure is recorded (record: all also keeps successes).
	if st, _, _ := n.post(c, "/job?status=500", "sync"); st != 500 {
		t.Fatalf("sync /job: %d", st)
	}
	waitFor(t, 5*time.Second, func() bool {
		n.getJSON("/v1/activations?chain=job&limit=10", &list)
		for _, a := range list.Activations {
			if a.Cause.Kind == "http" && a.Status == 500 && a.State == activation.Failed {
				return true
			}
		}
		return false
	})

	// A full async queue answers 429 with Retry-After, never a backlog.
	if _, _, err := n.postAsync(c, "/tiny?ms=1000", "a"); err != nil {
		t.Fatal(err)
	}
	if _, resp, err := n.postAsync(c, "/tiny?ms=1000", "b"); err == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second async request on a queue of 1: %v", err)
	}

	// Bad input is refused with a reason.
	if _, resp, err := n.postAsync(c, "/up", "x", "X-Callback-Url", "ftp://nowhere"); err == nil || resp.StatusCode != 400 {
		t.Fatalf("bad callback: %v", err)
	}
	if st := n.getJSON("/v1/activations/xyz", nil); st != 400 {
		t.Fatalf("bad id: %d", st)
	}
	if st := n.getJSON("/v1/activations/"+activation.NewID(time.Now()), nil); st != 404 {
		t.Fatalf("unknown id: %d", st)
	}
	// The queue depth is in /metrics.
	mresp, _ := http.Get("http://" + n.admin + "/metrics")
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(mb), `spry_activation_queue_depth{app="ev",chain="up"}`) ||
		!strings.Contains(string(mb), `spry_activations_total{app="ev",chain="job",outcome="dead"} 1`) {
		t.Fatalf("metrics lack the activation series:\n%s", grepLines(string(mb), "activation"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached within %v", within)
		}
	}
}

// The durability test: 1,000 asynchronous invocations are sent while the
// daemon is killed with SIGKILL mid-stream; after a restart on the same
// data directory, every id that got a 202 reaches a terminal state, none
// is missing.
func TestAsyncSurvivesKill9(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	cfg := writeConfig(t, eventsYAML)
	n := startNode(t, "-f", cfg, "--data-dir", data)
	c := client(16)

	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, _, err := n.postAsync(c, "/slow?ms=20", fmt.Sprintf("msg %d", i))
				if err != nil {
					continue // refused or cut off by the kill: not accepted
				}
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		}()
	}
	killed := false
	for i := range 1000 {
		next <- i
		if i == 400 {
			n.cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	close(next)
	wg.Wait()
	<-n.exit
	if !killed || len(ids) < 100 {
		t.Fatalf("only %d accepted before the kill", len(ids))
	}
	t.Logf("%d invocations accepted before kill -9", len(ids))

	m := startNode(t, "-f", cfg, "--data-dir", data)
	deadline := time.Now().Add(60 * time.Second)
	pending := ids
	for len(pending) > 0 {
		var still []string
		for _, id := range pending {
			var r activation.Record
			st := m.getJSON("/v1/activations/"+id, &r)
			switch {
			case st == 404:
				t.Fatalf("accepted activation %s is missing after the restart", id)
			case st != 200:
				t.Fatalf("GET %s: %d", id, st)
			case r.State != activation.Succeeded:
				if r.State.Terminal() {
					t.Fatalf("activation %s ended %s: %+v", id, r.State, r)
				}
				still = append(still, id)
			}
		}
		pending = still
		if len(pending) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d activations unfinished a minute after the restart", len(pending), len(ids))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !strings.Contains(m.logs(), "activations owed from before the restart are queued again") {
		t.Fatal("no activation was owed at the restart: the kill came after all had finished")
	}
}

// An instance killed while it runs a step: the attempt fails (502) and is
// retried on the replacement instance.
func TestAsyncRetriesAfterInstanceDeath(t *testing.T) {
	t.Parallel()
	n := startNode(t, "-f", writeConfig(t, eventsYAML))
	c := client(2)
	id, _, err := n.postAsync(c, "/slow?ms=1500", "x")
	if err != nil {
		t.Fatal(err)
	}
	// Kill the sleep instance while it holds the request.
	var pid int
	waitFor(t, 5*time.Second, func() bool {
		s := n.mustStatus()
		f := findFunction(t, findApp(t, s, "ev"), "sleep")
		for _, in := range f.Instances {
			if in.Inflight > 0 && in.PID > 0 {
				pid = in.PID
				return true
			}
		}
		return false
	})
	syscall.Kill(pid, syscall.SIGKILL)
	r := n.waitActivation(id, 20*time.Second)
	if r.State != activation.Succeeded || r.Attempts < 2 {
		t.Fatalf("after the instance died: %+v", r)
	}
}

// A dead activation is re-driven after the chain is fixed (a reload that
// replaces its failing step).
func TestRedriveAfterFix(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, eventsYAML)
	n := startNode(t, "-f", cfg)
	c := client(2)
	id, _, err := n.postAsync(c, "/job", "fix me")
	if err != nil {
		t.Fatal(err)
	}
	if r := n.waitActivation(id, 10*time.Second); r.State != activation.Dead {
		t.Fatalf("%+v", r)
	}
	// The fix also adds a chain with a trigger: the reload brings both.
	fixed := strings.Replace(eventsYAML, "steps: [fail]", "steps: [upper]", 1) + `  late: {route: /late, steps: [upper]}
triggers:
  late-tick: {every: 200ms, chain: late, body: tick}
`
	if err := os.WriteFile(cfg, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(spryBin, "reload", "--admin", n.admin).CombinedOutput(); err != nil {
		t.Fatalf("spry reload: %v\n%s", err, out)
	}
	out, err := exec.Command(spryBin, "activations", "redrive", "--admin", n.admin, "--state", "dead", "--chain", "job").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(id)) {
		t.Fatalf("spry activations redrive: %v\n%s", err, out)
	}
	r := n.waitActivation(id, 10*time.Second)
	if r.State != activation.Succeeded || r.Attempts != 1 {
		t.Fatalf("after redrive: %+v", r)
	}
	out, _ = exec.Command(spryBin, "activations", "result", "--admin", n.admin, id).CombinedOutput()
	if string(out) != "FIX ME" {
		t.Fatalf("spry activations result: %q", out)
	}
	late, _, err := n.postAsync(c, "/late", "new")
	if err != nil {
		t.Fatalf("async on a chain the reload added: %v", err)
	}
	if r := n.waitActivation(late, 10*time.Second); r.State != activation.Succeeded {
		t.Fatalf("%+v", r)
	}
	waitFor(t, 10*time.Second, func() bool {
		var list struct{ Activations []activation.Record }
		n.getJSON("/v1/activations?chain=late&limit=50", &list)
		for _, a := range list.Activations {
			if a.Cause.Trigger == "late-tick" && a.State == activation.Succeeded {
				return true
			}
		}
		return false
	})
}
