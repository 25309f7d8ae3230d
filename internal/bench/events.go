package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spry-dev/spry/internal/bench/load"
	"github.com/spry-dev/spry/internal/bench/proc"
)

// spry bench async: on one node and one chain, in the same run, the
// synchronous req/s, the asynchronous invocations accepted per second
// (durable: each 202 is sent once the activation is on disk), the
// end-to-end completion latency of asynchronous work (accepted → finished,
// from the records), and the synchronous req/s of a twin node whose chain
// records nothing (record: none), for the recorder's cost on the sync
// path. Modes take turns for Rounds rounds; medians are reported.

// AsyncOptions configure spry bench async.
type AsyncOptions struct {
	Duration    time.Duration // measured per phase and round
	Rounds      int
	Connections int
	Payload     int // body bytes
	Exe, Dir    string
	Log         io.Writer
}

// AsyncRound is one round's numbers.
type AsyncRound struct {
	SyncRPS       float64 `json:"syncRps"`      // the chain, synchronous, record: failures (default)
	SyncNoRecRPS  float64 `json:"syncNoRecRps"` // the same on the twin node, record: none
	AcceptedPS    float64 `json:"acceptedPs"`   // Prefer: respond-async, 202s per second
	CompletedPS   float64 `json:"completedPs"`  // accepted activations finished per second (until the backlog drained)
	LatencyRate   float64 `json:"latencyRate"`  // the open-loop rate the latency was measured at
	CompletionP50 float64 `json:"completionP50Ms"`
	CompletionP99 float64 `json:"completionP99Ms"`
	AcceptP50     float64 `json:"acceptP50Ms"` // the 202's latency at that rate
	AcceptP99     float64 `json:"acceptP99Ms"`
	Batch         float64 `json:"storeBatch"`   // writes per commit of the store
	FlushMs       float64 `json:"storeFlushMs"` // ms per commit
	CPUPerSyncUs  float64 `json:"cpuPerSyncUs"`
	CPUPerAsyncUs float64 `json:"cpuPerAsyncUs"` // accept + run, per activation
}

// AsyncReport is spry bench async's result.
type AsyncReport struct {
	Machine     Machine      `json:"machine"`
	Connections int          `json:"connections"`
	Payload     int          `json:"payload"`
	Duration    string       `json:"duration"`
	Chain       string       `json:"chain"`
	Rounds      []AsyncRound `json:"rounds"`
	// Medians over the rounds, and the ratios of the medians' rounds.
	Median        AsyncRound `json:"median"`
	AsyncToSync   float64    `json:"asyncToSync"`   // accepted/s ÷ sync req/s (goal ≥ 0.5)
	RecorderRatio float64    `json:"recorderRatio"` // sync req/s with the default recorder ÷ with none (goal ≥ 0.97)
}

const asyncYAML = `app: bench
pool: {buffers: 4096, bufferSize: 4KiB}
limits: {inflight: 2048, async: 256}
functions:
  upper: {builtin: upper, instances: 2}
  reverse: {builtin: reverse, instances: 2}
chains:
  work:
    route: /work
    steps: [upper, reverse]
    methods: [POST]
    record: %s
    async: {queue: 1000000}
activations:
  retention: {count: 1000000}
`

