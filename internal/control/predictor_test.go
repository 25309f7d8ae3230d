package control

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/spry-dev/spry/internal/control/trace"
)

func mustPredictor(t testing.TB, cfg PredictorConfig) *Predictor {
	t.Helper()
	p, err := NewPredictor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// randomRates is a rate sequence with levels, ramps, bursts and zero runs.
func randomRates(rng *rand.Rand, n int) []float64 {
	xs := make([]float64, n)
	level := 100.0
	for i := range xs {
		switch rng.IntN(40) {
		case 0:
			level = rng.Float64() * 1000
		case 1:
			level = 0
		}
		x := level * (1 + 0.2*(rng.Float64()-0.5))
		if rng.IntN(50) == 0 {
			x *= 5
		}
		xs[i] = math.Round(x*1000) / 1000
	}
	return xs
}

// The O(1) sliding-window features must match least squares computed from
// scratch over the window.
func TestPredictorWindowsMatchBruteForce(t *testing.T) {
	t.Parallel()
	windows := []int{1, 2, 3, 10, 37}
	rng := rand.New(rand.NewPCG(3, 4))
	for run := range 5 {
		h := 1 + run%3
		p := mustPredictor(t, PredictorConfig{Windows: windows, Horizon: h})
		xs := randomRates(rng, 400)
		for i, x := range xs {
			p.Observe(x)
			for wi, w := range windows {
				n := min(w, i+1)
				win := xs[i+1-n : i+1]
				// Reference: fit x = a + b·τ over τ = 0..n−1 (oldest first),
				// evaluate at τ = n−1+h; feature = forecast − mean.
				var mt, mx float64
				for k, v := range win {
					mt += float64(k)
					mx += v
				}
				mt /= float64(n)
				mx /= float64(n)
				var sxy, sxx float64
				for k, v := range win {
					sxy += (float64(k) - mt) * (v - mx)
					sxx += (float64(k) - mt) * (float64(k) - mt)
				}
				trend := 0.0
				if sxx > 0 {
					trend = sxy / sxx * (float64(n-1+h) - mt)
				}
				f := p.wins[wi].feat
				tol := 1e-9 * (1 + math.Abs(mx)*float64(n))
				if f[0] != x || math.Abs(f[1]-mx) > tol || math.Abs(f[2]-trend) > 1e-6*(1+math.Abs(mx)) {
					t.Fatalf("run %d sample %d window %d: features %v, want [%v %v %v]", run, i, w, f, x, mx, trend)
				}
			}
		}
	}
}

func TestPredictorDeterministic(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	xs := randomRates(rng, 3000)
	for _, seed := range []uint64{0, 1, 42} {
		a := mustPredictor(t, PredictorConfig{Seed: seed})
		b := mustPredictor(t, PredictorConfig{Seed: seed})
		for i, x := range xs {
			fa, fb := a.Observe(x), b.Observe(x)
			wa, ra, ea := a.Chosen()
			wb, rb, eb := b.Chosen()
			if math.Float64bits(fa) != math.Float64bits(fb) || wa != wb || ra != rb || ea != eb || a.Error() != b.Error() {
				t.Fatalf("seed %d sample %d: %v (%d,%v) vs %v (%d,%v)", seed, i, fa, wa, ra, fb, wb, rb)
			}
		}
	}
}

func TestPredictorClamps(t *testing.T) {
	t.Parallel()
	p := mustPredictor(t, PredictorConfig{})
	inputs := []float64{10, 20, 40, 80, math.NaN(), -5, math.Inf(1), 3e7, math.Inf(-1), 0, 1e-9, 500, 0, 0}
	maxSeen := 0.0
	for i, x := range inputs {
		f := p.Observe(x)
		if x > 0 {
			maxSeen = max(maxSeen, min(x, MaxRate))
		}
		if !(f >= 0 && f <= p.MaxSeen()) || math.IsNaN(f) {
			t.Fatalf("input %d (%v): forecast %v outside [0, %v]", i, x, f, p.MaxSeen())
		}
	}
	if p.MaxSeen() != MaxRate {
		t.Fatalf("MaxSeen = %v, want %v (clamped)", p.MaxSeen(), MaxRate)
	}
	// A falling ramp would extrapolate below zero; the forecast stops at 0.
	q := mustPredictor(t, PredictorConfig{Windows: []int{10}, LearningRates: []float64{0.01}})
	for i := range 12 {
		if f := q.Observe(float64(100 - 10*i)); f < 0 {
			t.Fatalf("ramp: forecast %v < 0", f)
		}
	}
}

// After traffic stops, the forecast becomes exactly zero (fixed-point sums
// leave no residue), so a function can scale to zero.
func TestPredictorZeroAfterTraffic(t *testing.T) {
	t.Parallel()
	p := mustPredictor(t, PredictorConfig{})
	rng := rand.New(rand.NewPCG(7, 8))
	for range 2000 {
		p.Observe(100 + 37*rng.Float64())
	}
	for range 1500 {
		p.Observe(0)
	}
	if f := p.Forecast(); f != 0 {
		t.Fatalf("forecast after 1500 idle samples = %v, want exactly 0", f)
	}
}

func TestPredictorLevelAndTrend(t *testing.T) {
	t.Parallel()
	p := mustPredictor(t, PredictorConfig{})
	for range 300 {
		p.Observe(123.456)
	}
	if f := p.Forecast(); math.Abs(f-123.456) > 1e-9 {
		t.Fatalf("constant 123.456: forecast %v", f)
	}
	// A clean ramp: every least-squares model extrapolates it exactly, so
	// the forecast for the next sample is the next value (up to clamping
	// at the highest rate seen: the forecast never exceeds it).
	r := mustPredictor(t, PredictorConfig{Horizon: 1})
	for i := range 200 {
		r.Observe(float64(10 + 2*i))
	}
	if f := r.Forecast(); math.Abs(f-408) > 1e-6 {
		t.Fatalf("ramp: forecast %v, want ≤ max seen 408", f)
	}
}

// meanAbsError replays rps through p and returns the mean absolute error of
// its h-ahead forecasts.
func meanAbsError(p *Predictor, h int, rps []float64) float64 {
	f := make([]float64, len(rps)+h)
	s := 0.0
	for i, x := range rps {
		if i >= h {
			s += math.Abs(x - f[i])
		}
		f[i+h] = p.Observe(x)
	}
	return s / float64(len(rps)-h)
}

// The Hedge draw has low regret: on real and generated traces its forecast
// error is close to that of the best single model in hindsight.
func TestPredictorNoRegret(t *testing.T) {
	t.Parallel()
	traces := map[string]trace.Trace{
		"bursty":  trace.Bursty(1, 1440, 60),
		"idle":    trace.IdleGaps(1, 1440, 100),
		"diurnal": trace.Diurnal(1, 1440, 200, 600),
	}
	for _, name := range []string{"azure_workload_1", "azure_workload_2"} {
		tr, ok := trace.Builtin(name)
		if !ok {
			t.Fatalf("no builtin trace %s", name)
		}
		traces[name] = tr
	}
	var def PredictorConfig
	def.validate("")
	for _, name := range []string{"azure_workload_1", "azure_workload_2", "bursty", "idle", "diurnal"} {
		rps := traces[name].RPS
		bank := meanAbsError(mustPredictor(t, PredictorConfig{}), 1, rps)
		greedy := meanAbsError(mustPredictor(t, PredictorConfig{Temperature: 1000}), 1, rps)
		best := math.Inf(1)
		for _, w := range def.Windows {
			for _, r := range def.LearningRates {
				m := meanAbsError(mustPredictor(t, PredictorConfig{Windows: []int{w}, LearningRates: []float64{r}}), 1, rps)
				best = min(best, m)
			}
		}
		t.Logf("%-17s MAE bank %.2f  greedy %.2f  best single model %.2f", name, bank, greedy, best)
		if bank > 1.1*best {
			t.Errorf("%s: bank MAE %.2f more than 10%% above the best single model's %.2f", name, bank, best)
		}
	}
}

func TestPredictorAllocs(t *testing.T) {
	p := mustPredictor(t, PredictorConfig{Horizon: 3})
	x := 0.0
	if n := testing.AllocsPerRun(1000, func() {
		x += 1.5
		p.Observe(math.Mod(x, 200))
	}); n != 0 {
		t.Fatalf("Observe allocates %v times, want 0", n)
	}
}

func TestPredictorConfig(t *testing.T) {
	t.Parallel()
	_, err := NewPredictor(PredictorConfig{Windows: []int{10, -1}, LearningRates: []float64{2}, Horizon: -1, ErrorDecay: 2, Temperature: -1})
	var ce *ConfigError
	if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce) || len(ce.Problems) != 5 {
		t.Fatalf("err = %v, want 5 problems wrapping ErrInvalidConfig", err)
	}
	p := mustPredictor(t, PredictorConfig{})
	if p.Models() != 6*3 {
		t.Fatalf("default bank has %d models, want 18", p.Models())
	}
	// The config's slices are copied: changing them later changes nothing.
	ws := []int{5, 10}
	q := mustPredictor(t, PredictorConfig{Windows: ws})
	ws[0] = 999
	if q.wins[0].size != 5 {
		t.Fatal("predictor aliases the caller's Windows slice")
	}
}

func BenchmarkPredictorObserve(b *testing.B) {
	p := mustPredictor(b, PredictorConfig{})
	b.ReportAllocs()
	for i := range b.N {
		p.Observe(float64(100 + i%50))
	}
}
