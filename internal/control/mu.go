package control

import (
	"fmt"
	"math"
	"time"
)

// MuConfig configures the mu policy (SLO-driven, after the Mu paper).
type MuConfig struct {
	// ExecTime is the mean execution time assumed until completions have
	// been measured (μ unknown). Default 100ms.
	ExecTime time.Duration
	// ColdStart is how long a new instance takes to become ready. Queued
	// requests cannot be drained by new instances sooner, so the backlog is
	// sized to drain within max(SLO − exec time, ColdStart); and it is the
	// default forecast horizon. Default: Tick.
	ColdStart time.Duration
	// ExecHalfLife is the half-life of the execution-time estimate: the
	// estimate is the decayed total busy time over the decayed number of
	// completions, clamped to [1µs, 1h]. Default 10s.
	ExecHalfLife time.Duration
	// MaxScaleUpRate caps one tick's growth at ceil(rate × max(current, 1))
	// instances (current = ready + starting). Default 10.
	MaxScaleUpRate float64
	// MaxScaleDownRate caps one tick's shrink at floor(current / rate)
	// instances. Default 1.25 (≤ 20% a tick, but one instance at a time
	// below 5).
	MaxScaleDownRate float64
	// ErrorMargin: the load term sizes for λ̂ + ErrorMargin × the
	// predictor's recent mean absolute error (or the observed rate, if
	// higher), so that capacity covers the forecast's own uncertainty
	// (level shifts no model foresees). Default 1; negative means 0.
	ErrorMargin float64
	// Percentile is the latency percentile the SLO bounds, judged per
	// SLOWindow: the load term sizes so that, at the forecast rate, a
	// window's Percentile-th latency exceeds the SLO with probability at
	// most 1 − Attainment (see windowTail). Default 0.99.
	Percentile float64
	// Attainment is the share of SLO windows whose Percentile-th latency
	// is to be within the SLO: the load term sizes so that a window
	// misses it with probability at most 1 − Attainment (see windowTail).
	// The percentile says how many slow requests a window may hold, the
	// attainment how many windows may hold more: with 1 s windows, 0.99
	// allows ~36 seconds an hour over the SLO, 0.999 ~4. Default:
	// Percentile.
	Attainment float64
	// SLOWindow is the interval the SLO is judged over: "the p99 of every
	// second". Few requests per window make the target per request
	// stricter (with 30, one slow request is the window's p99). Default
	// 1s.
	SLOWindow time.Duration
	// StabilizationWindow: a scale-down goes no lower than the highest
	// load term (instances for the predicted rate, without the backlog
	// term) asked for within this window. Default 30s.
	StabilizationWindow time.Duration
	// IdlePeriod: with no arrivals, queue or work for this long the
	// function scales to MinInstances (zero if that is 0); before that,
	// one instance is kept warm. Default 60s.
	IdlePeriod time.Duration
	// Predictor configures the arrival-rate predictor.
	Predictor PredictorConfig
}

