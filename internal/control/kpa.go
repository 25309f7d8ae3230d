package control

import (
	"fmt"
	"math"
	"time"
)

// KPAConfig configures the kpa policy, a reimplementation of Knative's Pod
// Autoscaler (concurrency metric) with Knative's defaults.
type KPAConfig struct {
	// TargetUtilization is the fraction of Concurrency each instance is
	// sized for (Knative container-concurrency-target-percentage).
	// Default 0.7.
	TargetUtilization float64
	// SampleInterval is the bucket width observations are averaged into.
	// Default 1s.
	SampleInterval time.Duration
	// DecisionInterval is how often a scale decision is taken (Knative
	// tick-interval). Default 2s.
	DecisionInterval time.Duration
	// StableWindow and PanicWindow are the averaging windows of observed
	// concurrency. Defaults 60s and 6s (10% of the stable window).
	StableWindow, PanicWindow time.Duration
	// PanicThreshold: panic when the panic-window count reaches this
	// multiple of the ready instances. Default 2 (Knative 200%).
	PanicThreshold float64
	// MaxScaleUpRate and MaxScaleDownRate bound one decision to
	// [floor(ready/down), ceil(ready×up)]. Defaults 1000 and 2.
	MaxScaleUpRate, MaxScaleDownRate float64
	// ScaleToZeroGrace: the last instance goes only after no traffic for
	// StableWindow + ScaleToZeroGrace. Default 30s.
	ScaleToZeroGrace time.Duration
}

func (c *KPAConfig) validate(path string, top *Config) []string {
	var p []string
	if c.TargetUtilization == 0 {
		c.TargetUtilization = 0.7
	}
	if !(c.TargetUtilization > 0 && c.TargetUtilization <= 1) {
		p = append(p, fmt.Sprintf("%s.target_utilization: %v, want in (0, 1]", path, c.TargetUtilization))
	}
	if c.SampleInterval == 0 {
		c.SampleInterval = time.Second
	}
	if c.SampleInterval < time.Millisecond {
		p = append(p, fmt.Sprintf("%s.sample_interval: %v, want ≥ 1ms", path, c.SampleInterval))
	}
	if c.DecisionInterval == 0 {
		c.DecisionInterval = 2 * time.Second
	}
	if c.DecisionInterval < 0 {
		p = append(p, fmt.Sprintf("%s.decision_interval: %v, want ≥ 0", path, c.DecisionInterval))
	}
	if c.StableWindow == 0 {
		c.StableWindow = 60 * time.Second
	}
	if c.PanicWindow == 0 {
		c.PanicWindow = c.StableWindow / 10
	}
	if c.SampleInterval >= time.Millisecond {
		if c.StableWindow < c.SampleInterval || c.StableWindow > time.Hour {
			p = append(p, fmt.Sprintf("%s.stable_window: %v, want %v..1h", path, c.StableWindow, c.SampleInterval))
		} else if c.StableWindow/c.SampleInterval > 1<<16 {
			p = append(p, fmt.Sprintf("%s.stable_window: %v is over 65536 samples of %v", path, c.StableWindow, c.SampleInterval))
		}
		if c.PanicWindow < c.SampleInterval || c.PanicWindow > c.StableWindow {
			p = append(p, fmt.Sprintf("%s.panic_window: %v, want sample_interval %v..stable_window %v",
				path, c.PanicWindow, c.SampleInterval, c.StableWindow))
		}
	}
	if c.PanicThreshold == 0 {
		c.PanicThreshold = 2
	}
	if !(c.PanicThreshold > 1 && c.PanicThreshold <= 1000) {
		p = append(p, fmt.Sprintf("%s.panic_threshold: %v, want in (1, 1000]", path, c.PanicThreshold))
	}
	if c.MaxScaleUpRate == 0 {
		c.MaxScaleUpRate = 1000
	}
	if !(c.MaxScaleUpRate > 1 && c.MaxScaleUpRate <= 1e6) {
		p = append(p, fmt.Sprintf("%s.max_scale_up_rate: %v, want in (1, 1e6]", path, c.MaxScaleUpRate))
	}
	if c.MaxScaleDownRate == 0 {
		c.MaxScaleDownRate = 2
	}
	if !(c.MaxScaleDownRate > 1 && c.MaxScaleDownRate <= 1e6) {
		p = append(p, fmt.Sprintf("%s.max_scale_down_rate: %v, want in (1, 1e6]", path, c.MaxScaleDownRate))
	}
	if c.ScaleToZeroGrace == 0 {
		c.ScaleToZeroGrace = 30 * time.Second
	}
	if c.ScaleToZeroGrace < 0 {
		p = append(p, fmt.Sprintf("%s.scale_to_zero_grace: %v, want ≥ 0", path, c.ScaleToZeroGrace))
	}
	return p
}

// bucket is one SampleInterval of observed concurrency.
type bucket struct {
	idx int64   // time / SampleInterval
	sum float64 // sum of observations in the bucket
	n   int     // observations in the bucket
}

