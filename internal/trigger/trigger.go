package trigger

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spry-dev/spry/internal/activation"
	"github.com/spry-dev/spry/internal/config"
)

// Def is one trigger of one app, with what firing it needs.
type Def struct {
	App     string
	Chain   string // the chain's name
	Route   string // its route: the path the functions see
	MaxBody int    // the largest payload (the app's pool buffer size)
	config.Trigger
}

// Target is where triggers send what they fire: the node accepts it as an
// activation, through the gateway's admission path.
type Target interface {
	Accept(activation.Spec) (activation.Accepted, error)
	// Active reports whether an activation is unfinished (for triggers
	// that must not overlap).
	Active(id string) bool
}

// Submitter is what a Target may also do: submit an activation to the
// store without waiting for the disk, and wait for it later
// (activation.Manager.Submit). The embedded broker acknowledges QoS 1
// PUBLISHes through it without holding up the client's read loop: many
// messages, of many clients, share one flush.
type Submitter interface {
	Submit(activation.Spec) (Waiter, error)
}

// Waiter is a submitted activation (activation.Submission).
type Waiter interface {
	Wait() (activation.Accepted, error)
}

// Config configures a Set.
type Config struct {
	Triggers []Def
	Target   Target
	// MQTT is the address of the embedded broker ("" runs none; then mqtt
	// triggers need a broker: of their own).
	MQTT string
	Log  *slog.Logger
}

// Set runs an app's (or a node's) triggers: the cron schedules, the MQTT
// subscriptions, and the CloudEvent filters the node's event endpoint
// applies.
type Set struct {
	log    *slog.Logger
	target Target
	broker *broker
	closed atomic.Bool

	mu     sync.Mutex // guards the rest, replaced whole by Update
	trigs  []*trig
	timers *timers
	remote map[string]*remote // by broker URL
	events []*trig            // cloudevent triggers
}

// trig is one running trigger and its counters.
type trig struct {
	def      Def
	fired    atomic.Uint64 // events it got (firings, messages, matching CloudEvents)
	accepted atomic.Uint64 // activations made
	rejected atomic.Uint64 // refused (queue full, too large, store error)
	skipped  atomic.Uint64 // firings skipped: the last one was still running (overlap: false)
	last     atomic.Int64  // when it last fired (Unix ns)
	lastErr  atomic.Pointer[string]
	lastID   atomic.Pointer[string]
}

// ErrNoBroker: an mqtt trigger names no broker and the node runs none.
var ErrNoBroker = errors.New("trigger: mqtt triggers need the embedded broker (spry up --mqtt ADDR) or a broker: of their own")

