package sdk

import "github.com/spry-dev/spry/internal/pool"

// Attribute names of the invocation that Spry writes into the buffer
// header beside a CloudEvent's own attributes.
const (
	attrActivation = "spry.activation"
	attrCause      = "spry.cause"
	attrTrigger    = "spry.trigger"
	attrTopic      = "spry.topic"
)

// ActivationID returns the id of the activation this request belongs to
// (an asynchronous invocation, a trigger's firing, a recorded request), or
// "" for a synchronous request that has none. GET /v1/activations/{id} on
// the node's admin API shows its record.
func (r *Request) ActivationID() string { return view(r.h.Attr(attrActivation)) }

// Cause returns what made the request: "http" (a synchronous request),
// "async", "mqtt", "cloudevent" or "cron".
func (r *Request) Cause() string {
	if c := r.h.Attr(attrCause); len(c) > 0 {
		return view(c)
	}
	return "http"
}

// Trigger returns the name of the trigger (spry.yaml triggers:) that
// caused the request, or "".
func (r *Request) Trigger() string { return view(r.h.Attr(attrTrigger)) }

// Topic returns the MQTT topic the payload was published on, or "".
func (r *Request) Topic() string { return view(r.h.Attr(attrTopic)) }

// Event returns the CloudEvent the request carries, and false when it
// carries none. Its data is the payload (Payload); its attributes were
// parsed once by the gateway (binary, structured or batched mode) and are
// read here from the buffer header, not parsed again.
func (r *Request) Event() (Event, bool) {
	if r.h.Attr("specversion") == nil {
		return Event{}, false
	}
	return Event{h: r.h}, true
}

// Event is a CloudEvent's context attributes (CloudEvents 1.0). The
// strings are views into shared memory, valid until the handler returns.
type Event struct{ h *pool.BufHeader }

// ID returns the event's id.
func (e Event) ID() string { return e.Attr("id") }

// Source returns the event's source (a URI reference).
func (e Event) Source() string { return e.Attr("source") }

// Type returns the event's type.
func (e Event) Type() string { return e.Attr("type") }

// SpecVersion returns the CloudEvents version the event follows ("1.0").
func (e Event) SpecVersion() string { return e.Attr("specversion") }

// Subject returns the event's subject, or "".
func (e Event) Subject() string { return e.Attr("subject") }

// Time returns the event's time as sent (RFC 3339), or "".
func (e Event) Time() string { return e.Attr("time") }

// DataContentType returns the media type of the data (the payload), or "".
func (e Event) DataContentType() string { return e.Attr("datacontenttype") }

// DataSchema returns the event's dataschema, or "".
func (e Event) DataSchema() string { return e.Attr("dataschema") }

// Attr returns the context attribute name (an extension, or any of the
// above), or "".
func (e Event) Attr(name string) string {
	if e.h == nil {
		return ""
	}
	return view(e.h.Attr(name))
}

// Extensions calls fn with every extension attribute (every attribute but
// the CloudEvents core ones).
func (e Event) Extensions(fn func(name, value string)) {
	if e.h == nil {
		return
	}
	for i, n := 0, e.h.NumAttrs(); i < n; i++ {
		k, v := e.h.AttrAt(i)
		if len(k) == 0 || k[0] == 's' && len(k) > 5 && string(k[:5]) == "spry." || coreAttr(view(k)) {
			continue
		}
		fn(view(k), view(v))
	}
}

func coreAttr(k string) bool {
	switch k {
	case "id", "source", "type", "specversion", "subject", "time", "datacontenttype", "dataschema":
		return true
	}
	return false
}
