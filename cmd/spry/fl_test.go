package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/fl"
	"github.com/spry-dev/spry/internal/node"
)

// The federated-learning app end to end: a node runs `spry fl config`'s
// app; clients upload updates over HTTP, leaves fold them where the
// gateway wrote them, the top makes each round's model, and the model a
// client fetches must be FedAvg of exactly the updates the round took.

func flNode(t *testing.T, params int) (*spryNode, *flc) {
	t.Helper()
	yaml := fl.AppYAML(fl.AppOptions{Params: params, Uploads: 8, MaxLeaves: 2, Idle: 5 * time.Minute})
	n := startNode(t, "-f", writeConfig(t, yaml))
	return n, &flc{t: t, n: n, c: client(16)}
}

type flc struct {
	t *testing.T
	n *spryNode
	c *http.Client
}

func (f *flc) do(method, path string, body []byte) (int, []byte, http.Header) {
	f.t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+f.n.http+path, r)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.c.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v\n%s", method, path, err, f.n.logs())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, b, resp.Header
}

func (f *flc) create(job, spec string) {
	f.t.Helper()
	if st, b, _ := f.do("PUT", "/fl/"+job, []byte(spec)); st != http.StatusCreated {
		f.t.Fatalf("create %s: %d %s", job, st, b)
	}
}

func (f *flc) update(job string, round int, client string, samples float64, u []float32) (int, string) {
	f.t.Helper()
	st, b, err := f.try("POST", fmt.Sprintf("/fl/%s/update?round=%d&client=%s&samples=%g", job, round, client, samples), floatBytes(u))
	if err != nil {
		f.t.Fatal(err)
	}
	return st, string(b)
}

