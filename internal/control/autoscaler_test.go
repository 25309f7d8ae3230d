package control

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"strings"
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
			MaxScaleUpRate: 10, MaxScaleDownRate: 1.25, ErrorMargin: 1, Percentile: 0.99, Attainment: 0.99, SLOWindow: time.Second,
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
	c := Config{MinInstances: -1, MaxInstances: -2, Concurrency: -3, SLO: -1, Mu: MuConfig{Percentile: 2, SLOWindow: time.Microsecond}}
	err := c.Validate()
	var ce *ConfigError
	if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	if len(ce.Problems) != 6 || !strings.Contains(err.Error(), "mu.slo_window: 1µs") {
		t.Fatalf("problems = %q, want 6 with mu.slo_window", ce.Problems)
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
		if u, ok := a.(Urgent); ok {
			n := testing.AllocsPerRun(1000, func() {
				i++
				u.Urgent(now+500*time.Millisecond, Observation{Arrivals: uint64(60 + i%90), Queued: i % 40, InFlight: 10, Ready: 8})
			})
			if n != 0 {
				t.Errorf("%s: Urgent allocates %v times, want 0", p, n)
			}
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
		got := sizeForSLO(lambda, exec, conc, slack, eps, eps, 1000)
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
	if n := sizeForSLO(1e9, 0.1, 1, 0.1, 0.01, 0.01, 500); n != 500 {
		t.Fatalf("huge load: %d, want the limit 500", n)
	}
	if n := sizeForSLO(math.NaN(), 0.1, 1, 0.1, 0.01, 0.01, 500); n != 0 {
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
	// SLO judged over 10 s windows (1,000 requests each): the load term
	// sizes for ~1% of requests waiting past the slack.
	cfg := Config{MaxInstances: 8, SLO: 50 * time.Millisecond, Mu: MuConfig{ColdStart: 10 * time.Millisecond, MaxScaleUpRate: 3, SLOWindow: 10 * time.Second}}
	a := mustNew(t, cfg)
	u, ok := a.(Urgent)
	if !ok {
		t.Fatal("mu does not implement Urgent")
	}
	if n, ok := u.Urgent(6*time.Second, Observation{Ready: 1, Queued: 100}); ok {
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
	if n, ok := u.Urgent(6*time.Second, Observation{Ready: 1}); ok {
		t.Fatalf("no queue: Urgent = %d", n)
	}
	if n, ok := u.Urgent(6*time.Second, Observation{Ready: 1, InFlight: 1, Queued: 2}); ok {
		t.Fatalf("a queue one instance drains within the slack: Urgent = %d", n)
	}
	// 3 queued at the last tick's rate: (100 + 3/0.045)/200 = 0.83, one
	// instance drains it. But when the rate since the tick is higher (95
	// arrivals in 0.5 s: 190 req/s), the same queue is a growing one:
	// (190 + 3/0.045)/200 = 1.28 → 2. A lower rate since the tick does
	// not lower the last tick's.
	if n, ok := u.Urgent(5*time.Second+100*time.Millisecond, Observation{Arrivals: 5, Ready: 1, InFlight: 1, Queued: 3}); ok {
		t.Fatalf("3 queued at 100 req/s: Urgent = %d", n)
	}
	if n, ok := u.Urgent(5*time.Second+500*time.Millisecond, Observation{Arrivals: 95, Ready: 1, InFlight: 1, Queued: 3}); !ok || n != 2 {
		t.Fatalf("3 queued at 190 req/s since the tick: Urgent = %d, %v; want 2", n, ok)
	}
	// 20 queued: (100 + 20/0.045)/200 = 2.7 → 3.
	if n, ok := u.Urgent(6*time.Second, Observation{Ready: 1, InFlight: 1, Queued: 20}); !ok || n != 3 {
		t.Fatalf("20 queued: Urgent = %d, %v; want 3", n, ok)
	}
	// 200 queued asks for 23; the up-rate limit (3 × 1) and then the
	// maximum (8, with 3 up) bound it.
	if n, ok := u.Urgent(6*time.Second, Observation{Ready: 1, Queued: 200}); !ok || n != 3 {
		t.Fatalf("200 queued, 1 up: Urgent = %d, %v; want 3 (up-rate limit)", n, ok)
	}
	if n, ok := u.Urgent(6*time.Second, Observation{Ready: 3, Queued: 200}); !ok || n != 8 {
		t.Fatalf("200 queued, 3 up: Urgent = %d, %v; want 8 (max)", n, ok)
	}
	if n, ok := u.Urgent(6*time.Second, Observation{Ready: 3, Starting: 5, Queued: 200}); ok {
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

// binomialTail is P(Bin(n, p) > k), summed directly.
func binomialTail(n int, p float64, k int) float64 {
	cdf := 0.0
	lp, lq := math.Log(p), math.Log1p(-p)
	for i := 0; i <= k && i <= n; i++ {
		lc, _ := math.Lgamma(float64(n + 1))
		a, _ := math.Lgamma(float64(i + 1))
		b, _ := math.Lgamma(float64(n - i + 1))
		cdf += math.Exp(lc - a - b + float64(i)*lp + float64(n-i)*lq)
	}
	return 1 - cdf
}

// windowTail's share p is the largest for which a window of n requests has
// its q-quantile over the SLO with probability at most 1 − q (Poisson
// count), and it holds for the exact binomial count too.
func TestWindowTail(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(31, 32))
	for range 400 {
		q := []float64{0.9, 0.99, 0.999, 0.5}[rng.IntN(4)]
		n := []int{2, 10, 37, 99, 100, 101, 350, 1000, 30000}[rng.IntN(9)] + rng.IntN(3)
		delta := 1 - q
		p := windowTail(float64(n), q, 1-q)
		k := int(math.Floor(delta * float64(n)))
		if !(p > 0 && p <= delta) {
			t.Fatalf("n=%d q=%v: p=%v outside (0, %v]", n, q, p, delta)
		}
		if k == 0 && p < delta {
			if tail := binomialTail(n, 1.001*p, 0); tail <= delta {
				t.Fatalf("n=%d q=%v: p=%v is not the largest (binomial tail at 1.001p %v)", n, q, p, tail)
			}
		}
		if k >= 1 && k <= 200 {
			if tail := 1 - poissonCDF(float64(k), p*float64(n)); tail > delta*(1+1e-6) {
				t.Fatalf("n=%d q=%v k=%d: P(Poisson(%v) > k) = %v > %v", n, q, k, p*float64(n), tail, delta)
			}
			if p < delta {
				if tail := 1 - poissonCDF(float64(k), 1.001*p*float64(n)); tail <= delta {
					t.Fatalf("n=%d q=%v k=%d: p=%v is not the largest (tail at 1.001p %v)", n, q, k, p, tail)
				}
			}
		}
		if n <= 5000 {
			if tail := binomialTail(n, p, k); tail > delta*(1+1e-3) {
				t.Fatalf("n=%d q=%v k=%d: binomial tail %v > %v at p=%v", n, q, k, tail, delta, p)
			}
		}
	}
	// One request or fewer per window: the window is over when it is.
	for _, n := range []float64{0, 0.3, 1, math.NaN(), -4} {
		if p := windowTail(n, 0.99, 1-0.99); math.Abs(p-0.01) > 1e-12 {
			t.Fatalf("n=%v: p=%v, want 0.01", n, p)
		}
	}
	// Under 100 requests one slow request is the p99: p ≈ 1%/n.
	if p := windowTail(30, 0.99, 1-0.99); math.Abs(p*30-0.01005) > 1e-4 {
		t.Fatalf("n=30: p=%v, want ~0.01/30", p)
	}
	// A window that may miss once in a thousand: p ≈ 0.1%/n, and with
	// many requests a share whose Poisson count exceeds k only that often.
	if p := windowTail(30, 0.99, 0.001); math.Abs(p*30-0.0010005) > 1e-5 {
		t.Fatalf("n=30, miss 0.001: p=%v, want ~0.001/30", p)
	}
	for _, n := range []float64{150, 1000, 30000} {
		p, k := windowTail(n, 0.99, 0.001), math.Floor(0.01*n)
		if tail := 1 - poissonCDF(k, p*n); (k <= 200 && tail > 0.001*(1+1e-3)) || p >= windowTail(n, 0.99, 0.01) {
			t.Fatalf("n=%v, miss 0.001: p=%v, Poisson tail %v", n, p, tail)
		}
	}
	if p := windowTail(1, 0.99, 0.001); p != 0.001 {
		t.Fatalf("n=1, miss 0.001: p=%v, want 0.001", p)
	}
	// Many requests: p approaches 1 − q from below.
	if p := windowTail(1e7, 0.99, 1-0.99); p < 0.0099 || p > 0.01 {
		t.Fatalf("n=1e7: p=%v, want just under 0.01", p)
	}
	// A huge k takes the normal approximation, close to the exact value.
	if a, b := windowTail(20000, 0.99, 1-0.99), windowTail(20100, 0.99, 1-0.99); math.Abs(a-b) > 2e-4 {
		t.Fatalf("k=200 %v vs k=201 %v", a, b)
	}
}

// Whatever it is shown, mu's look between ticks only scales up, within
// the up-rate limit and MaxInstances, and leaves the ticks' decisions as
// a twin that never looked takes them.
func TestMuUrgentProperty(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(41, 42))
	for run := range 200 {
		c := Config{
			MaxInstances: []int{1, 5, 20, 200}[rng.IntN(4)],
			Concurrency:  []int{1, 1, 4}[rng.IntN(3)],
			SLO:          []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, time.Second}[rng.IntN(3)],
		}
		c.Mu.SLOWindow = []time.Duration{0, 100 * time.Millisecond, time.Minute}[rng.IntN(3)]
		c.Mu.Predictor.Seed = uint64(run)
		a, twin := mustNew(t, c), mustNew(t, c)
		u := a.(Urgent)
		now := time.Duration(0)
		for tick := range 60 {
			now += time.Second
			o := randomObservation(rng)
			if da, db := a.Tick(now, o), twin.Tick(now, o); da != db {
				t.Fatalf("run %d tick %d: %v after looks between ticks, %v without", run, tick, da, db)
			}
			for range 3 {
				o := randomObservation(rng)
				at := now + time.Duration(rng.Int64N(int64(time.Second)))
				n, ok := u.Urgent(at, o)
				cur := max(o.Ready, 0) + max(o.Starting, 0)
				up := int(math.Ceil(10 * float64(max(cur, 1))))
				if ok && (n <= cur || n > c.MaxInstances || n > up) || !ok && n != 0 {
					t.Fatalf("run %d tick %d: Urgent(%+v) = %d, %v (cur %d, max %d)", run, tick, o, n, ok, cur, c.MaxInstances)
				}
			}
		}
	}
}