type kpa struct {
	cfg    Config
	target float64 // concurrency per instance to aim for

	buckets []bucket // ring, newest at head-1
	head    int
	nb      int

	started      bool
	decided      bool
	lastDecision time.Duration
	lastActive   time.Duration
	panicking    bool
	panicTime    time.Duration
	maxPanic     int
	last         Decision
}

func newKPA(cfg Config) *kpa {
	k := cfg.KPA
	return &kpa{
		cfg:     cfg,
		target:  float64(cfg.Concurrency) * k.TargetUtilization,
		buckets: make([]bucket, int(k.StableWindow/k.SampleInterval)+1),
	}
}

// Woken implements Waker.
func (k *kpa) Woken(now time.Duration) { k.lastActive = max(k.lastActive, now) }

func (k *kpa) Tick(now time.Duration, o Observation) Decision {
	c, kc := &k.cfg, &k.cfg.KPA
	ready := max(o.Ready, 0)
	conc := o.Concurrency
	if !(conc > 0) {
		conc = float64(max(o.Queued, 0) + max(o.InFlight, 0))
	}
	k.record(now, conc)
	if !k.started {
		k.started = true
		k.lastActive = now
		// Knative starts a fresh autoscaler in panic mode when more than
		// one instance is up, so that it keeps the current scale until it
		// has data.
		if ready > 1 {
			k.panicking, k.panicTime, k.maxPanic = true, now, ready
		}
	}
	if conc > 0 || o.Arrivals > 0 {
		k.lastActive = now
	}

	// Decide every DecisionInterval, or at once when requests wait and no
	// instance exists (Knative's activator pokes the autoscaler).
	poke := ready+max(o.Starting, 0) == 0 && conc > 0
	if k.decided && !poke && now-k.lastDecision < kc.DecisionInterval-kc.SampleInterval/2 {
		d := k.last
		d.Reason, d.Warning = ReasonHold, ""
		return d
	}
	k.decided, k.lastDecision = true, now

	readyF := max(1, float64(ready))
	stable := k.average(now, kc.StableWindow)
	panicAvg := k.average(now, kc.PanicWindow)
	maxUp := math.Ceil(kc.MaxScaleUpRate * readyF)
	maxDown := math.Floor(readyF / kc.MaxScaleDownRate)
	dspc := math.Ceil(stable/k.target - 1e-9)
	dppc := math.Ceil(panicAvg/k.target - 1e-9)
	desStable := min(max(dspc, maxDown), maxUp)
	desPanic := min(max(dppc, maxDown), maxUp)

	over := dppc/readyF >= kc.PanicThreshold
	switch {
	case over && !k.panicking:
		k.panicking, k.panicTime = true, now
	case over:
		k.panicTime = now
	case k.panicking && now-k.panicTime > kc.StableWindow:
		k.panicking, k.maxPanic = false, 0
	}

	limit := 4 * c.MaxInstances // saturate above the bound so at-max shows
	desired := toCount(desStable, limit)
	reason := ReasonStable
	if k.panicking {
		// No scale-down while panicking; provision for the larger of the
		// two windows.
		desired = max(desired, toCount(desPanic, limit))
		k.maxPanic = max(k.maxPanic, desired)
		desired, reason = k.maxPanic, ReasonPanic
	}
	raw := desired
	if desired > c.MaxInstances {
		desired, reason = c.MaxInstances, ReasonAtMax
	}
	if desired < c.MinInstances {
		desired, reason = c.MinInstances, ReasonAtMin
	}
	if desired == 0 && now-k.lastActive < kc.StableWindow+kc.ScaleToZeroGrace {
		desired, reason = 1, ReasonGrace
	}
	k.last = Decision{Desired: desired, Raw: raw, Panic: k.panicking, Reason: reason}
	return k.last
}

// record adds one concurrency observation to its bucket.
func (k *kpa) record(now time.Duration, v float64) {
	idx := int64(now / k.cfg.KPA.SampleInterval)
	if k.nb > 0 {
		b := &k.buckets[(k.head-1+len(k.buckets))%len(k.buckets)]
		if b.idx == idx {
			b.sum += v
			b.n++
			return
		}
	}
	k.buckets[k.head] = bucket{idx: idx, sum: v, n: 1}
	k.head = (k.head + 1) % len(k.buckets)
	k.nb = min(k.nb+1, len(k.buckets))
}

// average returns the mean of the per-bucket averages of the buckets within
// window of now (0 with no data).
func (k *kpa) average(now, window time.Duration) float64 {
	idx := int64(now / k.cfg.KPA.SampleInterval)
	nw := int64(window / k.cfg.KPA.SampleInterval)
	sum, n := 0.0, 0
	for i := range k.nb {
		b := &k.buckets[(k.head-1-i+2*len(k.buckets))%len(k.buckets)]
		if b.idx <= idx-nw {
			break
		}
		sum += b.sum / float64(b.n)
		n++
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}