func (c *MuConfig) validate(path string, top *Config) []string {
	var p []string
	if c.ExecTime == 0 {
		c.ExecTime = 100 * time.Millisecond
	}
	if c.ExecTime < time.Microsecond {
		p = append(p, fmt.Sprintf("%s.exec_time: %v, want ≥ 1µs", path, c.ExecTime))
	}
	if c.ColdStart == 0 {
		c.ColdStart = top.Tick
	}
	if c.ColdStart < 0 || c.ColdStart > time.Hour {
		p = append(p, fmt.Sprintf("%s.cold_start: %v, want 0..1h", path, c.ColdStart))
	}
	if c.Predictor.Horizon == 0 && top.Tick > 0 && c.ColdStart > 0 {
		c.Predictor.Horizon = int(min((c.ColdStart+top.Tick-1)/top.Tick, maxHoriz))
	}
	if c.ExecHalfLife == 0 {
		c.ExecHalfLife = 10 * time.Second
	}
	if c.ExecHalfLife < 0 {
		p = append(p, fmt.Sprintf("%s.exec_half_life: %v, want > 0", path, c.ExecHalfLife))
	}
	if c.MaxScaleUpRate == 0 {
		c.MaxScaleUpRate = 10
	}
	if !(c.MaxScaleUpRate > 1 && c.MaxScaleUpRate <= 1e6) {
		p = append(p, fmt.Sprintf("%s.max_scale_up_rate: %v, want in (1, 1e6]", path, c.MaxScaleUpRate))
	}
	if c.MaxScaleDownRate == 0 {
		c.MaxScaleDownRate = 1.25
	}
	if !(c.MaxScaleDownRate > 1 && c.MaxScaleDownRate <= 1e6) {
		p = append(p, fmt.Sprintf("%s.max_scale_down_rate: %v, want in (1, 1e6]", path, c.MaxScaleDownRate))
	}
	if c.ErrorMargin == 0 {
		c.ErrorMargin = 1
	}
	c.ErrorMargin = max(c.ErrorMargin, 0)
	if c.ErrorMargin > 100 {
		p = append(p, fmt.Sprintf("%s.error_margin: %v, want ≤ 100", path, c.ErrorMargin))
	}
	if c.Percentile == 0 {
		c.Percentile = 0.99
	}
	if !(c.Percentile >= 0.5 && c.Percentile < 1) {
		p = append(p, fmt.Sprintf("%s.percentile: %v, want in [0.5, 1)", path, c.Percentile))
	}
	if c.Attainment == 0 {
		c.Attainment = c.Percentile
	} else if !(c.Attainment >= 0.5 && c.Attainment < 1) {
		p = append(p, fmt.Sprintf("%s.attainment: %v, want in [0.5, 1)", path, c.Attainment))
	}
	if c.SLOWindow == 0 {
		c.SLOWindow = time.Second
	}
	if c.SLOWindow < time.Millisecond || c.SLOWindow > time.Hour {
		p = append(p, fmt.Sprintf("%s.slo_window: %v, want 1ms..1h", path, c.SLOWindow))
	}
	if c.StabilizationWindow == 0 {
		c.StabilizationWindow = 30 * time.Second
	}
	if c.StabilizationWindow < 0 || c.StabilizationWindow > time.Hour {
		p = append(p, fmt.Sprintf("%s.stabilization_window: %v, want 0..1h", path, c.StabilizationWindow))
	}
	if c.IdlePeriod == 0 {
		c.IdlePeriod = 60 * time.Second
	}
	if c.IdlePeriod < 0 {
		p = append(p, fmt.Sprintf("%s.idle_period: %v, want > 0", path, c.IdlePeriod))
	}
	p = append(p, c.Predictor.validate(path+".predictor")...)
	return p
}

type sample struct {
	t time.Duration
	n int
}

type mu struct {
	cfg  Config
	pred *Predictor

	started    bool
	last       time.Duration // previous tick
	lastActive time.Duration // last tick with arrivals, queue or work
	busy, done float64       // decayed busy seconds and completions

	// What the last tick measured, for Urgent: the rate it served
	// (max(λ̂, observed)), the service rate per instance, the backlog's
	// drain time, the execution time and the SLO's slack. rate is 0
	// until completions have been measured.
	lastCurrent, lastRate, lastDrain, lastExec, lastSlack float64

	hist     []sample // ring of recent wanted counts, for stabilisation
	histHead int
	histLen  int

	sloWarned bool
}

func newMu(cfg Config) *mu {
	n := int(cfg.Mu.StabilizationWindow/cfg.Tick) + 2
	return &mu{
		cfg:  cfg,
		pred: newPredictor(cfg.Mu.Predictor),
		hist: make([]sample, n),
	}
}

