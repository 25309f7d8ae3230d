package control

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func mustNew(t testing.TB, c Config) Autoscaler {
	t.Helper()
	a, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Policy: PolicyMu, MinInstances: 0, MaxInstances: 100, Concurrency: 1,
		SLO: time.Second, Tick: time.Second,
		Mu: MuConfig{
			ExecTime: 100 * time.Millisecond, ColdStart: time.Second, ExecHalfLife: 10 * time.Second,
			MaxScaleUpRate: 10, MaxScaleDownRate: 1.25, ErrorMargin: 1, Percentile: 0.99,
			StabilizationWindow: 30 * time.Second, IdlePeriod: time.Minute,
			Predictor: PredictorConfig{
				Windows: []int{1, 10, 50, 100, 500, 1000}, LearningRates: []float64{0.01, 0.1, 0.5},
				Horizon: 1, ErrorDecay: 0.1, Temperature: 32,
			},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("mu defaults:\n got %+v\nwant %+v", c, want)
	}
	k := Config{Policy: PolicyKPA}
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	wantK := KPAConfig{TargetUtilization: 0.7, SampleInterval: time.Second, DecisionInterval: 2 * time.Second,
		StableWindow: time.Minute, PanicWindow: 6 * time.Second, PanicThreshold: 2,
		MaxScaleUpRate: 1000, MaxScaleDownRate: 2, ScaleToZeroGrace: 30 * time.Second}
	if k.KPA != wantK {
		t.Fatalf("kpa defaults:\n got %+v\nwant %+v", k.KPA, wantK)
	}
	f := Config{Policy: PolicyFixed, MinInstances: 3}
	if err := f.Validate(); err != nil || f.Fixed.Instances != 3 {
		t.Fatalf("fixed default = %d, %v; want 3", f.Fixed.Instances, err)
	}
	// The forecast horizon follows the cold start.
	h := Config{Mu: MuConfig{ColdStart: 2500 * time.Millisecond}}
	if err := h.Validate(); err != nil || h.Mu.Predictor.Horizon != 3 {
		t.Fatalf("horizon for a 2.5s cold start = %d, %v; want 3", h.Mu.Predictor.Horizon, err)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	c := Config{MinInstances: -1, MaxInstances: -2, Concurrency: -3, SLO: -1, Mu: MuConfig{Percentile: 2}}
	err := c.Validate()
	var ce *ConfigError
	if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	if len(ce.Problems) != 5 {
		t.Fatalf("problems = %q, want 5", ce.Problems)
	}
	if _, err := New(Config{Policy: "nope"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("unknown policy: %v", err)
	}
}

// randomObservation draws adversarial inputs: zeros, huge counts, negative
// gauges, NaN concurrency, completions without busy time.
func randomObservation(rng *rand.Rand) Observation {
	pick := func(vals ...int) int { return vals[rng.IntN(len(vals))] }
	o := Observation{
		Arrivals:    uint64(pick(0, 0, 1, 10, 100, 1000, 1e6, 1e12)),
		Completions: uint64(pick(0, 1, 10, 100, 1e6)),
		Busy:        time.Duration(pick(0, 1, int(time.Millisecond), int(time.Second), int(time.Hour), math.MaxInt64)),
		Queued:      pick(0, 0, 1, 5, 100, 1e6, -3),
		InFlight:    pick(0, 1, 10, 1000, -1),
		Concurrency: []float64{0, 0.5, 3, 1e4, math.NaN(), math.Inf(1), -2}[rng.IntN(7)],
		Ready:       pick(0, 1, 2, 5, 20, 100, 5000, -1),
		Starting:    pick(0, 0, 1, 3, -2),
	}
	return o
}

// Every decision stays within [min, max] and the rate limits, and its
// numbers are finite, whatever the inputs.
func TestAutoscalerBoundsProperty(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(11, 12))
	for run := range 300 {
		c := Config{
			Policy:       []string{PolicyMu, PolicyKPA, PolicyFixed}[run%3],
			MinInstances: []int{0, 0, 1, 3}[rng.IntN(4)],
			MaxInstances: []int{1, 5, 20, 200}[rng.IntN(4)],
			Concurrency:  []int{1, 1, 4, 100}[rng.IntN(4)],
			SLO:          []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second}[rng.IntN(3)],
		}
		c.MinInstances = min(c.MinInstances, c.MaxInstances)
		c.Mu.ExecTime = []time.Duration{time.Millisecond, 100 * time.Millisecond, 2 * time.Second}[rng.IntN(3)]
		c.Mu.IdlePeriod = []time.Duration{0, 5 * time.Second}[rng.IntN(2)]
		c.Mu.Predictor.Seed = uint64(run)
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		a := mustNew(t, c)
		now := time.Duration(rng.Int64N(int64(time.Hour)))
		for tick := range 200 {
			// Mostly regular ticks, sometimes a repeated or jumping clock.
			now += []time.Duration{time.Second, time.Second, time.Second, 0, 300 * time.Millisecond, time.Minute}[rng.IntN(6)]
			o := randomObservation(rng)
			d := a.Tick(now, o)
			cur := max(o.Ready, 0) + max(o.Starting, 0)
			bad := func(why string) {
				t.Fatalf("run %d tick %d %s: %s\nconfig %+v\nobs %+v\ndecision %v", run, tick, c.Policy, why, c, o, d)
			}
			if d.Desired < c.MinInstances || d.Desired > c.MaxInstances {
				bad("outside [min, max]")
			}
			if math.IsNaN(d.Predicted) || math.IsInf(d.Predicted, 0) || d.Predicted < 0 || d.ExecTime < 0 || d.ExecTime > time.Hour || d.Raw < 0 {
				bad("non-finite or negative numbers")
			}
			if d.Reason == "" {
				bad("no reason")
			}
			switch c.Policy {
			case PolicyMu:
				up := int(math.Ceil(c.Mu.MaxScaleUpRate * float64(max(cur, 1))))
				if d.Desired > cur && d.Desired > max(up, c.MinInstances) {
					bad("scale-up beyond the rate limit")
				}
				low := int(float64(cur) / c.Mu.MaxScaleDownRate)
				if d.Desired < cur && d.Desired < min(low, c.MaxInstances) &&
					!(d.Reason == ReasonIdle || d.Desired == c.MinInstances && d.Reason == ReasonAtMin) {
					bad("scale-down beyond the rate limit")
				}
			case PolicyKPA:
				if d.Reason == ReasonHold {
					break // the previous decision, made on earlier inputs
				}
				readyF := float64(max(o.Ready, 1))
				if low := int(readyF / c.KPA.MaxScaleDownRate); d.Desired < min(low, c.MaxInstances) {
					bad("scale-down beyond the rate limit")
				}
				if up := int(math.Ceil(c.KPA.MaxScaleUpRate * readyF)); !d.Panic && d.Desired > max(up, c.MinInstances, 1) {
					bad("scale-up beyond the rate limit")
				}
			case PolicyFixed:
				if d.Desired != c.Fixed.Instances {
					bad("fixed changed")
				}
			}
		}
	}
}

