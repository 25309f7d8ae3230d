package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/control"
	"github.com/spry-dev/spry/internal/hist"
	"github.com/spry-dev/spry/internal/pool"
)

// controlPeriod is how often autoscalers decide and load-balancing
// capacities are refreshed.
const controlPeriod = time.Second

// scaler is the daemon's side of one function's control loop: it turns the
// counters the data path keeps in the pool into observations for the
// function's autoscaler (a deterministic state machine, internal/control),
// acts on its decisions, and refreshes the instances' load-balancing
// capacities from their measured service rates.
type scaler struct {
	f  *function
	as control.Autoscaler

	// Counters at the last decision, summed over the function's slots and
	// per slot.
	arrivals, served, busy uint64
	lat                    hist.Snapshot
	slotServed, slotBusy   []uint64
	// slotRate is each slot's last measured service rate: an instance
	// that served nothing in a period keeps it (it is idle, not unknown;
	// forgetting it would give a slow idle instance the mean, and an equal
	// share, until it is measured slow again). 0 until measured, and again
	// once the slot's instance is not ready.
	slotRate []float64
	rates    []float64
	caps     []uint32
	ready    []uint32 // slots whose capacity is refreshed

	// Requests in the system (queued + running), sampled between decisions.
	inSystem float64
	samples  int

	mu   sync.Mutex
	view ScaleStatus
}

// ScaleStatus is a function's control loop as /v1/status and `spry top`
// show it: the last decision and what it saw.
type ScaleStatus struct {
	Policy     string  `json:"policy"`
	Min        int     `json:"min"`
	Max        int     `json:"max"`
	SLOMillis  float64 `json:"sloMillis,omitempty"`
	Desired    int     `json:"desired"`
	Ready      int     `json:"ready"`
	RPS        float64 `json:"rps"`          // arrivals per second over the last period
	Predicted  float64 `json:"predictedRps"` // the forecast the last decision used (mu)
	ExecMillis float64 `json:"execMillis"`   // mean execution time, last period
	P50Millis  float64 `json:"p50Millis"`    // step latency percentiles, last period
	P99Millis  float64 `json:"p99Millis"`
	Attainment float64 `json:"sloAttainment"` // share of last period's requests within the SLO
	Queue      int     `json:"queue"`
	Reason     string  `json:"reason"`
	Warning    string  `json:"warning,omitempty"`
}

// newScaler makes the control loop of f. coldStart is the measured time an
// instance of f takes from start to ready.
func newScaler(f *function, coldStart time.Duration) (*scaler, error) {
	sc := f.cfg.Scale
	as, err := control.New(f.cfg.Autoscaler(controlPeriod, max(coldStart, 10*time.Millisecond)))
	if err != nil {
		return nil, fmt.Errorf("function %s: autoscaler: %w", f.cfg.Name, err)
	}
	n := len(f.insts)
	s := &scaler{
		f: f, as: as,
		slotServed: make([]uint64, n), slotBusy: make([]uint64, n), slotRate: make([]float64, n),
		rates: make([]float64, 0, n), caps: make([]uint32, 0, n), ready: make([]uint32, 0, n),
	}
	s.view = ScaleStatus{Policy: sc.Policy, Min: sc.Min, Max: sc.Max, Desired: f.cfg.Instances}
	if sc.Policy != config.PolicyFixed {
		s.view.SLOMillis = float64(sc.SLO.Microseconds()) / 1000
	}
	// Start from the counters as they are.
	p := f.a.pool
	for i, in := range f.insts {
		st := p.Stats(in.slot)
		s.arrivals += st.Arrivals.Load()
		s.served += st.Served.Load()
		s.busy += st.BusyNanos.Load()
		s.slotServed[i], s.slotBusy[i] = st.Served.Load(), st.BusyNanos.Load()
		l := st.Latency.Snapshot()
		s.lat = addSnapshots(s.lat, l)
	}
	return s, nil
}

func addSnapshots(a, b hist.Snapshot) hist.Snapshot {
	for i := range a.Counts {
		a.Counts[i] += b.Counts[i]
	}
	a.Sum += b.Sum
	return a
}

// now observes f's instances as they are: ready and starting, and the
// requests queued at and running in the ready and draining ones.
func (s *scaler) now() control.Observation {
	p := s.f.a.pool
	var o control.Observation
	for _, in := range s.f.insts {
		st := p.Stats(in.slot)
		switch p.SlotState(in.slot) {
		case pool.SlotReady:
			o.Ready++
			fallthrough
		case pool.SlotDraining:
			o.Queued += int(max(st.Queue.Load(), 0))
			// An instance that keeps state (pool.SlotStats.Keeps) counts
			// as busy: it is not scaled to zero under its state.
			// (Only a builtin that keeps state is believed: kept.)
			o.InFlight += int(max(st.InFlight.Load(), 0))
			if s.f.kept(st) {
				o.InFlight++
			}
		case pool.SlotStarting:
			o.Starting++
		}
	}
	return o
}