// try is do for a client that retries: a connection the gateway closed
// while the body was still being written (it answered early: 503, the
// pool was full) is an error to retry, not a failure of the test.
func (f *flc) try(method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://"+f.n.http+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	resp, err := f.c.Do(req)
	if err != nil {
		return 0, nil, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (f *flc) model(job string, round int) []float32 {
	f.t.Helper()
	q := ""
	if round >= 0 {
		q = "?round=" + strconv.Itoa(round)
	}
	st, b, h := f.do("GET", "/fl/"+job+"/model"+q, nil)
	if st != http.StatusOK {
		f.t.Fatalf("model %d of %s: %d %s", round, job, st, b)
	}
	if round >= 0 && h.Get(fl.RoundHeader) != strconv.Itoa(round) {
		f.t.Fatalf("model %d of %s: %s: %q", round, job, fl.RoundHeader, h.Get(fl.RoundHeader))
	}
	return floatsOf(b)
}

// floatsOf reads a model's little-endian float32 (floatBytes' inverse).
func floatsOf(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func (f *flc) status(job string) fl.Status {
	f.t.Helper()
	st, b, _ := f.do("GET", "/fl/"+job, nil)
	if st != http.StatusOK {
		f.t.Fatalf("status of %s: %d %s", job, st, b)
	}
	var s fl.Status
	if err := json.Unmarshal(b, &s); err != nil {
		f.t.Fatalf("status of %s: %v: %s", job, err, b)
	}
	return s
}

func floatBytes(u []float32) []byte {
	b := make([]byte, 4*len(u))
	for i, v := range u {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// randomRound makes a round's updates of params values from clients
// clients, each of 1 to maxSamples samples.
func randomRound(rng *rand.Rand, clients, params, maxSamples int) ([][]float32, []float64) {
	ups := make([][]float32, clients)
	samples := make([]float64, clients)
	for c := range ups {
		ups[c] = randomUpdate(rng, params)
		samples[c] = float64(1 + rng.IntN(maxSamples))
	}
	return ups, samples
}

func randomUpdate(rng *rand.Rand, n int) []float32 {
	u := make([]float32, n)
	for i := range u {
		u[i] = float32(rng.NormFloat64())
	}
	return u
}

// checkFedAvg checks model against the float64 reference of ups weighted
// by samples, to float32 tolerance.
func checkFedAvg(t *testing.T, what string, model []float32, ups [][]float32, samples []float64) {
	t.Helper()
	mean, scale := fl.Reference(ups, samples)
	if len(model) != len(mean) {
		t.Fatalf("%s: %d parameters, want %d", what, len(model), len(mean))
	}
	for i := range mean {
		if d := math.Abs(float64(model[i]) - mean[i]); d > fl.Tolerance(len(ups), scale[i]) || math.IsNaN(float64(model[i])) {
			t.Fatalf("%s: parameter %d is %g, FedAvg is %g (off by %g, tolerance %g)", what, i, model[i], mean[i], d, fl.Tolerance(len(ups), scale[i]))
		}
	}
}

// sendRound has every client send its update for round r until the round
// closes: an answer that is not 200 (a leaf died under it, the pool was
// full) is retried, and an update the round lost after it was taken (the
// status lists it) is sent again. Duplicates are refused by the top (409),
// so each update is in the model exactly once, whatever happened.
func (f *flc) sendRound(job string, r int, ups [][]float32, samples []float64, during func(stop <-chan struct{})) (answers map[int]int) {
	t := f.t
	answers = map[int]int{}
	var mu sync.Mutex
	deadline := time.Now().Add(90 * time.Second)
	for pass := 0; ; pass++ {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for c := range ups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				for time.Now().Before(deadline) {
					st, b, err := f.try("POST", fmt.Sprintf("/fl/%s/update?round=%d&client=c%d&samples=%g", job, r, c, samples[c]), floatBytes(ups[c]))
					if err != nil {
						t.Error(err)
						return
					}
					msg := string(b)
					mu.Lock()
					answers[st]++
					if st != 200 && st != 503 && st != 0 {
						t.Logf("round %d client c%d: %d %s", r, c, st, msg)
					}
					mu.Unlock()
					if st == http.StatusOK || st == http.StatusConflict && strings.Contains(msg, "(it is folded)") {
						return
					}
					if st == http.StatusGone && !strings.Contains(msg, "lost") {
						return // the round closed without it: the model check finds it missing
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
		if pass == 0 && during != nil {
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { during(stop); close(done) }()
			wg.Wait()
			close(stop)
			<-done
		}
		wg.Wait()
		for {
			s := f.status(job)
			if s.Round > r || s.State == "done" {
				return answers
			}
			if s.Pending == 0 {
				break // short of the goal: some were lost after their ack
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d did not close: %+v", r, s)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			t.Fatalf("round %d did not close in 90s: %+v", r, f.status(job))
		}
	}
}

func TestFLFedAvg(t *testing.T) {
	const params, clients, rounds = 1037, 12, 3 // 1037: the kernels' tails too
	_, f := flNode(t, 4096)
	f.create("mnist", fmt.Sprintf(`{"params": %d, "updates": %d, "rounds": %d}`, params, clients, rounds))
	rng := rand.New(rand.NewPCG(15, 1))
	init := randomUpdate(rng, params)
	if st, b, _ := f.do("POST", "/fl/mnist/model", floatBytes(init)); st != http.StatusOK {
		t.Fatalf("initial model: %d %s", st, b)
	}
	if m := f.model("mnist", 0); !slices32Equal(m, init) {
		t.Fatalf("model 0 is not the initial model")
	}
	for r := 1; r <= rounds; r++ {
		ups, samples := randomRound(rng, clients, params, 500)
		f.sendRound("mnist", r, ups, samples, nil)
		checkFedAvg(t, fmt.Sprintf("round %d", r), f.model("mnist", r), ups, samples)
		checkFedAvg(t, fmt.Sprintf("round %d (latest)", r), f.model("mnist", -1), ups, samples)
		if r > 1 {
			f.model("mnist", r-1) // the model before stays for clients still fetching it
		}
	}
	s := f.status("mnist")
	if s.State != "done" || len(s.Results) != rounds || s.Results[rounds-1].Updates != clients {
		t.Fatalf("after %d rounds: %+v", rounds, s)
	}
	if st, msg := f.update("mnist", rounds+1, "c0", 1, make([]float32, params)); st != http.StatusGone {
		t.Fatalf("an update after the job's last round: %d %s, want 410", st, msg)
	}
	if st, b, _ := f.do("DELETE", "/fl/mnist", nil); st != http.StatusOK {
		t.Fatalf("delete: %d %s", st, b)
	}
	f.n.waitFreeBuffers("fl")
}

func slices32Equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestFLRoundRules: goals by count and by deadline, stragglers, duplicates
// and malformed updates, each refused with its reason.
func TestFLRoundRules(t *testing.T) {
	const params = 64
	_, f := flNode(t, params)
	rng := rand.New(rand.NewPCG(15, 2))

	// By deadline: two updates, then the deadline closes the round.
	f.create("dl", `{"params": 64, "deadline": "400ms", "minUpdates": 2}`)
	a, b := randomUpdate(rng, params), randomUpdate(rng, params)
	if st, msg := f.update("dl", 1, "a", 3, a); st != http.StatusOK {
		t.Fatalf("update a: %d %s", st, msg)
	}
	if st, msg := f.update("dl", 1, "a", 3, a); st != http.StatusConflict || !strings.Contains(msg, "already sent") {
		t.Fatalf("a duplicate: %d %s, want 409 naming it", st, msg)
	}
	if st, msg := f.update("dl", 1, "b", 5, b); st != http.StatusOK {
		t.Fatalf("update b: %d %s", st, msg)
	}
	for s := f.status("dl"); s.Round == 1; s = f.status("dl") {
		time.Sleep(20 * time.Millisecond)
	}
	checkFedAvg(t, "deadline round", f.model("dl", 1), [][]float32{a, b}, []float64{3, 5})
	if st, msg := f.update("dl", 1, "c", 1, a); st != http.StatusGone || !strings.Contains(msg, "straggler") {
		t.Fatalf("a straggler: %d %s, want 410 naming it", st, msg)
	}
	if st, msg := f.update("dl", 3, "c", 1, a); st != http.StatusConflict || !strings.Contains(msg, "not open") {
		t.Fatalf("a later round: %d %s, want 409", st, msg)
	}

	// By count, before its deadline: the third update closes the round.
	f.create("count", `{"params": 64, "updates": 3, "deadline": "1m"}`)
	ups := [][]float32{randomUpdate(rng, params), randomUpdate(rng, params), randomUpdate(rng, params)}
	for i, u := range ups {
		if st, msg := f.update("count", 1, "k"+strconv.Itoa(i), float64(i+1), u); st != http.StatusOK {
			t.Fatalf("update %d: %d %s", i, st, msg)
		}
	}
	if s := f.status("count"); s.Round != 2 || s.ModelRound != 1 {
		t.Fatalf("the count goal did not close the round: %+v", s)
	}
	checkFedAvg(t, "count round", f.model("count", 1), ups, []float64{1, 2, 3})

	// Malformed: each a 4xx with the reason.
	nan := randomUpdate(rng, params)
	nan[17] = float32(math.NaN())
	inf := randomUpdate(rng, params)
	inf[5] = float32(math.Inf(-1))
	for _, c := range []struct {
		name, path string
		body       []byte
		status     int
		says       string
	}{
		{"wrong length", "/fl/count/update?round=2&client=x&samples=1", make([]byte, 4*params-4), 400, "parameters"},
		{"NaN", "/fl/count/update?round=2&client=x&samples=1", floatBytes(nan), 422, "parameter 17 is NaN"},
		{"-Inf", "/fl/count/update?round=2&client=x&samples=1", floatBytes(inf), 422, "parameter 5 is -Inf"},
		{"no samples", "/fl/count/update?round=2&client=x", floatBytes(ups[0]), 400, "samples is missing"},
		{"bad round", "/fl/count/update?round=zero&client=x&samples=1", floatBytes(ups[0]), 400, "round="},
		{"bad client", "/fl/count/update?round=2&client=a/b&samples=1", floatBytes(ups[0]), 400, "client="},
		{"negative samples", "/fl/count/update?round=2&client=x&samples=-4", floatBytes(ups[0]), 400, "samples="},
		{"unknown job", "/fl/nope/update?round=1&client=x&samples=1", floatBytes(ups[0]), 404, "no job nope"},
		{"oversized", "/fl/count/update?round=2&client=x&samples=1", make([]byte, 2<<20), 413, "maxBody"},
	} {
		st, body, _ := f.do("POST", c.path, c.body)
		if st != c.status || !strings.Contains(string(body), c.says) {
			t.Errorf("%s: %d %q, want %d saying %q", c.name, st, body, c.status, c.says)
		}
	}
	// A refused update does not count against its client: the fixed one is
	// taken.
	if st, msg := f.update("count", 2, "x", 1, ups[0]); st != http.StatusOK {
		t.Fatalf("the corrected update: %d %s", st, msg)
	}
	for _, c := range []struct {
		method, path, body string
		status             int
		says               string
	}{
		{"PUT", "/fl/count", `{"params": 64, "updates": 3}`, 409, "exists"},
		{"PUT", "/fl/bad", `{"params": 0}`, 400, "params: 0"},
		{"PUT", "/fl/bad", `{"params": 8, "updatez": 1}`, 400, "unknown field"},
		{"GET", "/fl/count/model?round=9", "", 409, "not ready"},
		{"GET", "/fl/nope", "", 404, "no job nope"},
	} {
		var body []byte
		if c.body != "" {
			body = []byte(c.body)
		}
		st, got, _ := f.do(c.method, c.path, body)
		if st != c.status || !strings.Contains(string(got), c.says) {
			t.Errorf("%s %s: %d %q, want %d saying %q", c.method, c.path, st, got, c.status, c.says)
		}
	}
	for _, job := range []string{"dl", "count"} {
		if st, b, _ := f.do("DELETE", "/fl/"+job, nil); st != http.StatusOK {
			t.Fatalf("delete %s: %d %s", job, st, b)
		}
	}
	f.n.waitFreeBuffers("fl")
	// A job left running does not hold the node's shutdown up (the top
	// keeps its buffers on purpose; stop checks the node is gone in time).
	f.create("left", `{"params": 64, "updates": 3}`)
}

// TestFLLeafKilled kills leaf aggregators with SIGKILL while a round's
// updates are being folded: the round still completes with every client's
// update in its model exactly once (updates lost with a leaf are listed
// and sent again), and no buffer leaks.
func TestFLLeafKilled(t *testing.T) {
	const params, clients, rounds = 1 << 21, 16, 3 // 8 MB updates: folds take a while
	n, f := flNode(t, params)
	f.create("kill", fmt.Sprintf(`{"params": %d, "updates": %d, "rounds": %d}`, params, clients, rounds))
	rng := rand.New(rand.NewPCG(15, 3))
	killed := 0
	for r := 1; r <= rounds; r++ {
		ups, samples := randomRound(rng, clients, params, 100)
		var during func(stop <-chan struct{})
		if r == 2 {
			// Kill every leaf there is, again and again, until the
			// clients are answered: folds die at every point.
			during = func(stop <-chan struct{}) {
				for i := range 4 { // more would put the leaf in restart backoff
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(3+7*i) * time.Millisecond):
					}
					s, err := n.status()
					if err != nil {
						continue
					}
					for _, in := range findFunction(t, findApp(t, s, "fl"), "fl-leaf").Instances {
						if in.PID > 0 && syscall.Kill(in.PID, syscall.SIGKILL) == nil {
							killed++
						}
					}
				}
			}
		}
		answers := f.sendRound("kill", r, ups, samples, during)
		t.Logf("round %d: answers by status %v", r, answers)
		checkFedAvg(t, fmt.Sprintf("round %d", r), f.model("kill", r), ups, samples)
	}
	if killed == 0 {
		t.Fatalf("no leaf was killed")
	}
	if st, b, _ := f.do("DELETE", "/fl/kill", nil); st != http.StatusOK {
		t.Fatalf("delete: %d %s", st, b)
	}
	n.waitFreeBuffersWithin("fl", 20*time.Second)
}

// TestFLExample runs examples/fl (a logistic regression trained across
// simulated clients, Spry as the server) and holds it to the accuracy a
// correct FedAvg reaches.
func TestFLExample(t *testing.T) {
	_, f := flNode(t, 4096)
	exe := filepath.Join(t.TempDir(), "flexample")
	if out, err := exec.Command("go", "build", "-o", exe, "../../examples/fl").CombinedOutput(); err != nil {
		t.Fatalf("build examples/fl: %v\n%s", err, out)
	}
	out, err := exec.Command(exe, "--server", "http://"+f.n.http, "--rounds", "6", "--min-accuracy", "0.9").CombinedOutput()
	if err != nil {
		t.Fatalf("examples/fl: %v\n%s", err, out)
	}
	t.Logf("examples/fl:\n%s", out)
	f.n.waitFreeBuffers("fl")
}

// The hierarchy is the control plane's plan from the job's load
// (control.PlanAggregation): the top asks the node for the plan's leaves
// (pool.SlotStats.Demand), the node runs that many, warm across rounds,
// and once the job is gone the leaves go to zero after their idle period.
// A trickle of small updates is one leaf folding one partial sum.
func TestFLHierarchyFollowsPlan(t *testing.T) {
	yaml := fl.AppYAML(fl.AppOptions{Params: 1000, Uploads: 8, MaxLeaves: 2, Idle: 5 * time.Minute})
	yaml = strings.Replace(yaml, "idle: 30s", "idle: 2s", 1)
	n := startNode(t, "-f", writeConfig(t, yaml))
	f := &flc{t: t, n: n, c: client(4)}
	f.create("plan", `{"params": 1000, "updates": 4}`)
	rng := rand.New(rand.NewPCG(7, 7))
	for r := 1; r <= 2; r++ {
		for c := range 4 {
			if st, b := f.update("plan", r, "c"+strconv.Itoa(c), 1, randomUpdate(rng, 1000)); st != http.StatusOK {
				t.Fatalf("round %d client %d: %d %s", r, c, st, b)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	s := f.status("plan")
	if len(s.Results) != 2 {
		t.Fatalf("%d rounds closed, want 2: %+v", len(s.Results), s)
	}
	for _, r := range s.Results {
		if r.Leaves != 1 || r.Partials != 1 {
			t.Errorf("round %d: %d leaves planned, %d partial sums; want 1 and 1 for a trickle of small updates", r.Round, r.Leaves, r.Partials)
		}
	}
	// The node runs what the top asked for (its next decision says so).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		leaf := findFunction(t, findApp(t, n.mustStatus(), "fl"), "fl-leaf")
		if leaf.Scale.Reason == node.ReasonDemand && ready(leaf) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fl-leaf: %d ready, scale %+v; want 1 ready, reason %q", ready(leaf), leaf.Scale, node.ReasonDemand)
		}
	}
	if st, b, _ := f.do("DELETE", "/fl/plan", nil); st != http.StatusOK {
		t.Fatalf("delete: %d %s", st, b)
	}
	n.waitInstances("fl", "fl-leaf", 0, 20*time.Second)
}

// A job survives a restart of the top aggregator (kill -9) when the app
// has a state directory: the new top restores it at its first request,
// serves the last global model, and the job goes on at the round that was
// open (its updates taken before the kill are gone, and the status says
// so); deleting the job removes its files.
func TestFLTopRestart(t *testing.T) {
	dir, err := os.MkdirTemp("", "spry-fl-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil { // the app's own uid writes it
		t.Fatal(err)
	}
	const params = 1000
	yaml := fl.AppYAML(fl.AppOptions{Params: params, Uploads: 8, MaxLeaves: 2, Idle: 5 * time.Minute, StateDir: dir})
	n := startNode(t, "-f", writeConfig(t, yaml))
	f := &flc{t: t, n: n, c: client(8)}
	f.create("re", fmt.Sprintf(`{"params": %d, "updates": 3, "rounds": 4}`, params))
	rng := rand.New(rand.NewPCG(21, 5))
	ups, samples := randomRound(rng, 3, params, 50)
	f.sendRound("re", 1, ups, samples, nil)
	m1 := f.model("re", 1)
	checkFedAvg(t, "round 1", m1, ups, samples)
	// One update of round 2 in, then the top dies.
	if st, b := f.update("re", 2, "c0", 1, randomUpdate(rng, params)); st != http.StatusOK {
		t.Fatalf("round 2, before the kill: %d %s", st, b)
	}
	time.Sleep(300 * time.Millisecond) // the save is written off the top's lock
	killed := false
	for _, in := range findFunction(t, findApp(t, n.mustStatus(), "fl"), "fl-top").Instances {
		if in.PID > 0 && syscall.Kill(in.PID, syscall.SIGKILL) == nil {
			killed = true
		}
	}
	if !killed {
		t.Fatal("no fl-top to kill")
	}
	// The new top serves the last model, exactly.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, b, err := f.try("GET", "/fl/re/model?round=1", nil)
		if err == nil && st == http.StatusOK {
			if !slices32Equal(floatsOf(b), m1) {
				t.Fatalf("the model of round 1 after the restart differs from before it")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no model of round 1 30s after the top was killed: %d %s %v\n%s", st, b, err, n.logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	s := f.status("re")
	if s.Round != 2 || len(s.Results) != 1 || s.Restarted == "" || s.Folded != 0 {
		t.Fatalf("after the restart: round %d, %d results, folded %d, restarted %q; want round 2, 1 result, 0 folded, a note", s.Round, len(s.Results), s.Folded, s.Restarted)
	}
	t.Logf("restarted: %s", s.Restarted)
	// The job goes on: round 2 from its start (c0 sends again).
	ups, samples = randomRound(rng, 3, params, 50)
	f.sendRound("re", 2, ups, samples, nil)
	checkFedAvg(t, "round 2 after the restart", f.model("re", 2), ups, samples)
	if st, b, _ := f.do("DELETE", "/fl/re", nil); st != http.StatusOK {
		t.Fatalf("delete: %d %s", st, b)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "re.*")); len(left) != 0 {
		t.Errorf("files of the deleted job left: %v", left)
	}
	n.waitFreeBuffersWithin("fl", 20*time.Second)
}
