// Package load is the benchmark's load generator: keep-alive HTTP/1.1
// connections that send prepared requests, check every answer, and record
// latencies in HDR histograms.
//
// Closed loop: each of N connections sends its next request as soon as the
// last one is answered. Open loop: requests are due at times fixed in
// advance (a constant rate, Poisson arrivals, or bursts); a connection that
// is free takes the next due request, and its latency is measured from the
// time it was due, not from when it could be sent, so a slow server cannot
// hide its queueing (no coordinated omission).
//
//	res, err := load.Run(ctx, load.Config{Addr: "127.0.0.1:8080", Requests: reqs,
//		Connections: 8, Warmup: time.Second, Duration: 10 * time.Second,
//		OnMeasure: func() { before = proc.Take(pids) }})
//	res.Hist.ValueAtQuantile(99)  // nanoseconds
package load

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: 100 ns to 2 minutes, 3 significant digits.
const (
	histMin = 100
	histMax = int64(2 * time.Minute)
)

// NewHistogram makes a latency histogram (values in nanoseconds).
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMin, histMax, 3)
}

// Schedule says when open-loop requests are due: Next returns the offset
// of the next request from the start of the measurement, and false when
// there are no more. Next is called under a lock.
type Schedule interface {
	Next() (time.Duration, bool)
}

// Constant is a fixed rate (requests per second).
type Constant struct {
	Rate float64
	i    int64
}

func (c *Constant) Next() (time.Duration, bool) {
	t := time.Duration(float64(c.i) / c.Rate * float64(time.Second))
	c.i++
	return t, true
}

// Poisson is a Poisson process of the given mean rate.
type Poisson struct {
	Rate float64
	Seed uint64
	t    float64
	r    *rand.Rand
}

func (p *Poisson) Next() (time.Duration, bool) {
	if p.r == nil {
		p.r = rand.New(rand.NewPCG(p.Seed, 0x5eed))
	}
	t := p.t
	p.t += p.r.ExpFloat64() / p.Rate
	return time.Duration(t * float64(time.Second)), true
}

// Bursts sends Size requests every Every, spread evenly over Spread.
type Bursts struct {
	Every  time.Duration
	Size   int
	Spread time.Duration
	i      int
}

func (b *Bursts) Next() (time.Duration, bool) {
	k, j := b.i/b.Size, b.i%b.Size
	b.i++
	return time.Duration(k)*b.Every + time.Duration(j)*b.Spread/time.Duration(b.Size), true
}

// Config is one load run.
type Config struct {
	Addr string
	// Addrs, when set, spread the connections over these addresses in
	// turn (connection i to Addrs[i mod len]); Addr is then unused.
	Addrs       []string
	Requests    []Request
	Mix         []int // indexes into Requests, cycled; nil: each in turn
	Connections int
	Warmup      time.Duration // closed loop, not recorded
	Duration    time.Duration // measured
	Schedule    Schedule      // nil: closed loop
	Timeout     time.Duration // per request (default 10 s)
	// OnMeasure is called when the warm-up ends and the measurement
	// starts; OnEnd when it ends (before in-flight requests finish).
	OnMeasure, OnEnd func()
	// Tick is the width of a timeline bucket (default 100 ms).
	Tick time.Duration
	// Record keeps every measured request's due and completion times in
	// Result.Samples (open loop: for accounting by time, e.g. per second
	// of a replayed trace).
	Record bool
	// Proto is the protocol the connections speak (Proto*; default
	// HTTP/1.1).
	Proto string
}

// Sample is one measured request: when it was due and when its answer
// (or failure) came, as offsets from the start of the measurement. Its
// latency is Done − Due.
type Sample struct {
	Due, Done time.Duration
	Failed    bool
}

// Result is what a run measured.
type Result struct {
	Requests uint64 // due in the measurement and answered correctly within it
	// Errors counts requests that failed (transport error, timeout, wrong
	// status or body) and were in flight at some time during the
	// measurement: one sent before it or answered after it counts too,
	// since a system that hangs fails exactly those.
	Errors uint64
	// Overtime counts requests in flight during the measurement that were
	// answered correctly but not wholly inside it (sent before it began,
	// or answered after it ended): not in Requests, nor in the latencies.
	Overtime uint64
	Late     uint64        // open loop: due before the end but never sent
	Elapsed  time.Duration // the measurement's length
	Hist     *hdrhistogram.Histogram
	FirstErr string
	ByName   map[string]*hdrhistogram.Histogram // latency per request name
	// Timeline counts answers per Tick from the start of the measurement.
	Timeline []uint64
	Tick     time.Duration
	// Start is when the measurement began (open loop, the time the
	// schedule's offsets count from); Timeline and Samples count from it.
	Start time.Time
	// Samples are the measured requests, in no particular order, when
	// Config.Record is set.
	Samples []Sample
}

