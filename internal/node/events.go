package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spry-dev/spry/internal/activation"
	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/trigger"
)

// events is the node's side of asynchronous invocation: the activation
// store under the data directory, the manager that runs activations, and
// the triggers (cron, MQTT, CloudEvents) that make them.
type events struct {
	n     *Node
	dir   string
	store *activation.Store
	mgr   *activation.Manager
	trig  *trigger.Set
	// trigUp is closed once trig is set (or failed to start): replies of
	// activations owed from before a restart, which run as soon as the
	// manager starts, wait for it.
	trigUp chan struct{}
}

// DefaultDataDir is where a node keeps its activation records when
// --data-dir names no directory: /var/lib/spry as root, else
// $XDG_STATE_HOME/spry or ~/.local/state/spry.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/spry"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "spry")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "spry")
	}
	return filepath.Join(os.TempDir(), "spry-state-"+strconv.Itoa(os.Getuid()))
}

// managerConfig is what the activation manager needs of apps.
func managerConfig(apps []*config.App) ([]activation.AppConfig, []activation.ChainConfig, map[string]activation.Retention) {
	var as []activation.AppConfig
	var cs []activation.ChainConfig
	ret := map[string]activation.Retention{}
	for _, a := range apps {
		as = append(as, activation.AppConfig{Name: a.Name, Concurrency: a.Limits.Async})
		ret[a.Name] = activation.Retention{Age: a.Activations.Retention.Age, Count: a.Activations.Retention.Count}
		for _, c := range a.Chains {
			var steps []string
			for _, s := range c.Steps {
				steps = append(steps, a.Functions[s].Name)
			}
			cs = append(cs, activation.ChainConfig{
				App: a.Name, Chain: c.Name, Steps: steps, Attempts: c.Async.Attempts, MaxAge: c.Async.MaxAge,
				Backoff: c.Async.Backoff, MaxBackoff: config.MaxBackoff, Queue: c.Async.Queue,
				Record: c.Record, ResultMax: a.Activations.Result,
			})
		}
	}
	return as, cs, ret
}

// triggerDefs are the triggers of apps.
func triggerDefs(apps []*config.App) []trigger.Def {
	var out []trigger.Def
	for _, a := range apps {
		for _, t := range a.Triggers {
			c := a.Chains[t.Chain]
			out = append(out, trigger.Def{App: a.Name, Chain: c.Name, Route: c.Route, MaxBody: int(a.Pool.BufferSize), Trigger: *t})
		}
	}
	return out
}

// startEvents opens the store, re-queues what a previous run of the node
// left owed, and starts the triggers.
func (n *Node) startEvents() error {
	e := &events{n: n, dir: n.cfg.DataDir, trigUp: make(chan struct{})}
	if e.dir == "" {
		e.dir = filepath.Join(n.runDir, "data")
		n.log.Warn("no data directory: activation records last only as long as this node (set --data-dir)", "dir", e.dir)
	}
	var err error
	if e.store, err = activation.Open(e.dir); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	apps, chains, ret := managerConfig(n.cfg.Apps)
	e.mgr, err = activation.New(activation.Config{
		Store: e.store, Invoker: func(string) activation.Invoker { return invoker{n} },
		Apps: apps, Chains: chains, Retention: ret, Log: n.log, OnDone: e.done,
	})
	if err != nil {
		e.store.Close()
		return fmt.Errorf("node: %w", err)
	}
	owed, err := e.mgr.Start()
	if err != nil {
		close(e.trigUp)
		e.mgr.Close()
		e.store.Close()
		return fmt.Errorf("node: activations: %w", err)
	}
	if owed > 0 {
		n.log.Info("activations owed from before the restart are queued again", "count", owed)
	}
	e.trig, err = trigger.Start(trigger.Config{Triggers: triggerDefs(n.cfg.Apps), Target: e, MQTT: n.cfg.MQTT, Log: n.log})
	close(e.trigUp)
	if err != nil {
		e.mgr.Close()
		e.store.Close()
		return fmt.Errorf("node: %w", err)
	}
	n.events = e
	n.log.Info("activation store open", "path", e.store.Path())
	return nil
}

