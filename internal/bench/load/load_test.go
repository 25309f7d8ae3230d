package load

import (
	"cmp"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHistogramPercentiles(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 1000; i++ {
		h.RecordValue(int64(i) * int64(time.Microsecond))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{50, 500 * time.Microsecond}, {99, 990 * time.Microsecond}, {99.9, 999 * time.Microsecond}, {100, 1000 * time.Microsecond}} {
		got := time.Duration(h.ValueAtQuantile(c.q))
		if d := got - c.want; d < -c.want/500 || d > c.want/500 {
			t.Errorf("p%v = %v, want %v (±0.2%%)", c.q, got, c.want)
		}
	}
	if Millis(h, 50) < 0.49 || Millis(h, 50) > 0.51 {
		t.Errorf("Millis(p50) = %v", Millis(h, 50))
	}
}

func TestSchedules(t *testing.T) {
	c := &Constant{Rate: 1000}
	for i := range 5 {
		if off, _ := c.Next(); off != time.Duration(i)*time.Millisecond {
			t.Fatalf("constant %d: %v", i, off)
		}
	}
	p := &Poisson{Rate: 1000, Seed: 1}
	var last time.Duration
	n := 0
	for {
		off, _ := p.Next()
		if off < last {
			t.Fatal("poisson went back in time")
		}
		last = off
		if off >= time.Second {
			break
		}
		n++
	}
	if n < 900 || n > 1100 {
		t.Errorf("poisson: %d arrivals in 1 s at rate 1000", n)
	}
	b := &Bursts{Every: time.Second, Size: 4, Spread: 100 * time.Millisecond}
	want := []time.Duration{0, 25 * time.Millisecond, 50 * time.Millisecond, 75 * time.Millisecond, time.Second}
	for i, w := range want {
		if off, _ := b.Next(); off != w {
			t.Fatalf("burst %d: %v, want %v", i, off, w)
		}
	}
}

func serve(t *testing.T, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// runUntil runs c until ok holds of the result, at most 5 times: on a
// machine other work saturates, the generator's threads can be kept off
// the CPU for a whole short window (nothing in flight during it), which
// says nothing of the generator. Every run's result goes to check first.
func runUntil(t *testing.T, c Config, check func(*Result), ok func(*Result) bool) *Result {
	t.Helper()
	for i := 1; ; i++ {
		res, err := Run(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		check(res)
		if ok(res) || t.Failed() {
			return res
		}
		if i == 5 {
			t.Fatalf("5 runs of %v starved: %d answered, %d errors, %d overtime", c.Duration, res.Requests, res.Errors, res.Overtime)
		}
		t.Logf("run %d starved (%d answered, %d errors, %d overtime in %v): again", i, res.Requests, res.Errors, res.Overtime, c.Duration)
	}
}

func TestClosedLoopChecksEveryAnswer(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // forces chunked encoding
		}
		if string(b) == "bad" {
			w.Write([]byte("wrong"))
			return
		}
		w.Write([]byte(strings.ToUpper(string(b))))
	}))
	reqs := []Request{
		{Raw: Build("POST", "/", addr, nil, []byte("hello")), WantStatus: 200, WantBody: []byte("HELLO"), Name: "a"},
		{Raw: Build("POST", "/chunked", addr, [][2]string{{"X-A", "1"}}, []byte("big")), WantStatus: 200, WantBody: []byte("BIG"), Name: "b"},
	}
	var measured, ended bool
	c := Config{Addr: addr, Requests: reqs, Connections: 4, Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond,
		OnMeasure: func() { measured = true }, OnEnd: func() { ended = true }}
	runUntil(t, c, func(res *Result) {
		if res.Errors != 0 || !measured || !ended {
			t.Errorf("%d ok, %d errors (%s), hooks %v %v", res.Requests, res.Errors, res.FirstErr, measured, ended)
		}
		measured, ended = false, false
		// Every answer is in the timeline, which counts from the
		// measurement's start however late that was marked.
		var sum uint64
		for _, v := range res.Timeline {
			sum += v
		}
		if sum != res.Requests {
			t.Errorf("timeline holds %d of %d answers", sum, res.Requests)
		}
		if n := uint64(res.ByName["a"].TotalCount() + res.ByName["b"].TotalCount()); n != res.Requests {
			t.Errorf("latencies by name hold %d of %d answers", n, res.Requests)
		}
	}, func(res *Result) bool { return res.ByName["a"].TotalCount() > 0 && res.ByName["b"].TotalCount() > 0 })

	// A wrong answer is an error: with only wrong answers, every request
	// in flight during the window is one, and none counts as answered.
	bad := []Request{{Raw: Build("POST", "/", addr, nil, []byte("bad")), WantStatus: 200, WantBody: []byte("BAD"), Name: "c"}}
	c = Config{Addr: addr, Requests: bad, Connections: 2, Duration: 200 * time.Millisecond}
	runUntil(t, c, func(res *Result) {
		if res.Requests != 0 || res.Overtime != 0 || res.Errors != 0 && !strings.HasPrefix(res.FirstErr, "c: wrong body") {
			t.Errorf("%d answered, %d overtime, %d errors, first %q", res.Requests, res.Overtime, res.Errors, res.FirstErr)
		}
	}, func(res *Result) bool { return res.Errors > 0 })
}

