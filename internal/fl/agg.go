package fl

import (
	"fmt"
	"runtime"
	"sync"
)

// Fold strategies of an Aggregator.
const (
	// Eager folds each update into a partial sum as it arrives, so an
	// update's memory is free again at once: memory holds the partial sums,
	// O(aggregators), not O(clients).
	Eager = "eager"
	// WaitAll keeps every update until the round's goal is met, then folds
	// them all (how a server that aggregates at the end works; memory
	// O(clients)). Kept as the reference the eager sums are checked against.
	WaitAll = "wait-all"
)

// Aggregator is one process's FedAvg for one job: the round rules of
// Round, and partial sums in its own memory that updates are folded into
// by the goroutines that received them, several at once. The serverful
// baseline is one of these behind gRPC; the tests check it against
// Reference. (Spry's own aggregation app keeps its partial sums in the
// app's shared-memory pool instead: see App.)
type Aggregator struct {
	mu      sync.Mutex
	cond    *sync.Cond
	job     Job
	mode    string
	max     int          // partial sums at most
	now     func() int64 // the clock (monotonic ns)
	round   *Round
	slots   []*partial
	held    [][]float32 // WaitAll: the round's updates, by ticket index
	model   []float32   // the latest model (never written once published)
	prev    []float32   // the one before
	results []Result
	done    bool
}

type partial struct {
	vec   []float32
	empty bool
	busy  bool
}

// NewAggregator makes job's aggregator, which folds with mode (Eager or
// WaitAll) into at most slots partial sums (0: one a CPU). The model of
// round 0 is init (nil: zeros).
func NewAggregator(job Job, mode string, slots int, init []float32, now func() int64) (*Aggregator, error) {
	if err := job.Validate(); err != nil {
		return nil, err
	}
	if mode != Eager && mode != WaitAll {
		return nil, fmt.Errorf("fl: fold mode %q: want %s or %s", mode, Eager, WaitAll)
	}
	if init != nil && len(init) != job.Params {
		return nil, fmt.Errorf("fl: job %s: initial model has %d parameters, want %d", job.ID, len(init), job.Params)
	}
	if slots <= 0 {
		slots = runtime.GOMAXPROCS(0)
	}
	if init == nil {
		init = make([]float32, job.Params)
	}
	a := &Aggregator{job: job, mode: mode, max: slots, now: now, model: init}
	a.cond = sync.NewCond(&a.mu)
	a.round = NewRound(&a.job, 1, now())
	return a, nil
}

// Job returns the aggregator's job.
func (a *Aggregator) Job() Job { return a.job }

// Ack is an update's answer.
type Ack struct {
	Round   int `json:"round"`
	Folded  int `json:"folded"`  // updates folded in the round so far
	Goal    int `json:"goal"`    // the round's count goal (0: deadline only)
	Partial int `json:"partial"` // the partial sum it went into
}

