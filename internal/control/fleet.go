package control

import (
	"fmt"
	"reflect"
	"slices"
	"time"
)

// FleetFunction is one function of a cluster as the fleet sees it.
type FleetFunction struct {
	Name   string    // unique in the cluster, e.g. "app/fn"
	Demand Resources // what one instance holds
	Scale  Config    // its autoscaler
	Links  []string  // the functions it hands requests to (a chain's next steps)
}

// Fleet is the cluster's control loop without I/O: one autoscaler per
// function, fed cluster-wide observations (each node's counters summed),
// and a [Placer] that turns the desired counts into per-node instance
// counts. The Kubernetes controller and `spry sim cluster` drive the same
// Fleet. Not safe for concurrent use.
type Fleet struct {
	placer *Placer
	fns    []*fleetFn
	idx    map[string]int
}

type fleetFn struct {
	spec FleetFunction
	a    Autoscaler
	last Decision
	gone bool
}

// NewFleet returns an empty fleet placing by cfg.
func NewFleet(cfg PlacementConfig) (*Fleet, error) {
	p, err := NewPlacer(cfg)
	if err != nil {
		return nil, err
	}
	return &Fleet{placer: p, idx: map[string]int{}}, nil
}

// Placer returns the fleet's placer (for nodes, restores and queries).
func (f *Fleet) Placer() *Placer { return f.placer }

// SetFunction adds or updates a function. Its autoscaler is kept across
// updates unless the scale config changed.
func (f *Fleet) SetFunction(spec FleetFunction) error {
	if err := spec.Scale.Validate(); err != nil {
		return fmt.Errorf("%s: %w", spec.Name, err)
	}
	i, ok := f.idx[spec.Name]
	if !ok {
		i = len(f.fns)
		f.idx[spec.Name] = i
		f.fns = append(f.fns, &fleetFn{})
	}
	fn := f.fns[i]
	if fn.a == nil || !reflect.DeepEqual(fn.spec.Scale, spec.Scale) || fn.gone {
		a, err := New(spec.Scale)
		if err != nil {
			return err
		}
		fn.a = a
	}
	fn.spec, fn.gone = spec, false
	fn.spec.Links = slices.Clone(spec.Links)
	f.placer.SetFunction(spec.Name, spec.Demand, f.placer.Placed(spec.Name), spec.Links...)
	return nil
}

// RemoveFunction stops all of a function's instances at the next tick.
func (f *Fleet) RemoveFunction(name string) {
	if i, ok := f.idx[name]; ok {
		f.fns[i].gone = true
		f.placer.RemoveFunction(name)
	}
}

// Decision returns the last decision of a function's autoscaler.
func (f *Fleet) Decision(name string) Decision {
	if i, ok := f.idx[name]; ok {
		return f.fns[i].last
	}
	return Decision{}
}

// Tick runs every function's autoscaler on what observe returns for it
// (the cluster-wide sums; observe is called once per function, in the
// order functions were added, with Ready the instances placed), then one
// placement round, and returns the round's changes.
func (f *Fleet) Tick(now time.Duration, observe func(name string) Observation) []Change {
	for _, fn := range f.fns {
		if fn.gone {
			continue
		}
		o := observe(fn.spec.Name)
		fn.last = fn.a.Tick(now, o)
		f.placer.SetDesired(fn.spec.Name, fn.last.Desired)
	}
	return f.placer.Place()
}

// Urgent asks every function whose autoscaler scales up between ticks
// (mu) whether its backlog needs instances now (now on Tick's clock;
// observe gives the gauges and the arrivals since the last tick), and if
// any does, runs a placement round for them.
func (f *Fleet) Urgent(now time.Duration, observe func(name string) Observation) []Change {
	any := false
	for _, fn := range f.fns {
		u, ok := fn.a.(Urgent)
		if fn.gone || !ok {
			continue
		}
		if n, up := u.Urgent(now, observe(fn.spec.Name)); up && n > f.placer.Placed(fn.spec.Name) {
			f.placer.SetDesired(fn.spec.Name, n)
			any = true
		}
	}
	if !any {
		return nil
	}
	return f.placer.Place()
}

// Wake gives one instance at once to each named function that has none
// placed (a request waits for it somewhere: a scale from zero), and to the
// steps after it in its chains that have none either (the request needs
// them a moment later), and runs a placement round when any did. It ticks
// no autoscaler: the next Tick sizes the function as usual, from what it
// then observes; but it tells each woken one's autoscaler (a Waker) that
// the function was active at now (Tick's clock), so that the instance is
// not taken for idle before the request reaches it.
func (f *Fleet) Wake(now time.Duration, names ...string) []Change {
	any := false
	seen := map[string]bool{}
	for len(names) > 0 {
		name := names[0]
		names = names[1:]
		i, ok := f.idx[name]
		if !ok || seen[name] || f.fns[i].gone {
			continue
		}
		seen[name] = true
		fn := f.fns[i]
		names = append(names, fn.spec.Links...)
		if f.placer.Placed(name) > 0 {
			continue
		}
		f.placer.SetDesired(name, 1)
		if w, ok := fn.a.(Waker); ok {
			w.Woken(now)
		}
		any = true
	}
	if !any {
		return nil
	}
	return f.placer.Place()
}