// reconfigure applies a reload's apps to the activation manager and the
// triggers. A trigger that fails to start is logged: the apps run anyway.
func (e *events) reconfigure(apps []*config.App) {
	as, cs, ret := managerConfig(apps)
	if err := e.mgr.Configure(as, cs, ret); err != nil {
		e.n.log.Error("reload: activations keep their former settings", "err", err)
	}
	if err := e.trig.Update(triggerDefs(apps)); err != nil {
		e.n.log.Error("reload: triggers", "err", err)
	}
}

// close stops the triggers first (nothing new comes in), then the manager
// (what is unfinished stays owed in the store), then the store.
func (e *events) close() {
	e.trig.Close()
	e.mgr.Close()
	e.store.Close()
}

// Accept makes an activation from a trigger (trigger.Target).
func (e *events) Accept(s activation.Spec) (activation.Accepted, error) { return e.mgr.Accept(s) }

// Submit makes an activation from a trigger without waiting for the disk
// (trigger.Submitter: the MQTT broker's QoS 1 acknowledgements).
func (e *events) Submit(s activation.Spec) (trigger.Waiter, error) {
	x, err := e.mgr.Submit(s)
	if err != nil {
		return nil, err
	}
	return x, nil
}

// Active reports whether activation id is unfinished (trigger.Target).
func (e *events) Active(id string) bool { return e.mgr.Active(id) }

// done sends an activation's result to its MQTT reply topic, if any.
func (e *events) done(r *activation.Record, result []byte) {
	if r.Reply.Topic == "" {
		return
	}
	<-e.trigUp
	if e.trig == nil {
		return // the triggers did not start: the node is stopping
	}
	if _, err := e.trig.Publish(r.Reply, result); err != nil {
		e.n.log.Warn("mqtt reply not published", "id", r.ID, "topic", r.Reply.Topic, "err", err)
	}
}

// Activations returns the node's activation manager.
func (n *Node) Activations() *activation.Manager { return n.events.mgr }

// Triggers returns the node's triggers.
func (n *Node) Triggers() *trigger.Set { return n.events.trig }

// MQTTAddr returns the embedded MQTT broker's address ("" when none).
func (n *Node) MQTTAddr() string { return n.events.trig.BrokerAddr() }

// Admin API of activations and triggers:
//
//	POST /v1/chains/{chain}/invocations   invoke a chain asynchronously (202, the activation id)
//	GET  /v1/activations                  list (chain, app, state, since, until, limit, before)
//	GET  /v1/activations/{id}             one record
//	GET  /v1/activations/{id}/result      its kept result, as the chain answered it
//	POST /v1/activations/redrive          run dead (or failed) activations again
//	GET  /v1/triggers                     each trigger, its source, last fire, counts
func (n *Node) eventsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/chains/{chain}/invocations", n.handleInvocation)
	mux.HandleFunc("GET /v1/activations", n.handleList)
	mux.HandleFunc("GET /v1/activations/{id}", n.handleGet)
	mux.HandleFunc("GET /v1/activations/{id}/result", n.handleResult)
	mux.HandleFunc("POST /v1/activations/redrive", n.handleRedrive)
	mux.HandleFunc("GET /v1/triggers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"triggers": n.events.trig.Status(), "mqtt": n.events.trig.BrokerAddr()})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// findChain resolves a chain name (and an optional app) to the app that
// runs it.
func (n *Node) findChain(app, chain string) (*config.App, *config.Chain, error) {
	var found []*config.App
	for _, a := range n.serving() {
		if app != "" && a.cfg.Name != app {
			continue
		}
		if a.cfg.Chain(chain) != nil {
			found = append(found, a.cfg)
		}
	}
	switch len(found) {
	case 0:
		if app != "" {
			return nil, nil, fmt.Errorf("app %q has no chain %q", app, chain)
		}
		return nil, nil, fmt.Errorf("no app has a chain %q", chain)
	case 1:
		return found[0], found[0].Chain(chain), nil
	}
	return nil, nil, fmt.Errorf("several apps have a chain %q: name one with ?app=", chain)
}

// Request headers of an asynchronous invocation.
const (
	headerIdempotencyKey = "Idempotency-Key"
	headerCallback       = "X-Callback-Url"
	maxKey               = 256
)

// CheckCallback returns why u is not a callback URL, or "".
func CheckCallback(u string) string {
	if len(u) > 2048 {
		return "longer than 2048 bytes"
	}
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
		return "want an absolute http:// or https:// URL"
	}
	return ""
}