// Same config and inputs, same decisions.
func TestAutoscalerDeterministic(t *testing.T) {
	t.Parallel()
	for _, p := range []string{PolicyMu, PolicyKPA} {
		c := Config{Policy: p, MaxInstances: 50, SLO: 300 * time.Millisecond}
		a, b := mustNew(t, c), mustNew(t, c)
		rng := rand.New(rand.NewPCG(1, 1))
		for i := range 2000 {
			now := time.Duration(i+1) * time.Second
			o := Observation{Arrivals: uint64(rng.IntN(300)), Completions: uint64(rng.IntN(300)),
				Busy: time.Duration(rng.IntN(30)) * time.Second, Queued: rng.IntN(20), Ready: rng.IntN(30)}
			if da, db := a.Tick(now, o), b.Tick(now, o); da != db {
				t.Fatalf("%s tick %d: %v vs %v", p, i, da, db)
			}
		}
	}
}

func TestAutoscalerAllocs(t *testing.T) {
	for _, p := range []string{PolicyMu, PolicyKPA, PolicyFixed} {
		a := mustNew(t, Config{Policy: p, MaxInstances: 50, Concurrency: 4, SLO: 200 * time.Millisecond})
		now := time.Duration(0)
		i := 0
		n := testing.AllocsPerRun(1000, func() {
			now += time.Second
			i++
			a.Tick(now, Observation{Arrivals: uint64(100 + i%70), Completions: 100, Busy: 5 * time.Second,
				Queued: i % 7, InFlight: 10, Concurrency: 12.5, Ready: 8, Starting: i % 2})
		})
		if n != 0 {
			t.Errorf("%s: Tick allocates %v times, want 0", p, n)
		}
	}
}

// erlangTail is a brute-force P(wait > t) for M/M/s with offered load a and
// mean service time exec, from the textbook Erlang C formula in exact
// rational arithmetic (then the exponential in float).
func erlangTail(s int, a, exec, t float64) float64 {
	ar := new(big.Rat).SetFloat64(a)
	term := big.NewRat(1, 1) // a^k / k!
	sum := new(big.Rat)      // Σ_{k<s} a^k/k!
	for k := range s {
		sum.Add(sum, term)
		term.Mul(term, ar)
		term.Quo(term, big.NewRat(int64(k+1), 1))
	}
	// term = a^s/s!; C = term·s/(s−a) / (sum + term·s/(s−a))
	ratio := new(big.Rat).Quo(new(big.Rat).SetInt64(int64(s)), new(big.Rat).Sub(new(big.Rat).SetInt64(int64(s)), ar))
	top := new(big.Rat).Mul(term, ratio)
	c, _ := new(big.Rat).Quo(top, new(big.Rat).Add(sum, top)).Float64()
	return c * math.Exp(-(float64(s)-a)*t/exec)
}