func (m *mu) Tick(now time.Duration, o Observation) Decision {
	c := &m.cfg
	dt := interval(now, m.last, !m.started, c.Tick)
	if !m.started {
		m.lastActive = now
		m.started = true
		// No data yet: hold the current count for one stabilisation
		// window instead of scaling down on the first tick.
		m.record(now, max(o.Ready, 0)+max(o.Starting, 0))
	}
	m.last = now
	queued, inflight := max(o.Queued, 0), max(o.InFlight, 0)
	cur := max(o.Ready, 0) + max(o.Starting, 0)
	if o.Arrivals > 0 || queued > 0 || inflight > 0 {
		m.lastActive = now
	}

	// λ̂: the forecast arrival rate.
	observed := float64(o.Arrivals) / dt
	lambda := m.pred.Observe(observed)

	// T_exec and μ = concurrency / T_exec.
	decay := math.Exp2(-dt / c.Mu.ExecHalfLife.Seconds())
	m.busy = m.busy*decay + max(o.Busy.Seconds(), 0)
	m.done = m.done*decay + float64(o.Completions)
	exec, measured := c.Mu.ExecTime.Seconds(), false
	if m.done > 1e-9 && m.busy > 0 {
		exec, measured = clamp(m.busy/m.done, 1e-6, 3600), true
	}
	rate := float64(c.Concurrency) / exec

	// Mu's N = ceil(λ̂/μ) + ceil(Q/(μ·(SLO − T_exec))), reworked (see the
	// package doc for why):
	//
	//	N = max(load, ceil((λ + Q'/D) / μ))
	//
	// load sizes for the SLO percentile at the forecast rate plus its
	// recent error, or the observed rate if higher (Erlang C,
	// sizeForSLO). The second term serves the
	// current rate λ = max(λ̂, observed) while draining the backlog Q'
	// expected when new instances are up (Q plus what outruns the ready
	// instances during a cold start) within D = max(SLO − T_exec, cold
	// start). An SLO not above T_exec cannot be met: load then sizes for
	// no queueing at all (slack 0, the limit of a shrinking slack) and the
	// backlog drains within max(tick, cold start).
	var warn string
	slack := c.SLO.Seconds() - exec
	cold := c.Mu.ColdStart.Seconds()
	drain := max(slack, cold)
	if slack <= 0 {
		// Warn about what was measured, not about the default guess of
		// the execution time before any request ran.
		if measured && !m.sloWarned {
			warn, m.sloWarned = WarnSLONotAboveExec, true
		}
		slack, drain = 0, max(c.Tick.Seconds(), cold)
	} else {
		m.sloWarned = false
	}
	// Formula values saturate well above MaxInstances, so that Raw shows
	// the need and the clamp below reports at-max.
	limit := 4 * c.MaxInstances
	// The load term sizes for the forecast plus its recent error, and never
	// for less than what arrived in the last tick: the forecast lags a
	// level shift, the observation does not.
	sized := max(lambda+c.Mu.ErrorMargin*m.pred.Error(), observed)
	load := m.loadTerm(sized, exec, slack, limit)
	current := max(lambda, observed)
	raw, reason := load, ReasonLoad
	if n := backlogTerm(current, rate, drain, cold, queued, o.Ready, limit); n > load {
		raw, reason = n, ReasonQueue
	}
	m.lastCurrent, m.lastRate, m.lastDrain, m.lastExec, m.lastSlack = current, 0, drain, exec, slack
	if measured {
		m.lastRate = rate
	}

	// Scale to zero after an idle period; until then keep one instance
	// warm rather than none.
	want := raw
	switch {
	case now-m.lastActive >= c.Mu.IdlePeriod:
		load, want = 0, 0
		if raw > 0 || cur > 0 {
			reason = ReasonIdle
		}
	case raw == 0 && cur > 0:
		load, want, reason = 1, 1, ReasonKeepWarm
	}
	// Only the load term is stabilised: instances added to drain a backlog
	// go as soon as the backlog is gone.
	m.record(now, load)

	target := want
	switch {
	case want >= cur:
		if up := toCount(c.Mu.MaxScaleUpRate*float64(max(cur, 1)), limit); target > up {
			target, reason = up, ReasonUpLimited
		}
	case reason == ReasonIdle:
		// Idle for a whole period: every instance is idle, drop them all.
	default:
		if hold := min(m.peak(now), cur); hold > target {
			target, reason = hold, ReasonStabilizing
		}
		if low := int(float64(cur) / c.Mu.MaxScaleDownRate); target < low {
			target, reason = low, ReasonDownLimited
		}
	}
	if target > c.MaxInstances {
		target, reason = c.MaxInstances, ReasonAtMax
	}
	if target < c.MinInstances {
		target, reason = c.MinInstances, ReasonAtMin
	}
	return Decision{
		Desired:      target,
		Raw:          raw,
		Predicted:    lambda,
		ExecTime:     time.Duration(exec * 1e9),
		ExecMeasured: measured,
		Reason:       reason,
		Warning:      warn,
	}
}