// A server that takes 20 ms per request on one connection cannot keep up
// with 100 requests/s: open-loop latencies count the queueing (no
// coordinated omission), closed-loop ones do not. The bounds follow from
// the server's least time per request, so a slow machine (which only adds
// to it) cannot break them.
func TestOpenLoopCountsQueueing(t *testing.T) {
	const service = 20 * time.Millisecond
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(service)
		w.Write([]byte("ok"))
	}))
	reqs := []Request{{Raw: Build("GET", "/", addr, nil, nil), WantStatus: 200, WantBody: []byte("ok")}}
	const rate, window = 100, 600 * time.Millisecond
	res, err := Run(context.Background(), Config{Addr: addr, Requests: reqs, Connections: 1,
		Duration: window, Schedule: &Constant{Rate: rate}, Record: true})
	if err != nil {
		t.Fatal(err)
	}
	// Every request due in the window is accounted for once: answered in
	// it, answered after it, failed, or never sent (late). One connection
	// at 20 ms or more each cannot send them all.
	due := uint64(window.Seconds() * rate)
	if got := res.Requests + res.Overtime + res.Errors + res.Late; got != due || res.Errors != 0 || res.Late == 0 {
		t.Errorf("answered %d + overtime %d + errors %d (%s) + late %d = %d, want the %d due, some late",
			res.Requests, res.Overtime, res.Errors, res.FirstErr, res.Late, got, due)
	}
	// One connection serves them in turn, at least 20 ms each: the k-th
	// answer (from 0) comes at least (k+1)·20 ms after the start, while
	// the request was due at k·10 ms. Its latency counts from when it
	// was due, so it grows by at least 10 ms per answer; counted from
	// when it was sent (coordinated omission) it would stay near 20 ms.
	samples := slices.SortedFunc(slices.Values(res.Samples), func(a, b Sample) int { return cmp.Compare(a.Due, b.Due) })
	if uint64(len(samples)) != res.Requests || uint64(res.Hist.TotalCount()) != res.Requests {
		t.Fatalf("%d samples, %d latencies for %d answered", len(samples), res.Hist.TotalCount(), res.Requests)
	}
	sched := &Constant{Rate: rate}
	var floor time.Duration
	for k, s := range samples {
		if off, _ := sched.Next(); s.Due != off {
			t.Fatalf("answer %d: due at %v, want the schedule's %v", k, s.Due, off)
		}
		floor = time.Duration(k+1)*service - s.Due
		if s.Done-s.Due < floor {
			t.Fatalf("answer %d: latency %v, less than the %v it queued and ran", k, s.Done-s.Due, floor)
		}
	}
	// The histogram holds those latencies (to its 3 significant digits).
	if top := time.Duration(res.Hist.Max()); len(samples) > 0 && top < floor-floor/500 {
		t.Errorf("open loop: largest latency %v, want at least %v: the queueing is hidden", top, floor)
	}
	if len(samples) < 2 {
		t.Logf("only %d answered in the window (a busy machine): no queueing to see", len(samples))
	}

	// Closed loop: one connection's requests do not overlap and each
	// counts from when it was sent, so their latencies add up to no more
	// than the window, and none is below the server's time.
	closed, err := Run(context.Background(), Config{Addr: addr, Requests: reqs, Connections: 1, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if n := closed.Hist.TotalCount(); n > 0 {
		if sum := time.Duration(closed.Hist.Mean() * float64(n)); sum > closed.Elapsed+closed.Elapsed/100 {
			t.Errorf("closed loop: %d latencies add up to %v in a %v window", n, sum, closed.Elapsed)
		}
		if low := time.Duration(closed.Hist.Min()); low < service-service/500 {
			t.Errorf("closed loop: latency %v, below the server's %v", low, service)
		}
	}
}

// The measurement lasts Duration from when it starts, however long
// OnMeasure takes (it reads /proc for every process of the system under
// test, which on a busy machine takes a while): it used to end Duration
// after the run began, so a slow OnMeasure left no window at all, and the
// run reported 0 answered and 0 errors.
func TestSlowOnMeasureKeepsTheWindow(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	reqs := []Request{{Raw: Build("GET", "/", addr, nil, nil), WantStatus: 200, WantBody: []byte("ok")}}
	c := Config{Addr: addr, Requests: reqs, Connections: 1,
		Duration: 200 * time.Millisecond, OnMeasure: func() { time.Sleep(300 * time.Millisecond) }}
	runUntil(t, c, func(res *Result) {
		if res.Errors != 0 || res.Elapsed < c.Duration {
			t.Errorf("%d answered, %d errors in %v", res.Requests, res.Errors, res.Elapsed)
		}
		// The timeline counts from the window's start too, not from
		// when it was planned (300 ms before: every answer off its end).
		var sum uint64
		for _, v := range res.Timeline {
			sum += v
		}
		if sum != res.Requests {
			t.Errorf("timeline holds %d of %d answers", sum, res.Requests)
		}
	}, func(res *Result) bool { return res.Requests > 0 })
}

// A request in flight during the measurement that fails counts as an
// error even when it fails after the measurement ended: a system that
// hangs fails exactly those (each connection's request times out), and it
// used to read as 0 answered and 0 errors. One answered correctly after
// the end is Overtime, not an error, nor in the throughput.
func TestFailuresAfterTheEndCount(t *testing.T) {
	release := make(chan struct{})
	var (
		mu   sync.Mutex
		held []time.Time // when the hung server took each request
	)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		held = append(held, time.Now())
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Write([]byte("ok"))
	}))
	defer close(release)
	reqs := []Request{{Raw: Build("GET", "/", addr, nil, nil), WantStatus: 200, WantBody: []byte("ok")}}
	c := Config{Addr: addr, Requests: reqs, Connections: 2, Duration: 100 * time.Millisecond, Timeout: 300 * time.Millisecond}
	runUntil(t, c, func(res *Result) {
		// Each request the server took during the window was in flight
		// in it (a starved connection may send its first after it).
		mu.Lock()
		in := 0
		for _, at := range held {
			if !at.Before(res.Start) && !at.After(res.Start.Add(res.Elapsed)) {
				in++
			}
		}
		held = held[:0]
		mu.Unlock()
		if res.Requests != 0 || res.Errors < uint64(in) || res.Errors > 2 || res.Errors > 0 && !strings.Contains(res.FirstErr, "timeout") {
			t.Errorf("hung server: %d answered, %d errors (%s), want 0 and a timeout for each of the %d it held in the window",
				res.Requests, res.Errors, res.FirstErr, in)
		}
	}, func(res *Result) bool { return res.Errors > 0 })
	// Slow, not hung: answered after the end (never inside: each takes
	// longer than the window).
	slow := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		w.Write([]byte("ok"))
	}))
	reqs = []Request{{Raw: Build("GET", "/", slow, nil, nil), WantStatus: 200, WantBody: []byte("ok")}}
	c = Config{Addr: slow, Requests: reqs, Connections: 2, Duration: 100 * time.Millisecond}
	runUntil(t, c, func(res *Result) {
		if res.Requests != 0 || res.Errors != 0 {
			t.Errorf("slow server: %d answered, %d errors, %d overtime", res.Requests, res.Errors, res.Overtime)
		}
	}, func(res *Result) bool { return res.Overtime > 0 })
}

