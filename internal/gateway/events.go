package gateway

import "github.com/spry-dev/spry/internal/pool"

// Events: what the gateway hands the node's activation layer (package
// activation, wired by the node) instead of running it as a plain
// synchronous request.
//
//   - A request that asks to be run asynchronously (Prefer:
//     respond-async, RFC 7240) is admitted up to its body like any other;
//     then Events.Async stores it durably and sends the same pool buffer
//     into the chain, and the client gets 202 with the activation's id.
//   - A CloudEvent (binary, structured or batched mode) on a chain's route,
//     and any event sent to the node's event endpoint, goes to
//     Events.CloudEvent (cloudevents.go).
//   - The reply of a synchronous request that the chain's record setting
//     asks for (by default only failures: a status of 400 or more) is
//     handed to Chain.Recorder before it is written, so the synchronous
//     fast path pays one comparison for it.
type Events interface {
	// Async takes over admitted request x, whose body (n bytes) is in
	// x.Body(): it stores it durably and dispatches it (x.SetReplier and
	// x.Send), or cancels it, whatever it returns. r.Headers gives the
	// request's header fields (Idempotency-Key, X-Callback-Url).
	Async(x *Admission, r *Request, n int) AsyncResult
	// CloudEvents makes an activation of each event: of chain ch (a batch
	// or an asynchronous event on its route), or, for the node's event
	// endpoint (ch nil), of every chain whose cloudevent trigger matches
	// it. It returns once every one is durable.
	CloudEvents(ch *Chain, r *Request, evs []CloudEvent) ([]EventResult, *Error)
}

// runEvent sends a request that is not a plain synchronous one where it
// goes: an asynchronous one, a CloudEvent, one to the node's event
// endpoint. done is false for a plain request (the caller admits it).
func (c *conn) runEvent() (keep, done bool) {
	async, mode, event := c.eventKind()
	if !event {
		return false, false
	}
	ch, _ := c.g.routes.Load().Lookup(c.req.path, &c.gr.params)
	if ch == nil {
		if string(c.req.path) != EventsPath {
			return false, false // 404 from the admission path
		}
		if string(c.req.method) != "POST" {
			c.ext = append(c.ext[:0], "Allow: POST\r\n"...)
			c.msg = append(c.msg[:0], "spry: the event endpoint takes POST\n"...)
			keep := c.skipBody()
			c.writeResponse(405, textPlain, c.msg, !keep, c.ext)
			return keep, true
		}
		return c.runEvents(nil), true
	}
	if !ch.allows(c.req.method) {
		return false, false // 405 from the admission path
	}
	switch {
	case mode == "batch" || mode != "" && async:
		if e := ch.authorize(&c.gr); e != nil {
			c.gr.Routed = ch
			return c.refuse(e), true
		}
		return c.runEvents(ch), true
	case mode != "":
		return c.runCloudEvent(mode), true
	case async:
		return c.runAsync(), true
	}
	return false, false
}

// AsyncResult is what the client of an asynchronous request is told.
type AsyncResult struct {
	ID        string // the activation's id (202)
	Duplicate bool   // an earlier request with the same idempotency key made it
	Err       *Error // not accepted (nil: accepted)
}

// ErrQueueFull: the chain's queue of asynchronous work is full.
var ErrQueueFull = &Error{Status: 429, Msg: "the chain's async queue is full; retry later", Retry: true}

// SetEvents makes e take the gateway's asynchronous requests and events;
// a 202's Location is records (the admin API's address of
// /v1/activations/) followed by the activation's id. Call it before
// Serve.
func (g *Gateway) SetEvents(e Events, records string) { g.events, g.activationURL = e, records }

// Recorder receives the replies of a chain's synchronous requests that its
// record setting keeps (Chain.Recorder). It runs on the thread that
// answers the request: copy what it keeps, never block.
type Recorder func(r Reply, began int64)

// records reports whether the chain's record setting keeps a reply with
// status: one comparison on the synchronous path by default.
func (ch *Chain) records(status int) bool {
	return ch.Recorder != nil && (status >= 400 || ch.RecordAll)
}

// noRecord is implemented by Repliers whose requests are recorded
// elsewhere (an activation's attempts are recorded by the activation
// layer itself).
type noRecord interface{ activationReplier() }

// record hands reply r to its chain's recorder (the caller checked
// recording that the setting keeps it: Chain.records).
func (ch *Chain) record(rep Replier, r Reply, began int64) {
	if _, ok := rep.(noRecord); ok {
		return
	}
	ch.Recorder(r, began)
}

// ActivationReplier is embedded by the activation layer's Repliers: their
// requests are recorded by it, not by Chain.Recorder.
type ActivationReplier struct{}

func (ActivationReplier) activationReplier() {}

// AppendAttr adds an attribute of the invocation (a CloudEvent's context
// attribute, an activation id) to the request's metadata, after its
// headers. It reports false when the metadata is full (431).
func (x *Admission) AppendAttr(name, value []byte) bool {
	return x.a.pool.Header(x.buf).AppendAttr(name, value)
}

// AppendAttrString is AppendAttr for strings.
func (x *Admission) AppendAttrString(name, value string) bool {
	return x.AppendAttr([]byte(name), []byte(value))
}

// Began returns when the request arrived (mono ns).
func (x *Admission) Began() int64 { return x.a.pend[x.idx].began }

// preferAsync reports whether a Prefer field value asks for respond-async
// (RFC 7240: a comma-separated list of preferences, case-insensitive,
// each perhaps with parameters).
func preferAsync(v []byte) bool {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		tok := v[:i]
		for j := 0; j < len(tok); j++ {
			if tok[j] == ';' || tok[j] == '=' {
				tok = tok[:j]
				break
			}
		}
		tok = trimOWS(tok)
		if pool.EqualFold(tok, "respond-async") {
			return true
		}
		if i == len(v) {
			break
		}
		v = v[i+1:]
	}
	return false
}

// eventLike reports whether the connection's current request is one for
// the activation layer rather than a plain synchronous request: it asks
// to run asynchronously, or it may be a CloudEvent, or it goes to the
// node's event endpoint. An event loop hands such a request (and its
// connection) to a goroutine of its own: storing it durably may block.
func (c *conn) eventLike() bool {
	_, _, event := c.eventKind()
	return event
}

// eventKind classifies the connection's current request: async, it asks
// to run asynchronously (Prefer: respond-async); mode, its CloudEvents
// mode (ceMode); event, any of these or it goes to the node's event
// endpoint. runEvent and eventLike both decide by it, so an event loop
// hands off exactly the requests runEvent takes.
func (c *conn) eventKind() (async bool, mode string, event bool) {
	if v := c.req.header("Prefer"); v != nil {
		async = preferAsync(v)
	}
	mode = ceMode(c.req.ctype, c)
	return async, mode, async || mode != "" || string(c.req.path) == EventsPath
}
