// Package sim is a small deterministic queueing simulator that runs a
// control.Autoscaler against a request-rate trace. It exists for tests and
// for the bench's sanity checks, not for the daemon.
//
// Model:
//   - Arrivals are a Poisson process whose rate follows the trace
//     (piecewise constant per trace interval), drawn from a seeded PCG.
//   - Each instance runs up to Concurrency requests at once; a request's
//     execution time is ExecTime × (1 ± ExecJitter), uniform.
//   - Requests wait in one FIFO queue and start on the earliest free slot
//     of a ready instance (the ideal of the data path's least-loaded pick
//     for identical instances). Latency = queueing + execution.
//   - Every Tick the autoscaler gets the Observation of the past tick
//     (arrivals, completions, busy time, queue, in flight, time-averaged
//     concurrency, ready and starting instances) and its Decision is
//     applied at once: new instances become ready after ColdStart;
//     surplus instances are removed, starting ones first, then those
//     with the least work left, which drain (finish what they hold, take
//     nothing new).
//   - An instance costs from the moment it is started until it is
//     cancelled or has drained, or until the end of the run.
//
// The run lasts the trace plus whatever time the backlog needs to drain
// (at most Drain); requests still unfinished then count as over the SLO.
package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/spry-dev/spry/internal/control"
	"github.com/spry-dev/spry/internal/control/trace"
)

// Config describes the simulated function and platform.
type Config struct {
	ExecTime    time.Duration // mean execution time; default 100ms
	ExecJitter  float64       // execution time spread, uniform ±fraction in [0, 1); 0 = constant
	Concurrency int           // requests one instance runs at once; default 1
	ColdStart   time.Duration // start to ready; 0 = instant
	// StallProb and StallMean model a shared machine: a request is, with
	// probability StallProb, held up by an exponentially distributed
	// stall of mean StallMean (its instance descheduled) on top of its
	// execution time. 0: no stalls.
	StallProb float64
	StallMean time.Duration
	SLO       time.Duration // latency objective for the report; default 1s
	Tick      time.Duration // control period; default 1s
	// Sample is how often the daemon looks between ticks (a divisor of
	// Tick; default Tick: never). A policy implementing control.Urgent
	// is asked at every sample that is not a tick, as the node does.
	Sample time.Duration
	// Bucket is the length of a violation "second" (default 1s): a
	// replay compressed in time counts trace seconds, each Bucket long.
	Bucket  time.Duration
	Initial int           // instances ready at time 0
	Drain   time.Duration // longest run past the trace's end; default 120s
	Seed    uint64
}

func (c *Config) validate() error {
	var errs []error
	if c.ExecTime == 0 {
		c.ExecTime = 100 * time.Millisecond
	}
	if c.ExecTime < time.Microsecond {
		errs = append(errs, fmt.Errorf("exec_time: %v, want ≥ 1µs", c.ExecTime))
	}
	if !(c.ExecJitter >= 0 && c.ExecJitter < 1) {
		errs = append(errs, fmt.Errorf("exec_jitter: %v, want in [0, 1)", c.ExecJitter))
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency: %d, want ≥ 1", c.Concurrency))
	}
	if !(c.StallProb >= 0 && c.StallProb <= 1) || c.StallMean < 0 {
		errs = append(errs, fmt.Errorf("stall: probability %v, mean %v: want [0, 1] and ≥ 0", c.StallProb, c.StallMean))
	}
	if c.ColdStart < 0 {
		errs = append(errs, fmt.Errorf("cold_start: %v, want ≥ 0", c.ColdStart))
	}
	if c.SLO == 0 {
		c.SLO = time.Second
	}
	if c.SLO < 0 {
		errs = append(errs, fmt.Errorf("slo: %v, want > 0", c.SLO))
	}
	if c.Tick == 0 {
		c.Tick = time.Second
	}
	if c.Tick < time.Millisecond {
		errs = append(errs, fmt.Errorf("tick: %v, want ≥ 1ms", c.Tick))
	}
	if c.Sample == 0 {
		c.Sample = c.Tick
	}
	if c.Sample <= 0 || c.Tick%c.Sample != 0 {
		errs = append(errs, fmt.Errorf("sample: %v, want a divisor of tick %v", c.Sample, c.Tick))
	}
	if c.Bucket == 0 {
		c.Bucket = time.Second
	}
	if c.Bucket < time.Millisecond {
		errs = append(errs, fmt.Errorf("bucket: %v, want ≥ 1ms", c.Bucket))
	}
	if c.Initial < 0 {
		errs = append(errs, fmt.Errorf("initial: %d, want ≥ 0", c.Initial))
	}
	if c.Drain == 0 {
		c.Drain = 120 * time.Second
	}
	if c.Drain < 0 {
		errs = append(errs, fmt.Errorf("drain: %v, want ≥ 0", c.Drain))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}

// Result summarises a run.
type Result struct {
	Requests        int
	Violations      int     // buckets (Config.Bucket, by arrival) whose p99 latency exceeds the SLO
	OverSLO         float64 // fraction of requests slower than the SLO
	InstanceSeconds float64
	Starts, Stops   int // instances started, and cancelled or drained
	PeakInstances   int
	Unfinished      int // requests not done when the run ended
	P50, P99, Max   time.Duration
	Duration        time.Duration // simulated time
}

func (r Result) String() string {
	return fmt.Sprintf("violations=%ds over_slo=%.2f%% instance_s=%.0f starts=%d stops=%d peak=%d p50=%v p99=%v max=%v",
		r.Violations, 100*r.OverSLO, r.InstanceSeconds, r.Starts, r.Stops, r.PeakInstances,
		r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond), r.Max.Round(time.Millisecond))
}