// Start starts every trigger. On error nothing is left running.
func Start(c Config) (_ *Set, err error) {
	s := &Set{log: c.Log, target: c.Target, remote: map[string]*remote{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	trigs, local := s.build(c.Triggers)
	if c.MQTT != "" || len(local) > 0 {
		if c.MQTT == "" {
			return nil, fmt.Errorf("%w (trigger %s of app %s)", ErrNoBroker, local[0].def.Name, local[0].def.App)
		}
		if s.broker, err = startBroker(s, c.MQTT, local); err != nil {
			return nil, err
		}
	}
	return s, s.run(trigs)
}

// build makes the triggers of defs, and returns those on the embedded
// broker apart.
func (s *Set) build(defs []Def) (trigs, local []*trig) {
	for _, d := range defs {
		t := &trig{def: d}
		trigs = append(trigs, t)
		if t.def.Kind == config.TriggerMQTT && t.def.MQTT.Broker == "" {
			local = append(local, t)
		}
	}
	return trigs, local
}

// run starts trigs' timers and broker connections and makes them the
// set's (the embedded broker's were handed to it).
func (s *Set) run(trigs []*trig) error {
	var timed, events []*trig
	rs := map[string]*remote{}
	for _, t := range trigs {
		switch t.def.Kind {
		case config.TriggerCron, config.TriggerEvery:
			timed = append(timed, t)
		case config.TriggerCloudEvent:
			events = append(events, t)
		case config.TriggerMQTT:
			if t.def.MQTT.Broker == "" {
				continue
			}
			r := rs[t.def.MQTT.Broker]
			if r == nil {
				r = &remote{s: s, url: t.def.MQTT.Broker}
				rs[r.url] = r
			}
			r.trigs = append(r.trigs, t)
		}
	}
	s.mu.Lock()
	s.trigs, s.events, s.remote = trigs, events, rs
	s.mu.Unlock()
	for _, r := range rs {
		if err := r.start(); err != nil {
			return err
		}
	}
	if len(timed) > 0 {
		tm, err := startTimers(s, timed)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.timers = tm
		s.mu.Unlock()
	}
	return nil
}

// Update replaces the triggers with those of defs (a reload): timers and
// client connections restart; the embedded broker keeps running and its
// clients stay connected. Counters start again.
func (s *Set) Update(defs []Def) error {
	trigs, local := s.build(defs)
	if len(local) > 0 && s.broker == nil {
		return fmt.Errorf("%w (trigger %s of app %s)", ErrNoBroker, local[0].def.Name, local[0].def.App)
	}
	s.stopRunning()
	if s.broker != nil {
		s.broker.setTrigs(local)
	}
	return s.run(trigs)
}

func (s *Set) stopRunning() {
	s.mu.Lock()
	tm, rs := s.timers, s.remote
	s.timers, s.remote = nil, map[string]*remote{}
	s.mu.Unlock()
	if tm != nil {
		tm.stop()
	}
	for _, r := range rs {
		r.stop()
	}
}

// Close stops every trigger.
func (s *Set) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.stopRunning()
	if s.broker != nil {
		s.broker.stop()
	}
}

// BrokerAddr returns the embedded broker's address, or nil.
func (s *Set) BrokerAddr() string {
	if s.broker == nil {
		return ""
	}
	return s.broker.addr
}

// fire makes one activation for t.
func (s *Set) fire(t *trig, spec activation.Spec) (activation.Accepted, error) {
	if err := t.prepare(&spec); err != nil {
		return activation.Accepted{}, err
	}
	a, err := s.target.Accept(spec)
	return a, t.settled(a, err)
}

// prepare fills in what t says of an activation, and checks its size.
func (t *trig) prepare(spec *activation.Spec) error {
	t.fired.Add(1)
	t.last.Store(time.Now().UnixNano())
	spec.App, spec.Chain = t.def.App, t.def.Chain
	spec.Cause.Trigger = t.def.Name
	if spec.Request.Method == "" {
		spec.Request.Method = "POST"
	}
	if spec.Request.Path == "" {
		spec.Request.Path = t.def.Route
	}
	if len(spec.Body) > t.def.MaxBody {
		err := fmt.Errorf("trigger %s: payload of %d bytes is larger than a pool buffer (%d)", t.def.Name, len(spec.Body), t.def.MaxBody)
		t.reject(err)
		return err
	}
	return nil
}

// settled counts how an activation t made ended up.
func (t *trig) settled(a activation.Accepted, err error) error {
	if err != nil {
		t.reject(err)
		return err
	}
	t.accepted.Add(1)
	id := a.ID
	t.lastID.Store(&id)
	return nil
}

// submitted is an activation of t on its way to the disk.
type submitted struct {
	t *trig
	w Waiter
}

// wait waits for it to be durable, and counts it.
func (x submitted) wait() error {
	a, err := x.w.Wait()
	return x.t.settled(a, err)
}

// submit makes one activation for t through sub (the Set's target)
// without waiting for the disk.
func submit(sub Submitter, t *trig, spec activation.Spec) (submitted, error) {
	if err := t.prepare(&spec); err != nil {
		return submitted{}, err
	}
	w, err := sub.Submit(spec)
	if err != nil {
		t.reject(err)
		return submitted{}, err
	}
	return submitted{t, w}, nil
}

// Fired is an activation a trigger made from an event.
type Fired struct {
	Trigger string
	activation.Accepted
}

// FireEvent makes an activation of spec for every cloudevent trigger
// whose filter matches an event of type typ from source (the node's event
// endpoint). It stops at the first that is not accepted.
func (s *Set) FireEvent(typ, source string, spec activation.Spec) ([]Fired, error) {
	var out []Fired
	s.mu.Lock()
	events := s.events
	s.mu.Unlock()
	for _, t := range events {
		if !t.def.CloudEvent.Match(typ, source) {
			continue
		}
		sp := spec
		sp.Request.Path = ""
		a, err := s.fire(t, sp)
		if err != nil {
			return out, fmt.Errorf("trigger %s: %w", t.def.Name, err)
		}
		out = append(out, Fired{Trigger: t.def.Name, Accepted: a})
	}
	return out, nil
}

func (t *trig) reject(err error) {
	t.rejected.Add(1)
	msg := err.Error()
	t.lastErr.Store(&msg)
}

// Status is one trigger's state, for `spry triggers` and /metrics.
type Status struct {
	Name      string    `json:"name"`
	App       string    `json:"app"`
	Chain     string    `json:"chain"`
	Kind      string    `json:"kind"`
	Source    string    `json:"source"`
	Fired     uint64    `json:"fired"`
	Accepted  uint64    `json:"accepted"`
	Rejected  uint64    `json:"rejected"`
	Skipped   uint64    `json:"skipped"`
	LastFire  time.Time `json:"lastFire,omitzero"`
	NextFire  time.Time `json:"nextFire,omitzero"`
	LastID    string    `json:"lastActivation,omitempty"`
	LastError string    `json:"lastError,omitempty"`
	Connected *bool     `json:"connected,omitempty"` // mqtt with a broker of its own: is the client connected
}

// Status returns every trigger's state, by app and name.
func (s *Set) Status() []Status {
	var out []Status
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.trigs {
		st := Status{
			Name: t.def.Name, App: t.def.App, Chain: t.def.Chain, Kind: t.def.Kind, Source: t.def.Source(),
			Fired: t.fired.Load(), Accepted: t.accepted.Load(), Rejected: t.rejected.Load(), Skipped: t.skipped.Load(),
		}
		if ns := t.last.Load(); ns != 0 {
			st.LastFire = time.Unix(0, ns)
		}
		if p := t.lastID.Load(); p != nil {
			st.LastID = *p
		}
		if p := t.lastErr.Load(); p != nil {
			st.LastError = *p
		}
		if s.timers != nil {
			st.NextFire = s.timers.next(t)
		}
		if r := s.remote[t.def.MQTT.Broker]; t.def.Kind == config.TriggerMQTT && r != nil {
			c := r.connected.Load()
			st.Connected = &c
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].App != out[j].App {
			return out[i].App < out[j].App
		}
		return out[i].Name < out[j].Name
	})
	return out
}