// RPS returns the measured throughput.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Quantile returns the latency at q (0..100) as a duration.
func (r *Result) Quantile(q float64) time.Duration {
	if r.Hist.TotalCount() == 0 {
		return 0
	}
	return time.Duration(r.Hist.ValueAtQuantile(q))
}

type worker struct {
	cl       doer
	hist     *hdrhistogram.Histogram
	byName   map[string]*hdrhistogram.Histogram
	ok, errs uint64
	over     uint64
	firstErr string
	timeline []uint64
	samples  []Sample
}

// Run runs the load described by c.
func Run(ctx context.Context, c Config) (*Result, error) {
	if len(c.Requests) == 0 || c.Connections < 1 || c.Duration <= 0 {
		return nil, fmt.Errorf("load: need requests, connections and a duration")
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Tick <= 0 {
		c.Tick = 100 * time.Millisecond
	}
	// Every connection's thread sleeps in read(2) holding a processor, and
	// the runtime takes a processor back from a blocked thread only after
	// a while: with as many processors as cores, a thread whose answer had
	// arrived could wait for one, and that wait would count as the
	// system's latency (it put up to ~10 ms on the p99 of 32 connections
	// on 2 cores). Twice the cores removes most of that wait without
	// letting the generator's threads take more CPU from the system under
	// test than it needs.
	if want := 2 * runtime.NumCPU(); runtime.GOMAXPROCS(0) < want {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(want))
	}
	mix := c.Mix
	if len(mix) == 0 {
		for i := range c.Requests {
			mix = append(mix, i)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		next     atomic.Uint64 // closed loop: next request of the mix
		measure  atomic.Int64  // start of the measurement (unix ns), 0 before
		end      atomic.Int64  // its end (unix ns), stored before measure
		stop     atomic.Bool
		schedMu  sync.Mutex
		schedIdx int
		unsent   atomic.Uint64 // open loop: taken from the schedule, due before the end, never sent
	)
	ticks := int(c.Duration/c.Tick) + 1
	if c.Proto != "" && c.Proto != ProtoHTTP1 {
		reqs := make([]Request, len(c.Requests))
		for i, r := range c.Requests {
			p, err := parseRaw(r.Raw)
			if err != nil {
				return nil, err
			}
			r.parsed = p
			reqs[i] = r
		}
		c.Requests = reqs
	}
	workers := make([]*worker, c.Connections)
	for i := range workers {
		addr := c.Addr
		if len(c.Addrs) > 0 {
			addr = c.Addrs[i%len(c.Addrs)]
		}
		cl, err := newDoer(c.Proto, addr, c.Timeout)
		if err != nil {
			return nil, err
		}
		defer cl.close()
		workers[i] = &worker{cl: cl, hist: NewHistogram(), byName: map[string]*hdrhistogram.Histogram{}, timeline: make([]uint64, ticks)}
		if c.Record {
			workers[i].samples = make([]Sample, 0, 4096)
		}
	}
	start := time.Now()
	// The measurement: open loop, the schedule's offsets count from
	// measureAt and what is due before endAt is sent. Closed loop, it
	// starts when the clock marks it (after OnMeasure, which may take a
	// while on a busy machine) and lasts Duration from there.
	measureAt := start.Add(c.Warmup)
	endAt := measureAt.Add(c.Duration)
	if c.Schedule != nil {
		end.Store(endAt.UnixNano())
	}

	// one sends request r, due at due (the send time in closed loop), and
	// records the outcome when the measurement is on.
	one := func(w *worker, r *Request, due time.Time) {
		status, body, err := w.cl.do(r)
		done := time.Now()
		if err == nil && status != r.WantStatus {
			err = fmt.Errorf("status %d, want %d: %.200q", status, r.WantStatus, body)
		}
		if err == nil && r.WantBody != nil && !r.answers(body) {
			err = fmt.Errorf("wrong body (%d bytes, want %d): %.200q", len(body), len(r.WantBody), body)
		}
		m := measure.Load()
		if c.Schedule != nil {
			// Open loop: what was due in the measurement counts, even if
			// it went out before the clock's goroutine marked the start.
			m = measureAt.UnixNano()
		}
		e := end.Load()
		if m == 0 || done.UnixNano() < m || due.UnixNano() > e {
			return // not in flight during the measurement
		}
		// Offsets count from the measurement's start: closed loop, when
		// the clock marked it, which on a busy machine may be well after
		// measureAt (a late timer, a slow OnMeasure).
		origin := time.Unix(0, m)
		inside := due.UnixNano() >= m && done.UnixNano() <= e
		if c.Record && inside {
			// Amortised growth from a preallocated slice: no allocation
			// on most requests.
			w.samples = append(w.samples, Sample{Due: due.Sub(origin), Done: done.Sub(origin), Failed: err != nil})
		}
		if err != nil {
			w.errs++
			if w.firstErr == "" {
				w.firstErr = describeErr(r.Name, err)
			}
			return
		}
		if !inside {
			w.over++ // answered, but not wholly inside the measurement
			return
		}
		w.ok++
		lat := done.Sub(due).Nanoseconds()
		w.hist.RecordValue(min(max(lat, histMin), histMax))
		h := w.byName[r.Name]
		if h == nil {
			h = NewHistogram()
			w.byName[r.Name] = h
		}
		h.RecordValue(min(max(lat, histMin), histMax))
		if k := int(done.Sub(origin) / c.Tick); k >= 0 && k < len(w.timeline) {
			w.timeline[k]++
		}
	}

	var wg sync.WaitGroup
	allDone := make(chan struct{})
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The connection blocks in read(2): give it its own thread.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			defer w.cl.close()
			// Warm-up and closed loop.
			for !stop.Load() && ctx.Err() == nil {
				if c.Schedule != nil && (measure.Load() != 0 || c.Warmup <= 0) {
					break
				}
				i := next.Add(1) - 1
				one(w, &c.Requests[mix[i%uint64(len(mix))]], time.Now())
			}
			if c.Schedule == nil {
				return
			}
			// Open loop.
			for !stop.Load() && ctx.Err() == nil {
				schedMu.Lock()
				off, ok := c.Schedule.Next()
				i := schedIdx
				schedIdx++
				schedMu.Unlock()
				due := measureAt.Add(off)
				if !ok || !due.Before(endAt) {
					return
				}
				if d := time.Until(due); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
						return
					}
				}
				if stop.Load() {
					// Its timer fired after the end (a busy machine):
					// due in the measurement but never sent, so late.
					unsent.Add(1)
					return
				}
				one(w, &c.Requests[mix[i%len(mix)]], due)
			}
		}()
	}

	go func() { wg.Wait(); close(allDone) }()

	// The clock: warm-up, measurement, end (or earlier, when a schedule
	// ran out and every connection is done).
	sleep := func(until time.Time) bool {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		select {
		case <-t.C:
		case <-allDone:
		case <-ctx.Done():
			return false
		}
		return true
	}
	if c.Warmup > 0 && !sleep(measureAt) {
		stop.Store(true)
		wg.Wait()
		return nil, ctx.Err()
	}
	if c.OnMeasure != nil {
		c.OnMeasure()
	}
	measured := time.Now()
	if c.Schedule == nil {
		endAt = measured.Add(c.Duration)
		end.Store(endAt.UnixNano())
	}
	measure.Store(measured.UnixNano())
	if !sleep(endAt) {
		stop.Store(true)
		wg.Wait()
		return nil, ctx.Err()
	}
	ended := time.Now()
	if ended.After(endAt) {
		ended = endAt // what was answered after endAt is not in Requests
	}
	if c.OnEnd != nil {
		c.OnEnd()
	}
	stop.Store(true)
	wg.Wait()
	late, began := unsent.Load(), measured
	if c.Schedule != nil {
		began = measureAt
		// Requests due within the measurement that no connection got to
		// (the generator ran short of connections): the server was too
		// slow for the rate, and the report must say so.
		for {
			off, ok := c.Schedule.Next()
			if !ok || off >= c.Duration {
				break
			}
			late++
		}
	}

	res := &Result{Hist: NewHistogram(), ByName: map[string]*hdrhistogram.Histogram{}, Elapsed: ended.Sub(measured),
		Late: late, Timeline: make([]uint64, ticks), Tick: c.Tick, Start: began}
	for _, w := range workers {
		res.Requests += w.ok
		res.Errors += w.errs
		res.Overtime += w.over
		res.Hist.Merge(w.hist)
		for n, h := range w.byName {
			if res.ByName[n] == nil {
				res.ByName[n] = NewHistogram()
			}
			res.ByName[n].Merge(h)
		}
		for k, v := range w.timeline {
			res.Timeline[k] += v
		}
		res.Samples = append(res.Samples, w.samples...)
		if res.FirstErr == "" {
			res.FirstErr = w.firstErr
		}
	}
	return res, nil
}

// Merge adds o (another run of the same configuration) to r.
func (r *Result) Merge(o *Result) {
	r.Requests += o.Requests
	r.Errors += o.Errors
	r.Overtime += o.Overtime
	r.Late += o.Late
	r.Elapsed += o.Elapsed
	r.Hist.Merge(o.Hist)
	for n, h := range o.ByName {
		if r.ByName[n] == nil {
			r.ByName[n] = NewHistogram()
		}
		r.ByName[n].Merge(h)
	}
	if r.FirstErr == "" {
		r.FirstErr = o.FirstErr
	}
	// Timelines are of one run each; keep the first.
}

// Percentiles of a histogram as milliseconds.
func Millis(h *hdrhistogram.Histogram, q float64) float64 {
	if h.TotalCount() == 0 {
		return math.NaN()
	}
	return float64(h.ValueAtQuantile(q)) / 1e6
}

// describeErr is a failed request's error for a report, prefixed with the
// request's name when it has one.
func describeErr(name string, err error) string {
	if name == "" {
		return err.Error()
	}
	return name + ": " + err.Error()
}