func (n *Node) handleInvocation(w http.ResponseWriter, r *http.Request) {
	a, c, err := n.findChain(r.URL.Query().Get("app"), r.PathValue("chain"))
	if err != nil {
		writeErr(w, 404, "%v", err)
		return
	}
	limit := int64(a.Pool.BufferSize)
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		writeErr(w, 400, "reading the body: %v", err)
		return
	}
	if int64(len(body)) > limit {
		writeErr(w, 413, "body larger than a pool buffer of app %s (%d bytes)", a.Name, limit)
		return
	}
	key := r.Header.Get(headerIdempotencyKey)
	if len(key) > maxKey {
		writeErr(w, 400, "%s longer than %d bytes", headerIdempotencyKey, maxKey)
		return
	}
	cb := r.Header.Get(headerCallback)
	if cb != "" {
		if why := CheckCallback(cb); why != "" {
			writeErr(w, 400, "%s: %s", headerCallback, why)
			return
		}
	}
	req := activation.Request{Method: "POST", Path: c.Route, Query: r.URL.Query().Get("query"), ContentType: r.Header.Get("Content-Type")}
	for _, h := range c.Headers {
		if v := r.Header.Get(h); v != "" {
			req.Headers = append(req.Headers, [2]string{h, v})
		}
	}
	acc, err := n.events.mgr.Accept(activation.Spec{
		App: a.Name, Chain: c.Name, Cause: activation.Cause{Kind: activation.CauseAsync},
		Request: req, Body: body, Key: key, Reply: activation.Reply{Callback: cb},
	})
	switch {
	case errors.Is(err, activation.ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		writeErr(w, 429, "chain %s: its async queue is full (%d); retry later", c.Name, c.Async.Queue)
		return
	case err != nil:
		writeErr(w, 503, "not accepted: %v", err)
		return
	}
	accepted(w, acc)
}

// accepted answers 202 with the activation's id and where its record is.
func accepted(w http.ResponseWriter, a activation.Accepted) {
	loc := "/v1/activations/" + a.ID
	w.Header().Set("Location", loc)
	w.Header().Set(activation.HeaderActivationID, a.ID)
	writeJSON(w, 202, map[string]any{"id": a.ID, "location": loc, "duplicate": a.Duplicate})
}

func (n *Node) handleGet(w http.ResponseWriter, r *http.Request) {
	rec, err := n.events.mgr.Get(r.PathValue("id"))
	if err != nil {
		activationErr(w, r.PathValue("id"), err)
		return
	}
	writeJSON(w, 200, rec)
}

func activationErr(w http.ResponseWriter, id string, err error) {
	switch {
	case errors.Is(err, activation.ErrNotFound):
		writeErr(w, 404, "no activation %s (never accepted here, or past its retention)", id)
	case errors.Is(err, activation.ErrBadID):
		writeErr(w, 400, "%q: %v", id, err)
	default:
		writeErr(w, 500, "%v", err)
	}
}

