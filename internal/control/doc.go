// Package control holds the deterministic parts of Spry's control plane:
// the arrival-rate [Predictor], the per-function [Autoscaler] policies (mu,
// kpa, fixed) and the load balancer's [Capacities].
//
// Everything here is a state machine or a pure function. Observations and
// the clock come in, decisions go out; the daemon owns time, goroutines and
// I/O. Nothing reads a clock, iterates a map or uses an unseeded random
// source, so a recorded sequence of observations replays to the same
// decisions (testdata/*.txt are such recordings). Per-tick calls allocate
// nothing.
//
// # Driving it
//
// Once per control tick (1 s by default; the daemon's choice) the daemon
// reads each function's counters from the pool and feeds the deltas to
// that function's autoscaler:
//
//	cfg := control.Config{Policy: "mu", MaxInstances: 32, Concurrency: 4,
//		SLO: 200 * time.Millisecond}
//	cfg.Mu.ColdStart = 300 * time.Millisecond // measured start-to-ready time
//	a, err := control.New(cfg) // err lists every bad field: "mu.percentile: …"
//
//	for now := range ticks { // now: the daemon's monotonic clock
//		o := control.Observation{
//			Arrivals:    arrivals - lastArrivals, // Σ SlotStats.Arrivals delta
//			Completions: served - lastServed,     // Σ SlotStats.Served delta
//			Busy:        time.Duration(busy - lastBusy), // Σ BusyNanos delta
//			Queued:      queued,   // Σ SlotStats.Queue (+ gateway backlog)
//			InFlight:    inFlight, // Σ SlotStats.InFlight
//			Concurrency: meanInSystem, // optional; else Queued+InFlight
//			Ready:       ready, Starting: starting,
//		}
//		d := a.Tick(now, o)
//		if d.Warning != "" {
//			slog.Warn("autoscaler", "fn", name, "warning", d.Warning)
//		}
//		switch cur := ready + starting; {
//		case d.Desired > cur: // start d.Desired-cur instances
//		case d.Desired < cur: // cancel starting ones first, then drain ready ones
//		}
//		// d.Reason, d.Predicted, d.ExecTime feed `spry top`.
//	}
//
// and refreshes the routing table's capacities from per-instance service
// rates:
//
//	for i, s := range slots {
//		rates[i] = control.ServiceRate(served[s], busy[s], concurrency)
//	}
//	caps = control.Capacities(caps, rates)
//	for i, s := range slots { p.SetCapacity(s, caps[i]) }
//
// # The mu policy
//
// Mu (Mittal et al., SoCC 2021) sizes a function from its SLO instead of a
// concurrency target:
//
//	N = ceil(λ̂/μ) + ceil(Q / (μ·(SLO − T_exec)))
//
// λ̂ the predicted arrival rate, μ = Concurrency / T_exec one instance's
// service rate, Q the queued requests. Replaying the Azure traces and
// generated bursty traces in the simulator (package sim) showed three ways
// this literal form fails, and the policy implements the fix for each:
//
//  1. ceil(λ̂/μ) sizes for 100% utilisation. With Poisson arrivals an
//     M/G/c queue at ρ → 1 always has a queue, so the Q term fires on
//     noise every few ticks, adds an instance, and the stabiliser holds it
//     (flapping, plus SLO misses on every upward fluctuation). The load
//     term instead takes the fewest instances for which, by Erlang C,
//     P(queueing delay > SLO − T_exec) ≤ 1 − Percentile at the forecast
//     rate: ceil(λ̂/μ) plus a square-root safety margin, derived from the
//     SLO rather than a fixed utilisation target.
//  2. The forecast lags every level shift (no model foresees a jump).
//     The load term sizes for max(λ̂ + ErrorMargin × the predictor's
//     recent mean absolute error, the rate observed in the last tick):
//     the margin is wide when the forecast has been wrong and narrow in
//     steady traffic, and capacity never drops below what is arriving now
//     (without that, a shift from 90 to 200 req/s was met with a backlog
//     term one tick and a scale-down the next).
//  3. The backlog term asked to drain Q within SLO − T_exec, which new
//     instances cannot do before their cold start (a burst with Q = 622
//     asked for 311 extra instances that arrived after the backlog had
//     gone, and were then held by the stabiliser). It is now the fluid
//     requirement ceil((λ + Q'/D)/μ) with D = max(SLO − T_exec, cold
//     start), λ = max(λ̂, observed rate) (the forecast lags at a burst's
//     onset), and Q' the backlog expected once new instances are up. The
//     policy takes the larger of the two terms (not their sum: the load
//     term's margin already absorbs ordinary queueing), and only the load
//     term is stabilised, so backlog capacity leaves once the backlog has.
//
// Then: scale-up at most MaxScaleUpRate× per tick; scale-down no lower
// than the highest load term of the last StabilizationWindow and at most
// 1/MaxScaleDownRate per tick; [MinInstances, MaxInstances]; with
// MinInstances 0, one instance kept warm until IdlePeriod without traffic,
// then zero. T_exec is measured (decayed busy time / completions); until
// the first completion (μ unknown) MuConfig.ExecTime stands in and
// Decision.ExecMeasured is false. An SLO not above T_exec cannot be met:
// the decision carries WarnSLONotAboveExec once and both terms use one
// tick (or the cold start) in place of SLO − T_exec — bounded, never a
// division by zero, NaN or Inf.
//
// # The predictor and why a Hedge draw
//
// The Predictor keeps one online linear-regression model per (window,
// learning rate) pair, windows 10, 50, 100, 500 and 1000 samples by
// default. A model's features are the last sample, the window mean and the
// window's least-squares trend extrapolated to the forecast horizon, kept
// in O(1) per sample from exact integer window sums; its weights start as
// the plain least-squares forecast and are trained by normalised LMS at
// its learning rate. Every model is updated and scored (decaying average
// absolute error) on every sample.
//
// Because every model is scored on every sample, choosing among them is a
// bandit problem with full-information feedback, and the algorithm for
// that is Hedge (exponential weights; EXP3 is its bandit-feedback variant
// and reduces to it when every arm's loss is observed). It is chosen over
// the alternatives for these reasons:
//   - Discounted UCB's exploration bonus depends on how often each arm was
//     pulled; here every arm is observed every round, so all bonuses are
//     equal and it degenerates to a greedy pick.
//   - Thompson sampling needs a likelihood for the errors; forecast errors
//     of bursty traffic are heavy-tailed and non-stationary, so any
//     Gaussian or Beta model of them is wrong exactly when it matters.
//   - Hedge assumes nothing stochastic: its regret bound holds for
//     adversarial loss sequences, which request traces (bursts, diurnal
//     shifts, idle gaps) resemble far more than i.i.d. rewards. Its
//     randomised choice is what avoids the known failure of greedy
//     follow-the-leader, which loses on every switch when near-tied models
//     alternate as leader.
//
// The implementation is discounted Hedge: the decaying average errors act
// as discounted cumulative losses (so the choice tracks regime changes),
// weights are exp(−β·(err − best)/scale) with scale the best model's error
// (a scale-free learning rate, β = Temperature, default 32), and one model
// is drawn per sample from a PCG seeded by PredictorConfig.Seed, so runs
// are reproducible. On the Azure and generated traces its one-step mean
// absolute error is within a few percent of the best single model in
// hindsight and of a greedy pick (TestPredictorNoRegret checks the first).
//
// Forecasts are clamped to [0, highest rate seen]; rates are handled in
// fixed point (milli-requests per second), so window sums never drift and
// a window of zeros forecasts exactly zero. Results are deterministic for
// a given build and architecture (Go may fuse floating-point operations
// differently across architectures).
//
// # The kpa policy
//
// A reimplementation (not a copy) of Knative's KPA with its defaults:
// observed concurrency averaged in 1 s buckets over a 60 s stable and 6 s
// panic window; desired = ceil(average / (Concurrency × 0.7)); decisions
// every 2 s (at once when requests wait with no instance, as Knative's
// activator pokes the autoscaler); each decision within
// [floor(ready/2), ceil(ready×1000)]; panic when the panic-window count
// reaches 2× the ready instances, no scale-down while panicking, panic
// over after a stable window without the condition; scale to zero only
// after the stable window plus a 30 s grace period without traffic.
//
// # Load-balancer capacities
//
// The data path picks the instance minimising (Q_i + 1)/Cap_i. Capacities
// makes Cap_i proportional to each instance's measured service rate, so
// slow and fast instances get shares proportional to what they can serve;
// an instance without a measurement gets the mean.
package control
