package node

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spry-dev/spry/internal/activation"
	"github.com/spry-dev/spry/internal/gateway"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
)

// Activations run through the gateway's one admission path: an attempt is
// a gateway.Request whose body comes from the store (or, for the first
// attempt of a request admitted over HTTP or MQTT, is already in its pool
// buffer) and whose reply goes back to the activation manager.

// invoker is the activation manager's way into the gateway.
type invoker struct{ n *Node }

// gwChain returns the gateway's chain name of app, and its step names.
func (n *Node) gwChain(app, chain string) (*gateway.Chain, []string) {
	n.appsMu.Lock()
	defer n.appsMu.Unlock()
	for _, a := range n.apps {
		if a.cfg.Name != app {
			continue
		}
		for i, ch := range a.chains() {
			if ch.Name == chain {
				return ch, a.steps[i]
			}
		}
	}
	return nil, nil
}

func (a *app) stepNames(chain string) []string {
	c := a.cfg.Chain(chain)
	if c == nil {
		return nil
	}
	out := make([]string, len(c.Steps))
	for i, s := range c.Steps {
		out[i] = a.cfg.Functions[s].Name
	}
	return out
}

// errNotRunning: the activation's chain is not served (its app was
// removed by a reload): like a 503, it may be later.
var errNotRunning = errors.New("its chain is not running on this node")

// Invoke admits one attempt (activation.Invoker).
func (iv invoker) Invoke(rec *activation.Record, fill func([]byte) (int, error), done func(*activation.Outcome)) error {
	ch, steps := iv.n.gwChain(rec.App, rec.Chain)
	if ch == nil {
		return fmt.Errorf("%s/%s: %w", rec.App, rec.Chain, errNotRunning)
	}
	at := &attempt{rec: rec, done: done, steps: steps}
	r := gateway.Request{
		Chain: ch, Method: []byte(rec.Request.Method), Path: []byte(rec.Request.Path), Query: []byte(rec.Request.Query),
		ContentType: []byte(rec.Request.ContentType), Length: int64(rec.Request.Size), Headers: at, Reply: at,
	}
	x, gerr := iv.n.gw.Begin(&r)
	if gerr != nil {
		return refused{gerr.Status, strings.TrimSpace(string(r.AppendMessage(nil, gerr)))}
	}
	if !appendAttrs(&x, rec) {
		x.Cancel()
		return refused{gateway.ErrMetaTooLarge.Status, "spry: " + gateway.ErrMetaTooLarge.Msg}
	}
	n, err := fill(x.Body())
	if err != nil {
		x.Cancel()
		return err
	}
	at.start = time.Now()
	x.Send(n, r.ContentType)
	return nil
}

// refused is an attempt the gateway did not admit, with the status it
// would have answered a client with (the manager retries 429 and 503).
type refused struct {
	status int
	msg    string
}

func (r refused) Error() string   { return r.msg }
func (r refused) StatusCode() int { return r.status }

// appendAttrs writes what the functions learn of the activation
// (sdk.Request.ActivationID, Cause, Trigger, Topic, Event) into the
// request's metadata.
func appendAttrs(x *gateway.Admission, rec *activation.Record) bool {
	ok := x.AppendAttrString("spry.activation", rec.ID) && x.AppendAttrString("spry.cause", rec.Cause.Kind)
	if ok && rec.Cause.Trigger != "" {
		ok = x.AppendAttrString("spry.trigger", rec.Cause.Trigger)
	}
	if ok && rec.Topic != "" {
		ok = x.AppendAttrString("spry.topic", rec.Topic)
	}
	if ok && len(rec.Event) > 0 {
		keys := make([]string, 0, len(rec.Event))
		for k := range rec.Event {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if ok = x.AppendAttrString(k, rec.Event[k]); !ok {
				break
			}
		}
	}
	return ok
}

// attempt is one attempt of an activation in the gateway: the request's
// headers and body, and the Replier its reply comes back to.
type attempt struct {
	gateway.ActivationReplier
	rec   *activation.Record
	done  func(*activation.Outcome)
	steps []string
	start time.Time
}

func (at *attempt) Header(name string) []byte {
	for _, h := range at.rec.Request.Headers {
		if pool.EqualFold([]byte(h[0]), name) {
			return []byte(h[1])
		}
	}
	return nil
}

func (at *attempt) NumHeaders() int { return len(at.rec.Request.Headers) }

func (at *attempt) HeaderAt(i int) (name, value []byte) {
	h := at.rec.Request.Headers[i]
	return []byte(h[0]), []byte(h[1])
}

// Reply hands the attempt's outcome to the manager (on the gateway's
// receive thread: the manager copies what it keeps and returns).
func (at *attempt) Reply(r gateway.Reply) {
	o := outcome(&r, at.steps, at.start)
	at.done(&o)
	r.Done()
}

// outcome reads an attempt's outcome from its reply.
func outcome(r *gateway.Reply, steps []string, start time.Time) activation.Outcome {
	o := activation.Outcome{Status: r.Status(), ContentType: r.ContentType(), Body: r.Body(), Start: start, End: time.Now()}
	if h := r.Header(); h != nil {
		for i := range h.Hops() {
			s, e := h.HopTimes(i)
			if s == 0 || e < s {
				continue
			}
			name := ""
			if i < len(steps) {
				name = steps[i]
			}
			o.Steps = append(o.Steps, activation.Step{Function: name, Micros: float64(e-s) / 1e3})
		}
	}
	return o
}

// held is a request the gateway admitted over HTTP (or MQTT) whose body is
// in its pool buffer: the first attempt of its activation goes out in it.
type held struct {
	x     gateway.Admission
	n     int
	ctype []byte
	steps []string
}

