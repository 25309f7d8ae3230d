package control

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Fixed-point representation of rates inside the predictor: window sums are
// kept exactly in integers (milli-requests per second), so they never drift
// and a window of zeros sums to exactly zero (which lets a function scale to
// zero instead of being held at one instance by a rounding residue).
const (
	rateScale = 1000 // fixed-point units per request per second
	// MaxRate is the largest rate the predictor takes in, in requests per
	// second; larger inputs are clamped. It keeps the windows' integer sums
	// far from overflow (window 10000 × 1e7 req/s × 1000 × 10000/2 < 2^63).
	MaxRate   = 1e7
	maxWindow = 10000
	maxHoriz  = 3600
)

// PredictorConfig configures a [Predictor]. The zero value is valid: validate
// fills in the defaults noted on each field.
type PredictorConfig struct {
	// Windows are the regression window lengths, in samples. Default 1,
	// 10, 50, 100, 500, 1000 (window 1 is the last-value model, the best
	// forecaster right after a level shift).
	Windows []int
	// LearningRates are the normalised-LMS step sizes, each in (0, 2).
	// Every window is paired with every rate. Default 0.01, 0.1, 0.5.
	LearningRates []float64
	// Horizon is how many samples ahead the forecast is for (the daemon
	// sets it to cold-start time / tick, rounded up). Default 1.
	Horizon int
	// ErrorDecay is the weight of the newest absolute error in each model's
	// decaying average error, in (0, 1]. Default 0.1 (~10-sample memory).
	ErrorDecay float64
	// Temperature is the Hedge inverse temperature β: a model whose error
	// exceeds the best model's by a fraction f is drawn with relative
	// weight exp(−β·f). Default 32.
	Temperature float64
	// Seed seeds the arm draw. Same seed and inputs, same forecasts.
	Seed uint64
}

func (c *PredictorConfig) validate(path string) []string {
	var p []string
	if len(c.Windows) == 0 {
		c.Windows = []int{1, 10, 50, 100, 500, 1000}
	} else {
		c.Windows = append([]int(nil), c.Windows...) // own the slice
	}
	for i, w := range c.Windows {
		if w < 1 || w > maxWindow {
			p = append(p, fmt.Sprintf("%s.windows[%d]: %d samples, want 1..%d", path, i, w, maxWindow))
		}
	}
	if len(c.LearningRates) == 0 {
		c.LearningRates = []float64{0.01, 0.1, 0.5}
	} else {
		c.LearningRates = append([]float64(nil), c.LearningRates...)
	}
	for i, r := range c.LearningRates {
		if !(r > 0 && r < 2) {
			p = append(p, fmt.Sprintf("%s.learning_rates[%d]: %v, want in (0, 2)", path, i, r))
		}
	}
	if c.Horizon == 0 {
		c.Horizon = 1
	}
	if c.Horizon < 1 || c.Horizon > maxHoriz {
		p = append(p, fmt.Sprintf("%s.horizon: %d samples, want 1..%d", path, c.Horizon, maxHoriz))
	}
	if c.ErrorDecay == 0 {
		c.ErrorDecay = 0.1
	}
	if !(c.ErrorDecay > 0 && c.ErrorDecay <= 1) {
		p = append(p, fmt.Sprintf("%s.error_decay: %v, want in (0, 1]", path, c.ErrorDecay))
	}
	if c.Temperature == 0 {
		c.Temperature = 32
	}
	if !(c.Temperature > 0 && c.Temperature <= 1000) {
		p = append(p, fmt.Sprintf("%s.temperature: %v, want in (0, 1000]", path, c.Temperature))
	}
	return p
}

// nfeat is the number of regression features per model: the last sample,
// the window mean, and the window's least-squares trend extrapolated from
// the window centre to the forecast horizon.
const nfeat = 3

type window struct {
	size   int
	n      int   // samples in the window (≤ size)
	s1, s2 int64 // Σ x_k and Σ k·x_k over the window, k = age (0 = newest)
	feat   [nfeat]float64
}