// RunAsync runs spry bench async.
func RunAsync(ctx context.Context, o AsyncOptions) (*AsyncReport, error) {
	o.Rounds = max(o.Rounds, 1)
	if o.Connections < 1 {
		o.Connections = 32
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Payload <= 0 {
		o.Payload = 64
	}
	logf := lineLogger(o.Log)
	cleanup, err := workspace(&o.Exe, &o.Dir, "spry-bench-async-")
	defer cleanup()
	if err != nil {
		return nil, err
	}
	var nodes [2]*spryNode
	for i, rec := range []string{"failures", "none"} {
		n, err := startNode(o.Exe, filepath.Join(o.Dir, "node-"+rec), "spry ("+rec+")", fmt.Sprintf(asyncYAML, rec))
		if err != nil {
			return nil, err
		}
		defer n.shutdown()
		if err := n.waitUp(ctx, 60*time.Second, func() error { _, err := fetchStatus(n.admin); return err }); err != nil {
			return nil, err
		}
		nodes[i] = n
	}
	body := make([]byte, o.Payload)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	want := make([]byte, len(body))
	for i, c := range body {
		want[len(body)-1-i] = c - 'a' + 'A'
	}
	syncReq := []load.Request{{Raw: load.Build("POST", "/work", "bench", nil, body), WantStatus: 200, WantBody: want, Name: "work"}}
	asyncReq := []load.Request{{Raw: load.Build("POST", "/work", "bench", [][2]string{{"Prefer", "respond-async"}}, body),
		WantStatus: 202, WantBody: []byte(`{"id":"`), WantPrefix: true, Name: "work"}}
	rep := &AsyncReport{Machine: machine(), Connections: o.Connections, Payload: o.Payload, Duration: o.Duration.String(), Chain: "upper → reverse"}
	logf("bench async: chain upper → reverse, %d B, %d connections, %s per phase, %d round(s)", o.Payload, o.Connections, o.Duration, o.Rounds)

	run := func(n *spryNode, reqs []load.Request, sched load.Schedule, d time.Duration) (*load.Result, time.Duration, error) {
		pids := proc.Descendants(n.pid())
		var cpu0, cpu1 time.Duration
		res, err := load.Run(ctx, load.Config{
			Addr: n.addr, Requests: reqs, Connections: o.Connections, Warmup: min(2*time.Second, d/4), Duration: d, Schedule: sched,
			OnMeasure: func() { cpu0 = proc.CPUOf(pids) }, OnEnd: func() { cpu1 = proc.CPUOf(pids) },
		})
		if err == nil && res.Errors > 0 && res.Requests == 0 {
			err = fmt.Errorf("every request failed: %s", res.FirstErr)
		}
		return res, cpu1 - cpu0, err
	}
	for r := range o.Rounds {
		var rd AsyncRound
		res, cpu, err := run(nodes[0], syncReq, nil, o.Duration)
		if err != nil {
			return nil, fmt.Errorf("sync: %w", err)
		}
		rd.SyncRPS = res.RPS()
		rd.CPUPerSyncUs = perUs(cpu, res.Requests)
		if res, _, err = run(nodes[1], syncReq, nil, o.Duration); err != nil {
			return nil, fmt.Errorf("sync (record: none): %w", err)
		}
		rd.SyncNoRecRPS = res.RPS()

		// Accepted per second, closed loop, then until the backlog is
		// done. The CPU counts accepting and running every activation.
		n := nodes[0]
		pids := proc.Descendants(n.pid())
		cpu0 := proc.CPUOf(pids)
		began := time.Now()
		if res, _, err = run(n, asyncReq, nil, o.Duration); err != nil {
			return nil, fmt.Errorf("async: %w", err)
		}
		rd.AcceptedPS = res.RPS()
		accepted, err := drain(ctx, n.admin, 5*time.Minute)
		if err != nil {
			return nil, err
		}
		rd.CompletedPS = float64(accepted) / time.Since(began).Seconds()
		rd.CPUPerAsyncUs = perUs(proc.CPUOf(pids)-cpu0, uint64(accepted))
		if st, err := storeStats(n.admin); err == nil {
			rd.Batch, rd.FlushMs = st.Batch, st.FlushMs
		}

		// Completion latency at half the rate the node accepts (open
		// loop, below saturation): accepted → finished, from the records'
		// own times.
		rd.LatencyRate = min(rd.SyncRPS, rd.AcceptedPS) / 2
		since := time.Now()
		d := max(o.Duration/2, 2*time.Second)
		res, _, err = run(n, asyncReq, &load.Constant{Rate: rd.LatencyRate}, d)
		if err != nil {
			return nil, fmt.Errorf("async latency: %w", err)
		}
		rd.AcceptP50, rd.AcceptP99 = load.Millis(res.Hist, 50), load.Millis(res.Hist, 99)
		if _, err := drain(ctx, n.admin, 5*time.Minute); err != nil {
			return nil, err
		}
		lat, err := completionTimes(n.admin, since)
		if err != nil {
			return nil, err
		}
		rd.CompletionP50, rd.CompletionP99 = pct(lat, 50), pct(lat, 99)
		rep.Rounds = append(rep.Rounds, rd)
		logf("bench async: round %d/%d: sync %.0f req/s (record none %.0f), async accepted %.0f/s (%.2fx), completed %.0f/s; at %.0f/s: completion p50 %.2f ms p99 %.2f ms; store %.1f writes/commit, %.2f ms/commit",
			r+1, o.Rounds, rd.SyncRPS, rd.SyncNoRecRPS, rd.AcceptedPS, rd.AcceptedPS/rd.SyncRPS, rd.CompletedPS, rd.LatencyRate,
			rd.CompletionP50, rd.CompletionP99, rd.Batch, rd.FlushMs)
	}
	med := func(f func(AsyncRound) float64) float64 {
		var v []float64
		for _, r := range rep.Rounds {
			v = append(v, f(r))
		}
		return median(v)
	}
	rep.Median = AsyncRound{
		SyncRPS: med(func(r AsyncRound) float64 { return r.SyncRPS }), SyncNoRecRPS: med(func(r AsyncRound) float64 { return r.SyncNoRecRPS }),
		AcceptedPS: med(func(r AsyncRound) float64 { return r.AcceptedPS }), CompletedPS: med(func(r AsyncRound) float64 { return r.CompletedPS }),
		LatencyRate:   med(func(r AsyncRound) float64 { return r.LatencyRate }),
		CompletionP50: med(func(r AsyncRound) float64 { return r.CompletionP50 }), CompletionP99: med(func(r AsyncRound) float64 { return r.CompletionP99 }),
		AcceptP50: med(func(r AsyncRound) float64 { return r.AcceptP50 }), AcceptP99: med(func(r AsyncRound) float64 { return r.AcceptP99 }),
		Batch: med(func(r AsyncRound) float64 { return r.Batch }), FlushMs: med(func(r AsyncRound) float64 { return r.FlushMs }),
		CPUPerSyncUs: med(func(r AsyncRound) float64 { return r.CPUPerSyncUs }), CPUPerAsyncUs: med(func(r AsyncRound) float64 { return r.CPUPerAsyncUs }),
	}
	rep.AsyncToSync = med(func(r AsyncRound) float64 { return r.AcceptedPS / r.SyncRPS })
	rep.RecorderRatio = med(func(r AsyncRound) float64 { return r.SyncRPS / r.SyncNoRecRPS })
	return rep, nil
}

func perUs(cpu time.Duration, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(n)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// eventsStatus is the part of /v1/status the events benchmarks read.
type eventsStatus struct {
	Events struct {
		Store struct {
			Writes  uint64  `json:"writes"`
			Batch   float64 `json:"batch"`
			FlushMs float64 `json:"flushMs"`
		} `json:"store"`
		Chains []struct {
			Depth     int64  `json:"queueDepth"`
			Accepted  uint64 `json:"accepted"`
			Succeeded uint64 `json:"succeeded"`
		} `json:"chains"`
	} `json:"events"`
}

func fetchEvents(admin string) (*eventsStatus, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s eventsStatus
	return &s, json.NewDecoder(resp.Body).Decode(&s)
}

type storeStat struct{ Batch, FlushMs float64 }

func storeStats(admin string) (storeStat, error) {
	s, err := fetchEvents(admin)
	if err != nil {
		return storeStat{}, err
	}
	return storeStat{s.Events.Store.Batch, s.Events.Store.FlushMs}, nil
}

// drain waits until no activation is unfinished and returns how many were
// accepted since the last drain.
var lastAccepted = map[string]uint64{}

func drain(ctx context.Context, admin string, within time.Duration) (uint64, error) {
	deadline := time.Now().Add(within)
	for {
		s, err := fetchEvents(admin)
		if err != nil {
			return 0, err
		}
		var depth int64
		var acc uint64
		for _, c := range s.Events.Chains {
			depth += c.Depth
			acc += c.Accepted
		}
		if depth == 0 {
			n := acc - lastAccepted[admin]
			lastAccepted[admin] = acc
			return n, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("bench: %d activations still unfinished after %v", depth, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// completionTimes returns accepted → end of every async activation
// accepted since t, in ms, from the records.
func completionTimes(admin string, since time.Time) ([]float64, error) {
	var out []float64
	before := ""
	for {
		u := "http://" + admin + "/v1/activations?limit=1000&since=" + since.UTC().Format(time.RFC3339Nano)
		if before != "" {
			u += "&before=" + before
		}
		resp, err := http.Get(u)
		if err != nil {
			return nil, err
		}
		var page struct {
			Activations []struct {
				Cause    struct{ Kind string } `json:"cause"`
				State    string                `json:"state"`
				Accepted time.Time             `json:"accepted"`
				End      time.Time             `json:"end"`
			} `json:"activations"`
			Next string `json:"next"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		for _, a := range page.Activations {
			if a.Cause.Kind == "async" && a.State == "succeeded" {
				out = append(out, float64(a.End.Sub(a.Accepted).Microseconds())/1000)
			}
		}
		if page.Next == "" {
			return out, nil
		}
		before = page.Next
	}
}

// WriteAsyncReport writes report.json and report.md into dir.
func WriteAsyncReport(dir string, r *AsyncReport) error {
	var b strings.Builder
	m := r.Median
	fmt.Fprintf(&b, "# spry bench async\n\n%s, %d cores; chain %s, %d B bodies, %d connections, %s per phase, %d round(s) (medians).\n\n",
		r.Machine.CPU, r.Machine.Cores, r.Chain, r.Payload, r.Connections, r.Duration, len(r.Rounds))
	fmt.Fprintf(&b, "| | per second | CPU µs each |\n| --- | --- | --- |\n")
	fmt.Fprintf(&b, "| sync requests (record: failures, the default) | %.0f | %.1f |\n", m.SyncRPS, m.CPUPerSyncUs)
	fmt.Fprintf(&b, "| sync requests (record: none) | %.0f | |\n", m.SyncNoRecRPS)
	fmt.Fprintf(&b, "| async invocations accepted (durable 202) | %.0f | |\n", m.AcceptedPS)
	fmt.Fprintf(&b, "| async invocations completed | %.0f | %.1f |\n\n", m.CompletedPS, m.CPUPerAsyncUs)
	fmt.Fprintf(&b, "- accepted async ÷ sync: **%.2fx** (goal ≥ 0.5)\n", r.AsyncToSync)
	fmt.Fprintf(&b, "- sync with the default recorder ÷ without: **%.3f** (goal ≥ 0.97)\n", r.RecorderRatio)
	fmt.Fprintf(&b, "- at %.0f async/s (open loop): 202 p50 %.2f ms, p99 %.2f ms; completion (accepted → finished) p50 %.2f ms, p99 %.2f ms\n",
		m.LatencyRate, m.AcceptP50, m.AcceptP99, m.CompletionP50, m.CompletionP99)
	fmt.Fprintf(&b, "- store: %.1f writes per commit, %.2f ms per commit\n", m.Batch, m.FlushMs)
	if err := writeJSON(dir, r); err != nil {
		return err
	}
	return writeMarkdown(dir, func(w io.Writer) { io.WriteString(w, b.String()) })
}