// A request that wants only a prefix of its answer (the demo's wrap ends
// in measured durations) accepts any tail, and still refuses a wrong head.
func TestPrefixAnswers(t *testing.T) {
	r := Request{WantBody: []byte(`{"message":"YRPS","hops":3,"hop_us":[`), WantPrefix: true}
	for body, ok := range map[string]bool{
		`{"message":"YRPS","hops":3,"hop_us":[12.5,8.1]}`: true,
		`{"message":"YRPS","hops":3,"hop_us":[]}`:         true,
		`{"message":"SPRY","hops":3,"hop_us":[12.5,8.1]}`: false,
		`{"message":"YRPS"`:                               false,
	} {
		if got := r.answers([]byte(body)); got != ok {
			t.Errorf("prefix %q: answers(%q) = %v", r.WantBody, body, got)
		}
	}
	r.WantPrefix = false
	if r.answers([]byte(`{"message":"YRPS","hops":3,"hop_us":[1]}`)) || !r.answers(r.WantBody) {
		t.Error("exact match: a longer body passed or the body itself did not")
	}
}

// dial connects, and reports a refused connection as such.
func TestDial(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	c, err := dial(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	ln.Close()
	if c, err := dial(addr, time.Second); err == nil {
		c.Close()
		t.Fatal("dial to a closed port succeeded")
	} else if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to a closed port: %v, want connection refused", err)
	}
}

// TestAddrsSpreadConnections: with Addrs the connections go to every
// address in turn, and each one's requests are answered there.
func TestAddrsSpreadConnections(t *testing.T) {
	var hits [3]atomic.Int64
	addrs := make([]string, len(hits))
	for i := range hits {
		addrs[i] = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i].Add(1)
			w.Write([]byte("ok"))
		}))
	}
	reqs := []Request{{Raw: Build("GET", "/", "spread", nil, nil), WantStatus: 200, WantBody: []byte("ok")}}
	res, err := Run(context.Background(), Config{Addrs: addrs, Requests: reqs, Connections: 6, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Fatalf("%d errors: %s", res.Errors, res.FirstErr)
	}
	for i := range hits {
		if hits[i].Load() == 0 {
			t.Errorf("address %d got no request (hits %d %d %d)", i, hits[0].Load(), hits[1].Load(), hits[2].Load())
		}
	}
}