type model struct {
	win  int // index into Predictor.wins
	rate float64
	w    [nfeat]float64
	err  float64 // decaying average absolute error, req/s
}

// Predictor forecasts a function's request rate from one sample per tick.
//
// It is a bank of online linear-regression models, one per (window,
// learning rate) pair; every model is updated on every sample and scored by
// a decaying average of its absolute error, and a discounted Hedge draw
// picks the model whose forecast is returned (see the package doc for why).
//
// Observe is O(models), allocates nothing, and is deterministic: no maps,
// no clocks, and its one random source is seeded from the config.
// A Predictor is not safe for concurrent use.
type Predictor struct {
	cfg     PredictorConfig
	ring    []int64 // the last max(Windows) samples, fixed point
	n       int     // samples observed
	wins    []window
	models  []model
	pend    []float64 // [model][horizon slot][nfeat] features of pending forecasts
	pendRaw []float64 // [model][horizon slot] unclamped pending forecasts
	pendOut []float64 // [model][horizon slot] clamped pending forecasts
	weights []float64 // scratch for the draw
	outs    []float64 // [horizon slot] returned forecasts, pending scoring
	outErr  float64   // decaying average absolute error of returned forecasts
	maxSeen float64
	rng     *rand.Rand
	chosen  int
	out     float64
}

// NewPredictor returns a predictor, or an error listing every problem with
// cfg (it wraps [ErrInvalidConfig]).
func NewPredictor(cfg PredictorConfig) (*Predictor, error) {
	if p := cfg.validate("predictor"); len(p) > 0 {
		return nil, &ConfigError{Problems: p}
	}
	return newPredictor(cfg), nil
}

// newPredictor builds a predictor from a validated config.
func newPredictor(cfg PredictorConfig) *Predictor {
	maxW := 0
	for _, w := range cfg.Windows {
		maxW = max(maxW, w)
	}
	p := &Predictor{
		cfg:  cfg,
		ring: make([]int64, maxW),
		wins: make([]window, len(cfg.Windows)),
		rng:  rand.New(rand.NewPCG(cfg.Seed, 0x5eed_c0de_9e37_79b9)),
	}
	for i, w := range cfg.Windows {
		p.wins[i].size = w
	}
	for i := range cfg.Windows {
		for _, r := range cfg.LearningRates {
			// Start as the window's plain least-squares forecast
			// (mean + trend); the LMS steps learn the mix from there.
			p.models = append(p.models, model{win: i, rate: r, w: [nfeat]float64{0, 1, 1}})
		}
	}
	m, h := len(p.models), cfg.Horizon
	p.pend = make([]float64, m*h*nfeat)
	p.pendRaw = make([]float64, m*h)
	p.pendOut = make([]float64, m*h)
	p.weights = make([]float64, m)
	p.outs = make([]float64, h)
	return p
}

