package control

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Policy names.
const (
	PolicyMu    = "mu"
	PolicyKPA   = "kpa"
	PolicyFixed = "fixed"
)

// Config configures the autoscaler of one function. Validate fills in the
// defaults noted on each field.
type Config struct {
	// Policy is "mu" (default), "kpa" or "fixed".
	Policy string
	// MinInstances and MaxInstances bound every decision. Defaults 0 and
	// 100; MaxInstances must be at least 1 and at least MinInstances.
	MinInstances, MaxInstances int
	// Concurrency is how many requests one instance runs at once. Default 1.
	Concurrency int
	// SLO is the latency objective per request (queueing + execution).
	// Default 1s. Used by mu; kpa and fixed ignore it.
	SLO time.Duration
	// Tick is the nominal control period: the interval assumed for the
	// first tick and the "drain within one tick" fallback. Default 1s.
	Tick time.Duration

	Mu    MuConfig
	KPA   KPAConfig
	Fixed FixedConfig
}

// Validate fills in defaults and returns a *ConfigError (wrapping
// ErrInvalidConfig) listing every problem, or nil. Only the selected
// policy's section is checked.
func (c *Config) Validate() error {
	if p := c.validate(); len(p) > 0 {
		return &ConfigError{Problems: p}
	}
	return nil
}

func (c *Config) validate() []string {
	var p []string
	if c.Policy == "" {
		c.Policy = PolicyMu
	}
	if c.MaxInstances == 0 {
		c.MaxInstances = 100
	}
	if c.MinInstances < 0 {
		p = append(p, fmt.Sprintf("min_instances: %d, want ≥ 0", c.MinInstances))
	}
	if c.MaxInstances < 1 || c.MaxInstances > 100000 {
		p = append(p, fmt.Sprintf("max_instances: %d, want 1..100000", c.MaxInstances))
	} else if c.MinInstances > c.MaxInstances {
		p = append(p, fmt.Sprintf("min_instances: %d, above max_instances %d", c.MinInstances, c.MaxInstances))
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Concurrency < 1 || c.Concurrency > 10000 {
		p = append(p, fmt.Sprintf("concurrency: %d, want 1..10000", c.Concurrency))
	}
	if c.SLO == 0 {
		c.SLO = time.Second
	}
	if c.SLO < 0 {
		p = append(p, fmt.Sprintf("slo: %v, want > 0", c.SLO))
	}
	if c.Tick == 0 {
		c.Tick = time.Second
	}
	if c.Tick < time.Millisecond || c.Tick > time.Minute {
		p = append(p, fmt.Sprintf("tick: %v, want 1ms..1m", c.Tick))
	}
	switch c.Policy {
	case PolicyMu:
		p = append(p, c.Mu.validate("mu", c)...)
	case PolicyKPA:
		p = append(p, c.KPA.validate("kpa", c)...)
	case PolicyFixed:
		p = append(p, c.Fixed.validate("fixed", c)...)
	default:
		p = append(p, fmt.Sprintf("policy: unknown %q, want mu, kpa or fixed", c.Policy))
	}
	return p
}

// Observation is what the daemon measured for one function over the
// interval since the previous tick (counters are deltas; gauges are read at
// the tick).
type Observation struct {
	Arrivals    uint64        // requests accepted in the interval
	Completions uint64        // requests finished in the interval
	Busy        time.Duration // total execution time of those completions
	Queued      int           // requests waiting for an instance, now
	InFlight    int           // requests executing, now
	// Concurrency is the mean number of requests in the system (queued +
	// executing) over the interval. If it is 0, Queued+InFlight is used.
	Concurrency float64
	Ready       int // instances taking requests
	Starting    int // instances started, not ready yet
}

// Decision is an autoscaler's answer to one tick.
type Decision struct {
	// Desired is the number of instances (ready + starting) wanted.
	Desired int
	// Raw is what the policy's formula asked for, before stabilisation,
	// rate limits, bounds and scale-to-zero handling.
	Raw int
	// Predicted is mu's forecast arrival rate λ̂ (req/s); 0 for other
	// policies.
	Predicted float64
	// ExecTime is mu's estimate of the mean execution time, and
	// ExecMeasured says whether it comes from completions (false: the
	// configured estimate, μ unknown).
	ExecTime     time.Duration
	ExecMeasured bool
	// Panic is kpa's panic mode.
	Panic bool
	// Reason is a short constant token saying what decided Desired, for
	// logs and `spry top` (see the Reason* constants).
	Reason string
	// Warning is set, once, when the inputs or config make the policy fall
	// back to a defined but degraded behaviour (see the Warn* constants).
	Warning string
}

// Reasons.
const (
	ReasonLoad        = "load"         // sized for the predicted arrival rate
	ReasonQueue       = "queue"        // plus instances to drain the backlog within the SLO
	ReasonStabilizing = "stabilizing"  // scale-down held by the stabilisation window
	ReasonUpLimited   = "up-limited"   // scale-up capped by the rate limit
	ReasonDownLimited = "down-limited" // scale-down capped by the rate limit
	ReasonAtMin       = "at-min"       // raised to MinInstances
	ReasonAtMax       = "at-max"       // capped at MaxInstances
	ReasonKeepWarm    = "keep-warm"    // no load, one instance kept until the idle period passes
	ReasonIdle        = "idle"         // idle period passed: scaled to MinInstances (zero)
	ReasonStable      = "stable"       // kpa: stable-window average
	ReasonPanic       = "panic"        // kpa: panic mode, no scale-down
	ReasonHold        = "hold"         // kpa: between decisions, previous count kept
	ReasonGrace       = "grace"        // kpa: zero wanted, waiting out stable window + grace
	ReasonFixed       = "fixed"        // fixed policy
)

// Warnings.
const (
	WarnSLONotAboveExec = "slo not above mean execution time: sizing for no queueing, backlog drained within one tick"
)

func (d Decision) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "desired=%d raw=%d", d.Desired, d.Raw)
	if d.Predicted != 0 || d.ExecTime != 0 {
		fmt.Fprintf(&b, " pred=%.1f", d.Predicted)
	}
	if d.ExecTime != 0 {
		src := "measured"
		if !d.ExecMeasured {
			src = "hint"
		}
		fmt.Fprintf(&b, " exec=%v(%s)", d.ExecTime.Round(10*time.Microsecond), src)
	}
	if d.Panic {
		b.WriteString(" panic")
	}
	fmt.Fprintf(&b, " reason=%s", d.Reason)
	if d.Warning != "" {
		fmt.Fprintf(&b, " warning=%q", d.Warning)
	}
	return b.String()
}