type instance struct {
	started, ready float64 // seconds
	busyFrom       []float64
	busyUntil      []float64
	draining       bool
}

func (in *instance) lastBusy() float64 {
	m := 0.0
	for _, b := range in.busyUntil {
		m = max(m, b)
	}
	return m
}

type request struct {
	arrival float64
}

type done struct {
	sec     int32   // arrival bucket
	latency float64 // seconds
}

// Run simulates a against tr.
func Run(tr trace.Trace, a control.Autoscaler, cfg Config) (Result, error) {
	if err := tr.Validate(); err != nil {
		return Result{}, fmt.Errorf("sim: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	s := &state{
		cfg:  cfg,
		tr:   tr,
		a:    a,
		rng:  rand.New(rand.NewPCG(cfg.Seed, 0x51a1)),
		tick: cfg.Tick.Seconds(),
		exec: cfg.ExecTime.Seconds(),
	}
	return s.run(), nil
}

type state struct {
	cfg  Config
	tr   trace.Trace
	a    control.Autoscaler
	rng  *rand.Rand
	tick float64
	exec float64

	insts    []*instance
	draining []*instance // removed from routing, finishing what they hold
	queue    []request   // FIFO from qhead
	qhead    int

	// Per tick k, covering [k·tick, (k+1)·tick).
	arrivals, completions []uint64
	busy, conc            []float64

	done    []done
	res     Result
	billed  float64
	current int // instances alive (for the peak)
}

func (s *state) grow(k int) {
	for len(s.arrivals) <= k {
		s.arrivals = append(s.arrivals, 0)
		s.completions = append(s.completions, 0)
		s.busy = append(s.busy, 0)
		s.conc = append(s.conc, 0)
	}
}

func (s *state) tickOf(t float64) int { return int(math.Floor(t/s.tick + 1e-9)) }

// addTime adds the interval [from, to) to the per-tick time-in-system sums.
func (s *state) addTime(from, to float64) {
	for from < to {
		k := s.tickOf(from)
		s.grow(k)
		end := min(to, float64(k+1)*s.tick)
		if end <= from { // float edge: step to the next tick
			end = min(to, float64(k+2)*s.tick)
		}
		s.conc[k] += end - from
		from = end
	}
}

func (s *state) run() Result {
	c := &s.cfg
	for range c.Initial {
		s.startInstance(0, 0)
	}
	s.res.Starts = 0 // initial instances are not scale events
	traceEnd := s.tr.Duration().Seconds()
	hardEnd := traceEnd + c.Drain.Seconds()
	var end float64
	per := int(c.Tick / c.Sample)
	step := c.Sample.Seconds()
	u, urgent := s.a.(control.Urgent)
	for j := 0; ; j++ {
		t0 := float64(j) * step
		t1 := t0 + step
		if j%per == 0 && t0 >= traceEnd && (s.qhead == len(s.queue) && s.inFlight(t0) == 0 || t0 >= hardEnd) {
			end = t0
			break
		}
		switch {
		case j%per == 0:
			s.control(j/per, t0)
		case urgent:
			s.urgent(u, t0)
		}
		s.arrive(t0, t1)
		s.dispatch(t0, t1)
	}
	return s.finish(end)
}

func (s *state) inFlight(t float64) int {
	n := 0
	for _, in := range s.insts {
		for j, u := range in.busyUntil {
			if in.busyFrom[j] <= t && t < u {
				n++
			}
		}
	}
	kept := s.draining[:0]
	for _, in := range s.draining {
		if in.lastBusy() <= t {
			continue
		}
		kept = append(kept, in)
		for j, u := range in.busyUntil {
			if in.busyFrom[j] <= t && t < u {
				n++
			}
		}
	}
	s.draining = kept
	return n
}

// control observes the past tick, asks the autoscaler, and applies it.
func (s *state) control(k int, t0 float64) {
	var o control.Observation
	if k > 0 {
		s.grow(k - 1)
		// Queued requests were accounted in conc up to the previous tick;
		// add their time in this one.
		for _, r := range s.queue[s.qhead:] {
			s.conc[k-1] += t0 - max(r.arrival, t0-s.tick)
		}
		o.Arrivals = s.arrivals[k-1]
		o.Completions = s.completions[k-1]
		o.Busy = time.Duration(s.busy[k-1] * 1e9)
		o.Concurrency = s.conc[k-1] / s.tick
	}
	o.Queued = len(s.queue) - s.qhead
	o.InFlight = s.inFlight(t0)
	for _, in := range s.insts {
		if in.ready <= t0 {
			o.Ready++
		} else {
			o.Starting++
		}
	}
	d := s.a.Tick(time.Duration(t0*1e9), o)
	cur := o.Ready + o.Starting
	switch {
	case d.Desired > cur:
		for range d.Desired - cur {
			s.startInstance(t0, t0+s.cfg.ColdStart.Seconds())
		}
	case d.Desired < cur:
		s.stop(t0, cur-d.Desired)
	}
	s.res.PeakInstances = max(s.res.PeakInstances, s.current)
}

// urgent lets a policy that looks between ticks add instances at once.
func (s *state) urgent(u control.Urgent, t0 float64) {
	k := s.tickOf(t0)
	s.grow(k)
	o := control.Observation{Arrivals: s.arrivals[k], Queued: len(s.queue) - s.qhead, InFlight: s.inFlight(t0)}
	for _, in := range s.insts {
		if in.ready <= t0 {
			o.Ready++
		} else {
			o.Starting++
		}
	}
	if n, ok := u.Urgent(time.Duration(t0*1e9), o); ok && n > o.Ready+o.Starting {
		for range n - o.Ready - o.Starting {
			s.startInstance(t0, t0+s.cfg.ColdStart.Seconds())
		}
		s.res.PeakInstances = max(s.res.PeakInstances, s.current)
	}
}

func (s *state) startInstance(now, ready float64) {
	c := s.cfg.Concurrency
	in := &instance{started: now, ready: ready, busyFrom: make([]float64, c), busyUntil: make([]float64, c)}
	s.insts = append(s.insts, in)
	s.res.Starts++
	s.current++
}

// stop removes n instances: starting ones first (newest first), then the
// ready ones with the least work left.
func (s *state) stop(now float64, n int) {
	s.res.Stops += n
	// Sort a copy by preference: starting (latest ready first), then by
	// last busy time. Stable for determinism.
	order := slices.Clone(s.insts)
	slices.SortStableFunc(order, func(x, y *instance) int {
		xs, ys := x.ready > now, y.ready > now
		switch {
		case xs && !ys:
			return -1
		case !xs && ys:
			return 1
		case xs && ys:
			return cmpf(y.ready, x.ready)
		}
		return cmpf(x.lastBusy(), y.lastBusy())
	})
	for _, in := range order[:n] {
		in.draining = true
	}
	kept := s.insts[:0]
	for _, in := range s.insts {
		if !in.draining {
			kept = append(kept, in)
			continue
		}
		// A cancelled or drained instance costs until its last request ends.
		s.billed += max(now, in.lastBusy()) - in.started
		s.current--
		if in.lastBusy() > now {
			s.draining = append(s.draining, in)
		}
	}
	s.insts = kept
}

func cmpf(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// arrive draws the Poisson arrivals of [t0, t1).
func (s *state) arrive(t0, t1 float64) {
	iv := s.tr.Interval
	t := t0
	for t < t1 {
		seg := math.Floor(t/iv+1e-9) + 1
		segEnd := min(t1, seg*iv)
		if segEnd <= t {
			segEnd = t1
		}
		lambda := s.tr.Rate(time.Duration(t * 1e9))
		if lambda > 0 {
			for at := t + s.rng.ExpFloat64()/lambda; at < segEnd; at += s.rng.ExpFloat64() / lambda {
				s.queue = append(s.queue, request{arrival: at})
				k := s.tickOf(at)
				s.grow(k)
				s.arrivals[k]++
			}
		}
		t = segEnd
	}
}

// dispatch starts queued requests, in order, on the earliest free slot of a
// ready instance, as long as that slot frees up before t1.
func (s *state) dispatch(t0, t1 float64) {
	for s.qhead < len(s.queue) {
		r := s.queue[s.qhead]
		var best *instance
		bj, bt := -1, math.Inf(1)
		for _, in := range s.insts {
			for j, u := range in.busyUntil {
				if at := max(u, in.ready); at < bt {
					best, bj, bt = in, j, at
				}
			}
		}
		if best == nil || bt >= t1 {
			break
		}
		s.qhead++
		start := max(bt, r.arrival)
		ex := s.exec
		if j := s.cfg.ExecJitter; j > 0 {
			ex *= 1 + j*(2*s.rng.Float64()-1)
		}
		if s.cfg.StallProb > 0 && s.rng.Float64() < s.cfg.StallProb {
			ex += s.rng.ExpFloat64() * s.cfg.StallMean.Seconds()
		}
		fin := start + ex
		best.busyFrom[bj], best.busyUntil[bj] = start, fin
		k := s.tickOf(fin)
		s.grow(k)
		s.completions[k]++
		s.busy[k] += ex
		s.addTime(max(r.arrival, t0), fin)
		s.done = append(s.done, done{sec: s.bucketOf(r.arrival), latency: fin - r.arrival})
	}
	if s.qhead > 4096 && s.qhead*2 > len(s.queue) {
		s.queue = append(s.queue[:0], s.queue[s.qhead:]...)
		s.qhead = 0
	}
}

func (s *state) bucketOf(t float64) int32 { return int32(t / s.cfg.Bucket.Seconds()) }

func (s *state) finish(end float64) Result {
	for _, in := range s.insts {
		s.billed += max(end, in.lastBusy()) - in.started
	}
	for _, r := range s.queue[s.qhead:] {
		s.done = append(s.done, done{sec: s.bucketOf(r.arrival), latency: end - r.arrival})
		s.res.Unfinished++
	}
	res := s.res
	res.InstanceSeconds = s.billed
	res.Duration = time.Duration(end * 1e9)
	res.Requests = len(s.done)
	if len(s.done) == 0 {
		return res
	}
	slo := s.cfg.SLO.Seconds()
	all := make([]float64, len(s.done))
	over := 0
	for i, d := range s.done {
		all[i] = d.latency
		if d.latency > slo {
			over++
		}
	}
	res.OverSLO = float64(over) / float64(len(all))
	// Per-bucket p99, by arrival bucket.
	slices.SortStableFunc(s.done, func(x, y done) int { return int(x.sec) - int(y.sec) })
	var sec []float64
	for i := 0; i < len(s.done); {
		j := i
		sec = sec[:0]
		for ; j < len(s.done) && s.done[j].sec == s.done[i].sec; j++ {
			sec = append(sec, s.done[j].latency)
		}
		if quantile(sec, 0.99) > slo {
			res.Violations++
		}
		i = j
	}
	res.P50 = dur(quantile(all, 0.50))
	res.P99 = dur(quantile(all, 0.99))
	res.Max = dur(quantile(all, 1))
	return res
}

// quantile returns the nearest-rank q-quantile of xs (sorting xs).
func quantile(xs []float64, q float64) float64 {
	slices.Sort(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

func dur(sec float64) time.Duration { return time.Duration(sec * 1e9) }