func (n *Node) handleResult(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec, b, err := n.events.mgr.Result(id)
	if err != nil {
		activationErr(w, id, err)
		return
	}
	if !rec.State.Terminal() {
		writeErr(w, 409, "activation %s is %s: no result yet", id, rec.State)
		return
	}
	ct := rec.Result.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set(activation.HeaderStatus, strconv.Itoa(rec.Status))
	w.Header().Set(activation.HeaderState, string(rec.State))
	w.Header().Set("X-Spry-Result-Size", strconv.Itoa(rec.Result.Size))
	w.Header().Set("X-Spry-Result-Truncated", strconv.FormatBool(rec.Result.Truncated))
	w.WriteHeader(200)
	w.Write(b)
}

// filter reads a list filter from the query string.
func filter(q map[string][]string) (activation.Filter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f := activation.Filter{App: get("app"), Chain: get("chain"), State: activation.State(get("state")), Before: get("before")}
	if f.State != "" && !f.State.Valid() {
		return f, fmt.Errorf("state %q: want one of queued, running, succeeded, failed, dead", f.State)
	}
	if f.Before != "" {
		if err := activation.CheckID(f.Before); err != nil {
			return f, fmt.Errorf("before: %w", err)
		}
	}
	for _, t := range []struct {
		key string
		dst *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		v := get(t.key)
		if v == "" {
			continue
		}
		if d, err := time.ParseDuration(v); err == nil {
			*t.dst = time.Now().Add(-d)
		} else if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
			*t.dst = ts
		} else {
			return f, fmt.Errorf("%s %q: want a time (RFC 3339) or a duration back from now (1h)", t.key, v)
		}
	}
	if v := get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l < 1 || l > activation.MaxList {
			return f, fmt.Errorf("limit %q: want 1..%d", v, activation.MaxList)
		}
		f.Limit = l
	}
	return f, nil
}

func (n *Node) handleList(w http.ResponseWriter, r *http.Request) {
	f, err := filter(r.URL.Query())
	if err != nil {
		writeErr(w, 400, "%v", err)
		return
	}
	recs, next, err := n.events.mgr.List(f)
	if err != nil {
		writeErr(w, 500, "%v", err)
		return
	}
	if recs == nil {
		recs = []*activation.Record{}
	}
	writeJSON(w, 200, map[string]any{"activations": recs, "next": next})
}

// RedriveRequest is the body of POST /v1/activations/redrive: the ids, or
// a filter (every dead activation of a chain, say).
type RedriveRequest struct {
	IDs   []string `json:"ids"`
	App   string   `json:"app"`
	Chain string   `json:"chain"`
	State string   `json:"state"` // dead (default) or failed, with a filter
}

func (n *Node) handleRedrive(w http.ResponseWriter, r *http.Request) {
	var req RedriveRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil && err != io.EOF {
		writeErr(w, 400, "want a JSON body {\"ids\": [...]} or {\"chain\": ..., \"state\": \"dead\"}: %v", err)
		return
	}
	ids := req.IDs
	if len(ids) == 0 {
		st := activation.State(req.State)
		if st == "" {
			st = activation.Dead
		}
		if st != activation.Dead && st != activation.Failed {
			writeErr(w, 400, "state %q: redrive runs dead or failed activations", st)
			return
		}
		for before := ""; ; {
			recs, next, err := n.events.mgr.List(activation.Filter{App: req.App, Chain: req.Chain, State: st, Before: before, Limit: activation.MaxList})
			if err != nil {
				writeErr(w, 500, "%v", err)
				return
			}
			for _, rec := range recs {
				ids = append(ids, rec.ID)
			}
			if next == "" {
				break
			}
			before = next
		}
	}
	queued, skipped, err := n.events.mgr.Redrive(ids)
	if err != nil {
		writeErr(w, 500, "%v", err)
		return
	}
	if queued == nil {
		queued = []string{}
	}
	writeJSON(w, 200, map[string]any{"queued": queued, "skipped": skipped})
}