// Update folds client's update u (Params floats, read in place and not
// kept past the call in Eager mode) of samples samples into round. It
// runs the fold on the calling goroutine, beside other updates' folds.
func (a *Aggregator) Update(client string, round int, samples float64, u []float32) (Ack, *Error) {
	if len(u) != a.job.Params {
		return Ack{}, errorf(statusBadRequest, "the update has %d parameters; job %s's model has %d (%d bytes of little-endian float32)", len(u), a.job.ID, a.job.Params, a.job.Bytes())
	}
	a.mu.Lock()
	if a.done {
		a.mu.Unlock()
		return Ack{}, errorf(statusGone, "job %s ran its %d rounds", a.job.ID, a.job.Rounds)
	}
	t, err := a.round.Admit(client, round, samples, a.now())
	if err != nil {
		a.mu.Unlock()
		return Ack{}, err
	}
	if a.mode == WaitAll {
		return a.keep(t, samples, u)
	}
	slot := a.lend()
	p := a.slots[slot]
	a.mu.Unlock()

	var ok bool
	var bad int
	if p.empty {
		bad, ok = Store(p.vec, u, float32(samples))
	} else {
		bad, ok = Fold(p.vec, u, float32(samples))
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	p.busy = false
	a.cond.Signal()
	if !ok {
		a.round.Refused(t)
		return Ack{}, notFiniteErr(u, bad, samples)
	}
	p.empty = false
	a.round.Folded(t, slot)
	ack := a.ack(t, slot)
	a.closeIfDue()
	return ack, nil
}

func notFiniteErr(u []float32, bad int, samples float64) *Error {
	v := float32(0)
	if bad >= 0 && bad < len(u) {
		v = u[bad]
	}
	return refusedErr(bad, v, samples)
}

// refusedErr is the refusal of an update whose parameter bad (value v) is
// not finite, or overflows the sum.
func refusedErr(bad int, v float32, samples float64) *Error {
	if finite(v) {
		return errorf(statusUnprocessableEntity, "parameter %d (%g) times samples (%g) overflows float32: the update is refused", bad, v, samples)
	}
	return errorf(statusUnprocessableEntity, "parameter %d is %v: an update must hold finite numbers; it is refused", bad, v)
}

func (a *Aggregator) ack(t Ticket, slot int) Ack {
	_, folded := a.round.Counts()
	return Ack{Round: t.Round, Folded: folded, Goal: a.job.Updates, Partial: slot}
}

// lend returns an idle partial sum, marked busy, making one while fewer
// than max exist, else waiting for one. Called with mu held.
func (a *Aggregator) lend() int {
	for {
		for i, p := range a.slots {
			if !p.busy {
				p.busy = true
				return i
			}
		}
		if len(a.slots) < a.max {
			a.slots = append(a.slots, &partial{vec: make([]float32, a.job.Params), empty: true, busy: true})
			return len(a.slots) - 1
		}
		a.cond.Wait()
	}
}

// keep is WaitAll's admission: the update is checked and copied, and
// folded only when the round closes. Called with mu held; unlocks it.
func (a *Aggregator) keep(t Ticket, samples float64, u []float32) (Ack, *Error) {
	defer a.mu.Unlock()
	for i, f := range u {
		if !finite(f) || !finite(f*float32(samples)) {
			a.round.Refused(t)
			return Ack{}, notFiniteErr(u, i, samples)
		}
	}
	for len(a.held) <= t.Index {
		a.held = append(a.held, nil)
	}
	a.held[t.Index] = append([]float32(nil), u...)
	a.round.Folded(t, 0)
	ack := a.ack(t, 0)
	a.closeIfDue()
	return ack, nil
}

// Tick closes the round when its deadline made it due. Call it at
// NextEvent (or periodically).
func (a *Aggregator) Tick() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closeIfDue()
}

// NextEvent returns when Tick should next run (monotonic ns; 0: none).
func (a *Aggregator) NextEvent() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return 0
	}
	return a.round.NextEvent()
}

// closeIfDue makes the round's model when its goal is met, and opens the
// next round. Called with mu held, with no fold running (a due round has
// none pending).
func (a *Aggregator) closeIfDue() {
	if a.done || !a.round.Due(a.now()) {
		return
	}
	model := make([]float32, a.job.Params)
	s := float32(1 / a.round.Samples())
	used := 1
	if a.mode == WaitAll {
		acc := model
		first := true
		for i, u := range a.held {
			t := Ticket{a.round.N(), i}
			if u == nil || a.round.entry(t).state != stateFolded {
				continue
			}
			w := float32(a.round.Weight(t))
			if first {
				Store(acc, u, w)
				first = false
			} else {
				Fold(acc, u, w)
			}
		}
		mul(model, acc, s)
		a.held = a.held[:0]
	} else {
		var parts [][]float32
		for _, p := range a.slots {
			if !p.empty {
				parts = append(parts, p.vec)
			}
		}
		CombineParallel(model, parts, s, 0)
		used = len(parts)
		for _, p := range a.slots {
			p.empty = true
		}
	}
	a.prev, a.model = a.model, model
	r := a.round.Close(a.now())
	r.Partials = used
	a.results = append(a.results, r)
	if a.job.Rounds > 0 && a.round.N() >= a.job.Rounds {
		a.done = true
		return
	}
	a.round = NewRound(&a.job, a.round.N()+1, a.now())
}