// Woken implements Waker.
func (m *mu) Woken(now time.Duration) { m.lastActive = max(m.lastActive, now) }

// Urgent is mu's look between ticks. The daemon samples more often than
// it ticks; a rise that comes just after a tick would otherwise go unmet
// for up to a whole period. Urgent answers more instances at once when
// either of two terms asks for more than are ready or starting:
//
//   - the load term at the rate since the last tick (o.Arrivals over the
//     time since it, now on the daemon's clock), taken at the lower end of
//     its two-sigma Poisson interval so that the noise of a short count
//     does not scale up: a rise is acted on once it is sure;
//   - the backlog term of Tick: serve the current rate (the last tick's,
//     or the rate since it if higher) and drain the queue seen now within
//     the tick's drain time. With the rate since the tick, a queue that a
//     rise is building counts as growing, not as one the instances up
//     will drain.
//
// Both use the last tick's measured execution time. Urgent only ever
// scales up, within the tick's up-rate limit and MaxInstances, and
// changes no state: the next Tick decides as usual (and lets instances
// added for a backlog go once it is drained). Before completions have
// been measured it answers nothing.
func (m *mu) Urgent(now time.Duration, o Observation) (int, bool) {
	c := &m.cfg
	if m.lastRate <= 0 || m.lastDrain <= 0 {
		return 0, false
	}
	limit := 4 * c.MaxInstances
	current, n := m.lastCurrent, 0
	if el := (now - m.last).Seconds(); el > 0 {
		a := float64(o.Arrivals)
		current = max(current, a/el)
		if lo := max(a-2*math.Sqrt(a), 0) / el; lo > m.lastCurrent {
			n = m.loadTerm(lo, m.lastExec, m.lastSlack, limit)
		}
	}
	if o.Queued > 0 {
		n = max(n, backlogTerm(current, m.lastRate, m.lastDrain, c.Mu.ColdStart.Seconds(), o.Queued, o.Ready, limit))
	}
	cur := max(o.Ready, 0) + max(o.Starting, 0)
	n = min(n, toCount(c.Mu.MaxScaleUpRate*float64(max(cur, 1)), limit), c.MaxInstances)
	if n <= cur {
		return 0, false
	}
	return n, true
}

// loadTerm is the fewest instances that hold the SLO at rate (req/s):
// Erlang C, for the share of requests over the slack that lets a window's
// Percentile-th latency stay within the SLO (windowTail).
func (m *mu) loadTerm(rate, exec, slack float64, limit int) int {
	c := &m.cfg
	eps := windowTail(rate*c.Mu.SLOWindow.Seconds(), c.Mu.Percentile, 1-c.Mu.Attainment)
	return sizeForSLO(rate, exec, c.Concurrency, slack, eps, 1-c.Mu.Percentile, limit)
}

// backlogTerm is the instances that serve rate current (req/s) and drain,
// within drain seconds, the queue expected once new instances are up: the
// queued requests plus what outruns the ready instances (each serving rate
// req/s) during a cold start. Saturates at limit.
func backlogTerm(current, rate, drain, cold float64, queued, ready, limit int) int {
	backlog := float64(queued) + max(current-float64(max(ready, 0))*rate, 0)*cold
	return toCount((current+backlog/drain)/rate, limit)
}

// record appends a wanted count to the stabilisation history.
func (m *mu) record(now time.Duration, n int) {
	m.hist[m.histHead] = sample{now, n}
	m.histHead = (m.histHead + 1) % len(m.hist)
	m.histLen = min(m.histLen+1, len(m.hist))
}

// peak returns the highest count wanted within the stabilisation window.
func (m *mu) peak(now time.Duration) int {
	p := 0
	for i := range m.histLen {
		s := m.hist[(m.histHead-1-i+len(m.hist))%len(m.hist)]
		if now-s.t >= m.cfg.Mu.StabilizationWindow && i > 0 {
			break
		}
		p = max(p, s.n)
	}
	return p
}