// sample looks at the function between decisions: it records how many
// requests are in it, and lets a policy that looks between control periods
// (mu) add instances at once when a backlog builds, rather than at the
// next period.
func (s *scaler) sample() {
	o := s.now()
	s.inSystem += float64(o.Queued + o.InFlight)
	s.samples++
	u, ok := s.as.(control.Urgent)
	if !ok || s.f.a.n.cfg.Cluster {
		return
	}
	f := s.f
	// Arrivals since the last decision: a rise within the period counts
	// before the period ends.
	var arrivals uint64
	for _, in := range f.insts {
		arrivals += f.a.pool.Stats(in.slot).Arrivals.Load()
	}
	o.Arrivals = arrivals - s.arrivals
	n, ok := u.Urgent(time.Since(f.a.n.started), o)
	want := f.wanted()
	reason := control.ReasonQueue
	if d, asked := s.demand(); asked {
		// A stateful builtin that sizes f from its own load (the FL
		// top) asked for more: start them now, not at the period's end.
		n, ok, reason = d, true, ReasonDemand
	}
	if !ok || n <= want {
		return
	}
	f.a.n.log.Info("scale", "app", f.a.cfg.Name, "function", f.cfg.Name, "from", want, "to", n,
		"reason", reason, "between", "periods", "queue", o.Queued)
	f.setWant(n, nil)
	s.mu.Lock()
	s.view.Desired, s.view.Reason = n, reason
	s.mu.Unlock()
}

// decide runs one control period: observe, tick the autoscaler, act.
func (s *scaler) decide() {
	f := s.f
	a := f.a
	p := a.pool
	var arrivals, served, busy uint64
	var lat hist.Snapshot
	s.rates, s.ready = s.rates[:0], s.ready[:0]
	for i, in := range f.insts {
		st := p.Stats(in.slot)
		sv, bz := st.Served.Load(), st.BusyNanos.Load()
		arrivals += st.Arrivals.Load()
		served += sv
		busy += bz
		lat = addSnapshots(lat, st.Latency.Snapshot())
		if p.SlotState(in.slot) == pool.SlotReady {
			if r := control.ServiceRate(sv-s.slotServed[i], time.Duration(bz-s.slotBusy[i]), f.cfg.Concurrency); r > 0 {
				s.slotRate[i] = r
			}
			s.ready = append(s.ready, in.slot)
			s.rates = append(s.rates, s.slotRate[i])
		} else {
			s.slotRate[i] = 0
		}
		s.slotServed[i], s.slotBusy[i] = sv, bz
	}
	o := s.now()
	o.Arrivals, o.Completions, o.Busy = arrivals-s.arrivals, served-s.served, time.Duration(busy-s.busy)
	if s.samples > 0 {
		o.Concurrency = s.inSystem / float64(s.samples)
	}
	window := lat.Sub(s.lat)
	s.arrivals, s.served, s.busy, s.lat = arrivals, served, busy, lat
	s.inSystem, s.samples = 0, 0

	d := s.as.Tick(time.Since(a.n.started), o)
	if d.Warning != "" {
		a.n.log.Warn("autoscaler", "app", a.cfg.Name, "function", f.cfg.Name, "warning", d.Warning)
	}
	if n, asked := s.demand(); asked {
		// A builtin that keeps state asked for this many (the FL top:
		// the leaf aggregators its jobs' arrival rate and update size
		// want, control.PlanAggregation); the autoscaler was ticked all
		// the same, and decides again once the ask is withdrawn (no job:
		// its idle period, then zero).
		d.Desired, d.Reason = n, ReasonDemand
	}
	want := f.wanted()
	if a.n.cfg.Cluster {
		d.Desired = want // the cluster controller decides (SetInstances)
	}
	if d.Desired != want {
		a.n.log.Info("scale", "app", a.cfg.Name, "function", f.cfg.Name, "from", want, "to", d.Desired,
			"reason", d.Reason, "rps", o.Arrivals, "predicted", fmt.Sprintf("%.1f", d.Predicted), "queue", o.Queued)
		f.setWant(d.Desired, nil)
	}

	// Load balancing: each ready instance's capacity is its measured
	// service rate, so a slow instance gets its share and no more.
	s.caps = control.Capacities(s.caps, s.rates)
	for i, slot := range s.ready {
		p.SetCapacity(slot, s.caps[i])
	}

	v := ScaleStatus{
		Policy: s.view.Policy, Min: s.view.Min, Max: s.view.Max, SLOMillis: s.view.SLOMillis,
		Desired: d.Desired, Ready: o.Ready, RPS: float64(o.Arrivals) / controlPeriod.Seconds(),
		Predicted: d.Predicted, Queue: o.Queued, Reason: d.Reason, Warning: d.Warning, Attainment: 1,
	}
	if o.Completions > 0 {
		v.ExecMillis = float64(o.Busy.Microseconds()) / 1000 / float64(o.Completions)
	}
	if window.Count() > 0 {
		v.P50Millis = float64(window.Quantile(0.5)) / 1e6
		v.P99Millis = float64(window.Quantile(0.99)) / 1e6
		if f.cfg.Scale.Policy != config.PolicyFixed {
			v.Attainment = window.Below(int64(f.cfg.Scale.SLO))
		}
	}
	s.mu.Lock()
	s.view = v
	s.mu.Unlock()
}

// ReasonDemand is a scaling decision a stateful builtin asked for
// (pool.SlotStats.Demand).
const ReasonDemand = "demand: asked for by a stateful builtin from its load (fl-top)"

// demand is what the app's builtins that keep state ask for f, in their
// ready instances' Demand words (pool.SlotStats.Demand), within f's
// scale.min and max; asked is false when none asks. Only builtins that
// keep state are believed (function.kept's rule): any instance can write
// its own stats slot.
func (s *scaler) demand() (n int, asked bool) {
	f := s.f
	p := f.a.pool
	for _, g := range f.a.fns {
		if !g.keepsState {
			continue
		}
		for _, in := range g.insts {
			if p.SlotState(in.slot) != pool.SlotReady {
				continue
			}
			fn, c, ok := pool.DemandOf(p.Stats(in.slot).Demand.Load())
			if ok && int(fn) == f.cfg.Index {
				n, asked = n+c, true
			}
		}
	}
	sc := f.cfg.Scale
	return min(max(n, sc.Min), sc.Max), asked
}

func (s *scaler) status() ScaleStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}