func (h *held) Dispatch(rec *activation.Record, done func(*activation.Outcome)) {
	at := &attempt{rec: rec, done: done, steps: h.steps, start: time.Now()}
	h.x.SetReplier(at, 0)
	h.x.Send(h.n, h.ctype)
}

func (h *held) Release() { h.x.Cancel() }

// Async takes over a request that asked for respond-async (gateway.Events).
func (e *events) Async(x *gateway.Admission, r *gateway.Request, n int) gateway.AsyncResult {
	ch := x.Chain()
	app := ch.App.Name()
	cancel := func(err *gateway.Error) gateway.AsyncResult {
		x.Cancel()
		return gateway.AsyncResult{Err: err}
	}
	var key, cb string
	if r.Headers != nil {
		key, cb = string(r.Headers.Header(headerIdempotencyKey)), string(r.Headers.Header(headerCallback))
	}
	if len(key) > maxKey {
		return cancel(&gateway.Error{Status: 400, Msg: fmt.Sprintf("%s longer than %d bytes", headerIdempotencyKey, maxKey)})
	}
	if cb != "" {
		if why := CheckCallback(cb); why != "" {
			return cancel(&gateway.Error{Status: 400, Msg: headerCallback + ": " + why})
		}
	}
	id := e.mgr.NewID(app, ch.Name, key)
	rec := activation.Record{ID: id, Cause: activation.Cause{Kind: activation.CauseAsync}}
	if !appendAttrs(x, &rec) {
		return cancel(gateway.ErrMetaTooLarge)
	}
	req := activation.Request{Method: string(r.Method), Path: string(r.Path), Query: string(r.Query), ContentType: string(r.ContentType)}
	if r.Headers != nil {
		for _, h := range ch.Headers {
			if v := r.Headers.Header(h); v != nil {
				req.Headers = append(req.Headers, [2]string{h, string(v)})
			}
		}
	}
	_, steps := e.n.gwChain(app, ch.Name)
	acc, err := e.mgr.Accept(activation.Spec{
		ID: id, App: app, Chain: ch.Name, Cause: rec.Cause, Request: req, Body: x.Body()[:n], Key: key,
		Reply: activation.Reply{Callback: cb},
		Held:  &held{x: *x, n: n, ctype: []byte(req.ContentType), steps: steps},
	})
	switch {
	case errors.Is(err, activation.ErrQueueFull):
		return gateway.AsyncResult{Err: gateway.ErrQueueFull}
	case err != nil:
		return gateway.AsyncResult{Err: &gateway.Error{Status: 503, Msg: "not stored: " + err.Error(), Retry: true}}
	}
	return gateway.AsyncResult{ID: acc.ID, Duplicate: acc.Duplicate}
}

// record keeps the reply of a synchronous request its chain's record
// setting asks for (gateway.Recorder).
func (n *Node) record(app string, steps []string) gateway.Recorder {
	return func(r gateway.Reply, began int64) {
		e := n.events
		if e == nil {
			return
		}
		start := time.Now().Add(-time.Duration(mono.Now() - began))
		o := outcome(&r, steps, start)
		req := activation.Request{Path: r.Chain().Route}
		if h := r.Header(); h != nil {
			m, p, q := h.Request()
			req.Method, req.Path, req.Query = string(m), string(p), string(q)
		}
		e.mgr.RecordSync(app, r.Chain().Name, req, &o)
	}
}

// CloudEvents makes an activation of each event (gateway.Events): of chain
// ch, or of every chain whose cloudevent trigger matches (ch nil: the
// node's event endpoint). An event's source and id are its idempotency
// key (the CloudEvents duplicate rule): a batch sent again after a
// refusal makes no second activation of what was accepted.
func (e *events) CloudEvents(ch *gateway.Chain, r *gateway.Request, evs []gateway.CloudEvent) ([]gateway.EventResult, *gateway.Error) {
	var out []gateway.EventResult
	for i := range evs {
		ev := &evs[i]
		attrs := make(map[string]string, len(ev.Attrs))
		for _, a := range ev.Attrs {
			attrs[a[0]] = a[1]
		}
		spec := activation.Spec{
			Cause:   activation.Cause{Kind: activation.CauseCloudEvent},
			Request: activation.Request{Method: "POST", ContentType: ev.ContentType},
			Body:    ev.Data, Event: attrs,
			Key: "ce:" + attrs["source"] + "\x00" + attrs["id"],
		}
		if ch == nil {
			fired, err := e.trig.FireEvent(attrs["type"], attrs["source"], spec)
			for _, f := range fired {
				out = append(out, gateway.EventResult{ID: f.ID, Trigger: f.Trigger, Duplicate: f.Duplicate})
			}
			if err != nil {
				return nil, eventErr(err)
			}
			continue
		}
		spec.App, spec.Chain, spec.Request.Path = ch.App.Name(), ch.Name, ch.Route
		if r != nil {
			spec.Request.Query = string(r.Query)
		}
		acc, err := e.mgr.Accept(spec)
		if err != nil {
			return nil, eventErr(err)
		}
		out = append(out, gateway.EventResult{ID: acc.ID, Duplicate: acc.Duplicate})
	}
	return out, nil
}

func eventErr(err error) *gateway.Error {
	if errors.Is(err, activation.ErrQueueFull) {
		return &gateway.Error{Status: 429, Msg: err.Error() + "; retry later (events already accepted are recognised by source and id)", Retry: true}
	}
	if strings.Contains(err.Error(), "larger than a pool buffer") {
		return &gateway.Error{Status: 413, Msg: err.Error()}
	}
	return &gateway.Error{Status: 503, Msg: "not stored: " + err.Error(), Retry: true}
}
