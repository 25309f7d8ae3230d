package load

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
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
	measured, ended := false, false
	res, err := Run(context.Background(), Config{Addr: addr, Requests: reqs, Connections: 4,
		Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond,
		OnMeasure: func() { measured = true }, OnEnd: func() { ended = true }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Requests < 50 || !measured || !ended {
		t.Fatalf("%d ok, %d errors (%s), hooks %v %v", res.Requests, res.Errors, res.FirstErr, measured, ended)
	}
	if res.ByName["a"].TotalCount() == 0 || res.ByName["b"].TotalCount() == 0 {
		t.Fatal("no latencies by name")
	}
	var sum uint64
	for _, v := range res.Timeline {
		sum += v
	}
	if sum != res.Requests {
		t.Errorf("timeline holds %d of %d answers", sum, res.Requests)
	}

	// A wrong answer is an error.
	reqs = append(reqs, Request{Raw: Build("POST", "/", addr, nil, []byte("bad")), WantStatus: 200, WantBody: []byte("BAD"), Name: "c"})
	res, err = Run(context.Background(), Config{Addr: addr, Requests: reqs, Connections: 2, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || !strings.Contains(res.FirstErr, "wrong body") {
		t.Fatalf("errors %d, first %q", res.Errors, res.FirstErr)
	}
}

// A server that takes 20 ms per request on one connection cannot keep up
// with 100 requests/s: open-loop latencies count the queueing (no
// coordinated omission), closed-loop ones do not.
func TestOpenLoopCountsQueueing(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Write([]byte("ok"))
	}))
	reqs := []Request{{Raw: Build("GET", "/", addr, nil, nil), WantStatus: 200, WantBody: []byte("ok")}}
	res, err := Run(context.Background(), Config{Addr: addr, Requests: reqs, Connections: 1,
		Duration: 600 * time.Millisecond, Schedule: &Constant{Rate: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if p99 := res.Quantile(99); p99 < 150*time.Millisecond {
		t.Errorf("open loop p99 %v: the queueing is hidden", p99)
	}
	if res.Late == 0 {
		t.Errorf("no late requests reported")
	}
	closed, _ := Run(context.Background(), Config{Addr: addr, Requests: reqs, Connections: 1, Duration: 300 * time.Millisecond})
	if p99 := closed.Quantile(99); p99 > 100*time.Millisecond {
		t.Errorf("closed loop p99 %v", p99)
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
	res, err := Run(context.Background(), Config{Addr: addr, Requests: reqs, Connections: 1,
		Duration: 200 * time.Millisecond, OnMeasure: func() { time.Sleep(300 * time.Millisecond) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Errors != 0 || res.Elapsed < 200*time.Millisecond {
		t.Fatalf("%d answered, %d errors in %v", res.Requests, res.Errors, res.Elapsed)
	}
}

// A request in flight during the measurement that fails counts as an
// error even when it fails after the measurement ended: a system that
// hangs fails exactly those (each connection's request times out), and it
// used to read as 0 answered and 0 errors. One answered correctly after
// the end is Overtime, not an error, nor in the throughput.
func TestFailuresAfterTheEndCount(t *testing.T) {
	release := make(chan struct{})
	var hang atomic.Bool
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Write([]byte("ok"))
	}))
	defer close(release)
	reqs := []Request{{Raw: Build("GET", "/", addr, nil, nil), WantStatus: 200, WantBody: []byte("ok")}}
	hang.Store(true)
	res, err := Run(context.Background(), Config{Addr: addr, Requests: reqs, Connections: 2,
		Duration: 100 * time.Millisecond, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 0 || res.Errors != 2 || !strings.Contains(res.FirstErr, "timeout") {
		t.Fatalf("hung server: %d answered, %d errors (%s), want 0 and 2 timeouts", res.Requests, res.Errors, res.FirstErr)
	}
	// Slow, not hung: answered after the end.
	slow := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		w.Write([]byte("ok"))
	}))
	reqs = []Request{{Raw: Build("GET", "/", slow, nil, nil), WantStatus: 200, WantBody: []byte("ok")}}
	res, err = Run(context.Background(), Config{Addr: slow, Requests: reqs, Connections: 2, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 0 || res.Errors != 0 || res.Overtime == 0 {
		t.Fatalf("slow server: %d answered, %d errors, %d overtime", res.Requests, res.Errors, res.Overtime)
	}
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