// sizeForSLO returns the smallest count meeting the tail bound, as a
// brute-force search with the textbook formula finds it.
func TestSizeForSLOMatchesBruteForce(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(21, 22))
	for i := range 300 {
		exec := []float64{0.01, 0.1, 0.5}[rng.IntN(3)]
		conc := []int{1, 2, 4}[rng.IntN(3)]
		lambda := rng.Float64() * 40 / exec
		slack := []float64{0, 0.01, 0.1, 1}[rng.IntN(4)]
		eps := []float64{0.01, 0.05, 0.001}[rng.IntN(3)]
		got := sizeForSLO(lambda, exec, conc, slack, eps, 1000)
		a := lambda * exec
		want := 0
		if a > 1e-12 {
			for n := 1; ; n++ {
				s := n * conc
				if float64(s) > a && erlangTail(s, a, exec, slack) <= eps*(1+1e-9) {
					want = n
					break
				}
			}
		}
		if got != want {
			t.Fatalf("case %d: λ=%v exec=%v conc=%d slack=%v eps=%v: got %d, brute force %d",
				i, lambda, exec, conc, slack, eps, got, want)
		}
	}
	if n := sizeForSLO(1e9, 0.1, 1, 0.1, 0.01, 500); n != 500 {
		t.Fatalf("huge load: %d, want the limit 500", n)
	}
	if n := sizeForSLO(math.NaN(), 0.1, 1, 0.1, 0.01, 500); n != 0 {
		t.Fatalf("NaN load: %d, want 0", n)
	}
}

func BenchmarkMuTick(b *testing.B) {
	a := mustNew(b, Config{MaxInstances: 200, SLO: 200 * time.Millisecond})
	b.ReportAllocs()
	for i := range b.N {
		a.Tick(time.Duration(i+1)*time.Second, Observation{Arrivals: uint64(1000 + i%100), Completions: 1000,
			Busy: 100 * time.Second, Ready: 120})
	}
}

// mu's look between ticks: nothing before completions are measured or
// without a queue; a backlog the instances up cannot drain within the
// slack asks for more at once, within the up-rate limit and the maximum;
// and the look changes nothing the next tick sees.
func TestMuUrgent(t *testing.T) {
	t.Parallel()
	cfg := Config{MaxInstances: 8, SLO: 50 * time.Millisecond, Mu: MuConfig{ColdStart: 10 * time.Millisecond, MaxScaleUpRate: 3}}
	a := mustNew(t, cfg)
	u, ok := a.(Urgent)
	if !ok {
		t.Fatal("mu does not implement Urgent")
	}
	if n, ok := u.Urgent(Observation{Ready: 1, Queued: 100}); ok {
		t.Fatalf("before any tick: Urgent = %d", n)
	}
	// 100 req/s of 5 ms requests on one instance: μ = 200/s, no queue.
	steady := Observation{Arrivals: 100, Completions: 100, Busy: 500 * time.Millisecond, Ready: 1}
	var d Decision
	for i := range 5 {
		d = a.Tick(time.Duration(i+1)*time.Second, steady)
	}
	if d.Desired != 1 {
		t.Fatalf("steady 100 req/s at 5 ms: %d instances, want 1", d.Desired)
	}
	if n, ok := u.Urgent(Observation{Ready: 1}); ok {
		t.Fatalf("no queue: Urgent = %d", n)
	}
	if n, ok := u.Urgent(Observation{Ready: 1, InFlight: 1, Queued: 2}); ok {
		t.Fatalf("a queue one instance drains within the slack: Urgent = %d", n)
	}
	// 20 queued: (100 + 20/0.045)/200 = 2.7 → 3.
	if n, ok := u.Urgent(Observation{Ready: 1, InFlight: 1, Queued: 20}); !ok || n != 3 {
		t.Fatalf("20 queued: Urgent = %d, %v; want 3", n, ok)
	}
	// 200 queued asks for 23; the up-rate limit (3 × 1) and then the
	// maximum (8, with 3 up) bound it.
	if n, ok := u.Urgent(Observation{Ready: 1, Queued: 200}); !ok || n != 3 {
		t.Fatalf("200 queued, 1 up: Urgent = %d, %v; want 3 (up-rate limit)", n, ok)
	}
	if n, ok := u.Urgent(Observation{Ready: 3, Queued: 200}); !ok || n != 8 {
		t.Fatalf("200 queued, 3 up: Urgent = %d, %v; want 8 (max)", n, ok)
	}
	if n, ok := u.Urgent(Observation{Ready: 3, Starting: 5, Queued: 200}); ok {
		t.Fatalf("at max already: Urgent = %d", n)
	}
	// No state changed: the next tick decides as a twin that never
	// looked between ticks.
	twin := mustNew(t, cfg)
	for i := range 5 {
		twin.Tick(time.Duration(i+1)*time.Second, steady)
	}
	if got, want := a.Tick(6*time.Second, steady), twin.Tick(6*time.Second, steady); got != want {
		t.Fatalf("tick after Urgent: %+v, twin without: %+v", got, want)
	}
}