// Observe takes the rate seen over the last tick (requests per second; NaN
// and negatives count as 0, values above [MaxRate] as MaxRate) and returns
// the forecast for Horizon samples ahead, clamped to [0, highest rate seen].
func (p *Predictor) Observe(rate float64) float64 {
	if !(rate > 0) { // also NaN
		rate = 0
	}
	rate = min(rate, MaxRate)
	q := int64(math.Round(rate * rateScale))
	x := float64(q) / rateScale
	p.maxSeen = max(p.maxSeen, x)

	h := p.cfg.Horizon
	slot := p.n % h

	// 1. Score and train every model on the forecast it made h samples ago
	// for this sample.
	if p.n >= h {
		d := p.cfg.ErrorDecay
		p.outErr += d * (math.Abs(x-p.outs[slot]) - p.outErr)
		for i := range p.models {
			m := &p.models[i]
			k := i*h + slot
			m.err += d * (math.Abs(x-p.pendOut[k]) - m.err)
			phi := p.pend[k*nfeat : k*nfeat+nfeat]
			norm := phi[0]*phi[0] + phi[1]*phi[1] + phi[2]*phi[2]
			if norm > 1e-9 {
				g := m.rate * (x - p.pendRaw[k]) / norm
				m.w[0] += g * phi[0]
				m.w[1] += g * phi[1]
				m.w[2] += g * phi[2]
			}
		}
	}

	// 2. Slide the windows (exact integer sums, O(1) each).
	pos := p.n % len(p.ring)
	for i := range p.wins {
		w := &p.wins[i]
		if w.n < w.size {
			w.s2 += w.s1 // every sample ages by one
			w.s1 += q
			w.n++
		} else {
			// The sample leaving this window is w.size samples old.
			old := p.ring[(pos-w.size+len(p.ring))%len(p.ring)]
			w.s2 += w.s1 - int64(w.size)*old
			w.s1 += q - old
		}
	}
	p.ring[pos] = q
	p.n++

	// 3. Features per window: last sample, mean, and the least-squares
	// line's rise from the window centre to the forecast target.
	for i := range p.wins {
		w := &p.wins[i]
		n := float64(w.n)
		s1 := float64(w.s1) / rateScale
		s2 := float64(w.s2) / rateScale
		w.feat[0] = x
		w.feat[1] = s1 / n
		w.feat[2] = 0
		if w.n >= 2 {
			// Regress x on age k = 0..n−1: slope per sample of age is
			// (nΣkx − ΣkΣx) / (nΣk² − (Σk)²); the slope in time is its
			// negative. Σk = n(n−1)/2, nΣk² − (Σk)² = n²(n²−1)/12.
			sk := n * (n - 1) / 2
			den := n * n * (n*n - 1) / 12
			slope := -(n*s2 - sk*s1) / den
			w.feat[2] = slope * (float64(h) + (n-1)/2)
		}
	}

	// 4. Every model forecasts; remember features for its later update.
	best := math.Inf(1)
	for i := range p.models {
		m := &p.models[i]
		f := &p.wins[m.win].feat
		raw := m.w[0]*f[0] + m.w[1]*f[1] + m.w[2]*f[2]
		k := i*h + slot
		copy(p.pend[k*nfeat:k*nfeat+nfeat], f[:])
		p.pendRaw[k] = raw
		p.pendOut[k] = clamp(raw, 0, p.maxSeen)
		best = min(best, m.err)
	}

	// 5. Discounted Hedge: draw a model with weight exp(−β·(err−best)/scale).
	// The scale is the best error (floored so that exact forecasts do not
	// make the draw infinitely sharp), which makes β unit-free.
	scale := max(best, 1e-3*p.maxSeen, 1e-6)
	beta := p.cfg.Temperature
	total := 0.0
	for i := range p.models {
		wt := math.Exp(-beta * (p.models[i].err - best) / scale)
		p.weights[i] = wt
		total += wt
	}
	u := p.rng.Float64() * total
	p.chosen = len(p.models) - 1
	for i, wt := range p.weights {
		if u < wt {
			p.chosen = i
			break
		}
		u -= wt
	}
	p.out = p.pendOut[p.chosen*h+slot]
	p.outs[slot] = p.out
	return p.out
}

// Error returns the decaying average absolute error of the forecasts
// Observe returned (same decay as the models' scores), in req/s: how far
// off the predictor has recently been.
func (p *Predictor) Error() float64 { return p.outErr }

// Forecast returns the last forecast (0 before the first sample).
func (p *Predictor) Forecast() float64 { return p.out }

// Chosen returns the window and learning rate of the model behind the last
// forecast, and its decaying average absolute error.
func (p *Predictor) Chosen() (window int, rate, err float64) {
	m := &p.models[p.chosen]
	return p.wins[m.win].size, m.rate, m.err
}

// Models returns the number of models in the bank.
func (p *Predictor) Models() int { return len(p.models) }

// MaxSeen returns the highest rate observed so far.
func (p *Predictor) MaxSeen() float64 { return p.maxSeen }

func clamp(x, lo, hi float64) float64 {
	if !(x > lo) { // also NaN
		return lo
	}
	if x > hi {
		return hi
	}
	return x
}