// Autoscaler is a deterministic state machine sizing one function. The
// daemon calls Tick once per control period with its monotonic clock and
// what it observed since the previous call, then starts or drains instances
// to reach Decision.Desired. Tick allocates nothing. Not safe for
// concurrent use.
type Autoscaler interface {
	Tick(now time.Duration, o Observation) Decision
}

// Urgent is implemented by policies that may scale up between ticks (mu):
// given what the daemon samples now (the gauges as in a tick, and
// Arrivals counted since the last tick; now on the clock Tick gets), it
// answers the instances wanted at once, and ok only when that is more
// than are ready or starting. It must not change the policy's state, so
// ticks stay the only decisions.
type Urgent interface {
	Urgent(now time.Duration, o Observation) (desired int, ok bool)
}

// Waker is implemented by policies that scale to zero: Woken tells them
// (now on Tick's clock) that an instance was started at once for a
// request that found the function at zero (Fleet.Wake). That is activity:
// until the request reaches the instance, the counters show none, and the
// next tick must not take the instance for idle and stop it again.
type Waker interface {
	Woken(now time.Duration)
}

// New returns the autoscaler cfg selects, or the config's problems.
func New(cfg Config) (Autoscaler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch cfg.Policy {
	case PolicyKPA:
		return newKPA(cfg), nil
	case PolicyFixed:
		return &fixed{n: cfg.Fixed.Instances}, nil
	}
	return newMu(cfg), nil
}

// FixedConfig configures the fixed policy.
type FixedConfig struct {
	// Instances is the count always asked for. Default max(MinInstances, 1).
	Instances int
}

func (c *FixedConfig) validate(path string, top *Config) []string {
	if c.Instances == 0 {
		c.Instances = max(top.MinInstances, 1)
	}
	if c.Instances < top.MinInstances || c.Instances > top.MaxInstances {
		return []string{fmt.Sprintf("%s.instances: %d, outside [min_instances %d, max_instances %d]",
			path, c.Instances, top.MinInstances, top.MaxInstances)}
	}
	return nil
}

type fixed struct{ n int }

func (f *fixed) Tick(time.Duration, Observation) Decision {
	return Decision{Desired: f.n, Raw: f.n, Reason: ReasonFixed}
}

// toCount rounds a non-negative instance count computed in floating point
// up to an int, saturating at limit (so huge or infinite values cannot
// overflow) and mapping NaN and negatives to 0. A rounding residue of 1e-9
// above an integer does not buy another instance.
func toCount(x float64, limit int) int {
	if !(x > 1e-9) {
		return 0
	}
	if x >= float64(limit) {
		return limit
	}
	return int(math.Ceil(x - 1e-9))
}

// interval returns the seconds elapsed since the previous tick, or the
// nominal tick on the first call or when the clock did not advance.
func interval(now, last time.Duration, first bool, tick time.Duration) float64 {
	if first || now <= last {
		return tick.Seconds()
	}
	return (now - last).Seconds()
}