// Model returns the model of the latest closed round and its number (0:
// the initial model). The slice is never written again; do not change it.
func (a *Aggregator) Model() ([]float32, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.model, len(a.results)
}

// ModelOf returns the model of round n (0: the initial one), if it is the
// latest or the one before; the answer's error says why not.
func (a *Aggregator) ModelOf(n int) ([]float32, *Error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return PickModel(&a.job, n, len(a.results), a.model, a.prev, a.round)
}

// PickModel returns the model of round n out of the latest (of round
// latest) and the one before, or why it cannot.
func PickModel(job *Job, n, latest int, model, prev []float32, r *Round) ([]float32, *Error) {
	switch {
	case n == latest:
		return model, nil
	case n == latest-1 && prev != nil:
		return prev, nil
	case n > latest:
		pending, folded := r.Counts()
		return nil, errorf(statusConflict, "the model of round %d is not ready: round %d is open (%d updates folded, %d being folded, goal %d)", n, r.N(), folded, pending, job.Updates)
	}
	return nil, errorf(statusGone, "the model of round %d is no longer kept (the latest is round %d's)", n, latest)
}

// Status returns the job's state.
func (a *Aggregator) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := StatusOf(&a.job, a.round, a.done, a.results)
	st.Partials = len(a.slots)
	return st
}

// Status is a job's state, as GET /fl/{job} answers it.
type Status struct {
	Job        Job      `json:"job"`
	Round      int      `json:"round"`               // the open round (the last one when done)
	State      string   `json:"state"`               // open, closing, done
	Pending    int      `json:"pending"`             // updates admitted, not folded yet
	Folded     int      `json:"folded"`              // updates folded this round
	Lost       []Lost   `json:"lost"`                // this round's lost updates (their clients may send again)
	ModelRound int      `json:"modelRound"`          // the latest model's round (0: the initial model)
	Partials   int      `json:"partials"`            // partial sums the round folds into now
	Leaves     int      `json:"leaves,omitempty"`    // leaf aggregators the control plane's plan wants now
	Plan       string   `json:"plan,omitempty"`      // the plan and what bounded it
	Restarted  string   `json:"restarted,omitempty"` // the top restarted and restored the job: what was lost
	Results    []Result `json:"results"`             // the closed rounds, oldest first (the last 100)
}

// Job states.
const (
	StateOpen    = "open"
	StateClosing = "closing" // sealed: no more updates, folds finishing
	StateDone    = "done"
)

// StatusOf is the Status of a job in round r (done: it ran its rounds)
// with the results of its closed rounds.
func StatusOf(job *Job, r *Round, done bool, results []Result) Status {
	st := Status{Job: *job, Round: r.N(), State: StateOpen, ModelRound: len(results), Lost: r.LostUpdates()}
	st.Pending, st.Folded = r.Counts()
	if r.Sealed() {
		st.State = StateClosing
	}
	if done {
		st.State, st.Pending, st.Folded, st.Lost = StateDone, 0, 0, nil
	}
	if st.Lost == nil {
		st.Lost = []Lost{}
	}
	if len(results) > 100 {
		results = results[len(results)-100:]
	}
	st.Results = append([]Result(nil), results...)
	return st
}

// CombineParallel is Combine split over workers goroutines (0: one a
// CPU), each taking a contiguous part of the vector.
func CombineParallel(dst []float32, parts [][]float32, s float32, workers int) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	n := len(dst)
	if workers == 1 || n < 1<<16 {
		Combine(dst, parts, s)
		return
	}
	chunk := (n/workers + 31) &^ 31
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		ps := make([][]float32, len(parts))
		for i, p := range parts {
			ps[i] = p[lo:hi]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			Combine(dst[lo:hi], ps, s)
		}()
	}
	wg.Wait()
}