var (
	descActQueue = prometheus.NewDesc("spry_activation_queue_depth",
		"Unfinished asynchronous activations of the chain: queued, running or waiting to retry.", []string{"app", "chain"}, nil)
	descActQueueLimit = prometheus.NewDesc("spry_activation_queue_limit",
		"The chain's async queue bound (a full queue answers 429).", []string{"app", "chain"}, nil)
	descActs = prometheus.NewDesc("spry_activations_total",
		"Activations by outcome: accepted, duplicate, rejected (queue full), succeeded, failed, dead, retried (attempts after the first), recorded (sync requests).",
		[]string{"app", "chain", "outcome"}, nil)
	descTrig = prometheus.NewDesc("spry_trigger_events_total",
		"Events a trigger got (fired), and what became of them: accepted, rejected, skipped (overlap).", []string{"app", "trigger", "kind", "outcome"}, nil)
	descStoreCommits = prometheus.NewDesc("spry_activation_store_commits_total", "Group commits of the activation store: flushes of its write-ahead log.", nil, nil)
	descStoreWrites  = prometheus.NewDesc("spry_activation_store_writes_total", "Writes those flushes carried (group commit).", nil, nil)
	descStoreDropped = prometheus.NewDesc("spry_activation_store_dropped_total",
		"Records of synchronous requests dropped because the store's writer was behind.", nil, nil)
)

// eventsCollector exports activation and trigger metrics.
type eventsCollector struct{ n *Node }

func (c eventsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActQueue, descActQueueLimit, descActs, descTrig, descStoreCommits, descStoreWrites, descStoreDropped} {
		ch <- d
	}
}

func (c eventsCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.n.events
	if e == nil {
		return
	}
	for _, s := range e.mgr.Status() {
		ch <- prometheus.MustNewConstMetric(descActQueue, prometheus.GaugeValue, float64(s.Depth), s.App, s.Chain)
		ch <- prometheus.MustNewConstMetric(descActQueueLimit, prometheus.GaugeValue, float64(s.Queue), s.App, s.Chain)
		for _, o := range []struct {
			name string
			v    uint64
		}{{"accepted", s.Accepted}, {"duplicate", s.Duplicate}, {"rejected", s.Rejected}, {"succeeded", s.Succeeded},
			{"failed", s.Failed}, {"dead", s.Dead}, {"retried", s.Retries}, {"recorded", s.Recorded}} {
			ch <- prometheus.MustNewConstMetric(descActs, prometheus.CounterValue, float64(o.v), s.App, s.Chain, o.name)
		}
	}
	for _, t := range e.trig.Status() {
		for _, o := range []struct {
			name string
			v    uint64
		}{{"fired", t.Fired}, {"accepted", t.Accepted}, {"rejected", t.Rejected}, {"skipped", t.Skipped}} {
			ch <- prometheus.MustNewConstMetric(descTrig, prometheus.CounterValue, float64(o.v), t.App, t.Name, t.Kind, o.name)
		}
	}
	st := e.store.Stats()
	ch <- prometheus.MustNewConstMetric(descStoreCommits, prometheus.CounterValue, float64(st.Commits))
	ch <- prometheus.MustNewConstMetric(descStoreWrites, prometheus.CounterValue, float64(st.Writes))
	ch <- prometheus.MustNewConstMetric(descStoreDropped, prometheus.CounterValue, float64(st.Dropped))
}

// EventsStatus is the events part of GET /v1/status.
type EventsStatus struct {
	DataDir string                   `json:"dataDir"`
	Store   activation.StoreStats    `json:"store"`
	MQTT    string                   `json:"mqtt,omitempty"`
	Chains  []activation.ChainStatus `json:"chains"`
}

func (n *Node) eventsStatus() *EventsStatus {
	e := n.events
	if e == nil {
		return nil
	}
	return &EventsStatus{DataDir: e.dir, Store: e.store.Stats(), MQTT: e.trig.BrokerAddr(), Chains: e.mgr.Status()}
}
