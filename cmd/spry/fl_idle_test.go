package main

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/fl"
)

// Between rounds an FL node costs nothing: after a round of 4 MiB updates
// and model fetches, with the clients' connections kept alive, neither the
// daemon nor the top nor the leaves wake (no timer, no sweep, no poll) until
// the next round's updates come, and that round is FedAvg all the same.
func TestFLIdleBetweenRounds(t *testing.T) {
	const params = 1 << 20 // 4 MiB updates and models
	n, f := flNode(t, params)
	f.create("idle", `{"params": 1048576, "updates": 4}`)
	rng := rand.New(rand.NewPCG(15, 15))
	for r := 1; r <= 2; r++ {
		ups, samples := randomRound(rng, 4, params, 9)
		f.sendRound("idle", r, ups, samples, nil)
		// Every client fetches the model, on connections it keeps.
		var wg sync.WaitGroup
		models := make([][]float32, 4)
		for c := range models {
			wg.Add(1)
			go func() { defer wg.Done(); models[c] = f.model("idle", r) }()
		}
		wg.Wait()
		for _, m := range models {
			checkFedAvg(t, "round model", m, ups, samples)
		}
		if r == 2 {
			break
		}
		// Busy ticks run out 1.5 s after the last request; then nothing.
		settle(n.treeWakeups)
		sleepsQuietly(t, "the FL node between rounds (daemon, top, leaves)", n.treeWakeups, 4*time.Second, 6, 3)
	}
}

// A job's leaves start when it is made (the top asks for them before any
// update), and go when it ends by its ttl with no request: at once, not at
// an idle node's next tick.
func TestFLLeavesFollowJobs(t *testing.T) {
	yaml := fl.AppYAML(fl.AppOptions{Params: 1000, Uploads: 8, MaxLeaves: 2, Idle: 5 * time.Minute})
	if !strings.Contains(yaml, "idle: 30s") {
		t.Fatalf("no leaf scale.idle of 30s to shorten in the app:\n%s", yaml)
	}
	yaml = strings.Replace(yaml, "idle: 30s", "idle: 1s", 1)
	n := startNode(t, "-f", writeConfig(t, yaml))
	f := &flc{t: t, n: n, c: client(2)}
	n.waitInstances("fl", "fl-leaf", 0, 20*time.Second)

	f.create("warm", `{"params": 1000, "updates": 2, "ttl": "2s"}`)
	made := time.Now()
	n.waitInstances("fl", "fl-leaf", 1, 20*time.Second)
	t.Logf("a leaf ready %v after the job was made, before any update", time.Since(made).Round(time.Millisecond))
	if st := f.status("warm"); st.Leaves != 1 {
		t.Errorf("job status: %d leaves planned, want 1", st.Leaves)
	}

	// No request: the job ends at its ttl (2 s after the status above)
	// and the idle node lets its leaf go at once: far sooner than its
	// watcher's backstop tick.
	asked := time.Now()
	n.waitInstances("fl", "fl-leaf", 0, 30*time.Second)
	t.Logf("the leaf went %v after the job's last request (ttl 2s)", time.Since(asked).Round(time.Millisecond))
	if st, b, _ := f.do("GET", "/fl/warm", nil); st != http.StatusNotFound {
		t.Errorf("the job after its ttl: %d %s, want 404", st, b)
	}
}
