package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
)

// The CloudEvents adapter. A request to a chain's route is a CloudEvent in
// binary mode (ce-* header fields), structured mode (Content-Type
// application/cloudevents+json) or batched mode (application/
// cloudevents-batch+json). The CloudEvents SDK parses and validates it
// (a malformed event is a 400 naming the attribute); its attributes go
// into the buffer header, where sdk.Request.Event reads them without
// parsing again, and its data is the payload.
//
//   - binary and structured, synchronous: the chain runs; the reply is a
//     CloudEvent in binary mode (ce-specversion, ce-id, ce-source, ce-type
//     dev.spry.reply).
//   - with Prefer: respond-async, and every batch: one activation per
//     event (202 with their ids). An event whose source and id an earlier
//     one of the chain had is that earlier activation (the CloudEvents
//     duplicate rule, kept like an idempotency key).
//
// POST to the node's event endpoint (EventsPath, unless a chain has that
// route) fans each event out to every chain whose cloudevent trigger
// matches its type and source: one activation each (Events.CloudEvents).

// EventsPath is the node's event endpoint on the gateway's address.
const EventsPath = "/events"

// Media types of the structured and batched modes.
const (
	ceStructured = "application/cloudevents+json"
	ceBatch      = "application/cloudevents-batch+json"
)

// CloudEvent is one parsed event: its context attributes (name, value;
// specversion, id, source, type first) and data.
type CloudEvent struct {
	Attrs       [][2]string
	Data        []byte
	ContentType string // of the data
}

// Attr returns attribute name, or "".
func (e *CloudEvent) Attr(name string) string {
	for _, a := range e.Attrs {
		if a[0] == name {
			return a[1]
		}
	}
	return ""
}

// ceMode says whether request r is a CloudEvent, and in which mode:
// "binary", "structured", "batch" or "" (not one).
func ceMode(ctype []byte, h interface{ Header(string) []byte }) string {
	if h.Header("Ce-Specversion") != nil {
		return "binary"
	}
	mt := ctype
	if i := bytes.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	mt = trimOWS(mt)
	switch {
	case len(mt) == len(ceStructured) && strings.EqualFold(string(mt), ceStructured):
		return "structured"
	case len(mt) == len(ceBatch) && strings.EqualFold(string(mt), ceBatch):
		return "batch"
	}
	return ""
}

// errCE is a malformed event: 400 with what is wrong.
func errCE(format string, args ...any) *Error {
	return &Error{Status: 400, Msg: "malformed CloudEvent: " + fmt.Sprintf(format, args...)}
}

// ParseCloudEvents parses the CloudEvents of a request: its header fields
// (every one, for binary mode) and body. A batch gives several events.
// The error names the attribute that is wrong.
func ParseCloudEvents(h Headers, ctype, body []byte) ([]CloudEvent, *Error) {
	hdr := http.Header{}
	for i := range h.NumHeaders() {
		k, v := h.HeaderAt(i)
		hdr.Add(string(k), string(v))
	}
	if len(ctype) > 0 {
		hdr.Set("Content-Type", string(ctype))
	}
	msg := cehttp.NewMessage(hdr, io.NopCloser(bytes.NewReader(body)))
	defer msg.Finish(nil)
	var evs []event.Event
	switch msg.ReadEncoding() {
	case binding.EncodingBatch:
		var err error
		if evs, err = binding.ToEvents(context.Background(), msg, bytes.NewReader(body)); err != nil {
			return nil, errCE("batch: %v", err)
		}
		if len(evs) == 0 {
			return nil, errCE("batch: no event")
		}
	case binding.EncodingBinary, binding.EncodingStructured:
		e, err := binding.ToEvent(context.Background(), msg)
		if err != nil {
			return nil, errCE("%s", ceReason(err))
		}
		evs = []event.Event{*e}
	default:
		return nil, errCE("not a CloudEvent (no ce-specversion, and Content-Type is not %s)", ceStructured)
	}
	out := make([]CloudEvent, 0, len(evs))
	for i := range evs {
		ce, err := fromSDK(&evs[i])
		if err != nil {
			if len(evs) > 1 {
				err.Msg = fmt.Sprintf("%s (event %d of the batch)", err.Msg, i)
			}
			return nil, err
		}
		out = append(out, ce)
	}
	return out, nil
}

// ceReason words an SDK parse error.
func ceReason(err error) string {
	s := err.Error()
	if strings.Contains(s, "specversion") || strings.Contains(s, "spec version") {
		return "attribute specversion: " + s + " (want 1.0 or 0.3)"
	}
	return s
}

// fromSDK validates e and turns it into a CloudEvent.
func fromSDK(e *event.Event) (CloudEvent, *Error) {
	if verr := e.Validate(); verr != nil {
		if ve, ok := verr.(event.ValidationError); ok {
			keys := make([]string, 0, len(ve))
			for k := range ve {
				keys = append(keys, k)
			}
			slices.SortFunc(keys, func(a, b string) int { return attrOrder(a) - attrOrder(b) })
			k := keys[0]
			return CloudEvent{}, errCE("attribute %s: %v", k, ve[k])
		}
		return CloudEvent{}, errCE("%v", verr)
	}
	ce := CloudEvent{Data: e.Data(), ContentType: e.DataContentType()}
	add := func(k, v string) {
		if v != "" {
			ce.Attrs = append(ce.Attrs, [2]string{k, v})
		}
	}
	add("specversion", e.SpecVersion())
	add("id", e.ID())
	add("source", e.Source())
	add("type", e.Type())
	add("subject", e.Subject())
	if t := e.Time(); !t.IsZero() {
		add("time", types.FormatTime(t))
	}
	add("datacontenttype", e.DataContentType())
	add("dataschema", e.DataSchema())
	ext := e.Extensions()
	names := make([]string, 0, len(ext))
	for k := range ext {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		v, err := types.Format(ext[k])
		if err != nil {
			return CloudEvent{}, errCE("extension %s: %v", k, err)
		}
		add(k, v)
	}
	return ce, nil
}

func attrOrder(k string) int {
	if i := slices.Index([]string{"specversion", "id", "source", "type"}, k); i >= 0 {
		return i
	}
	return 10
}

// runCloudEvent serves a CloudEvent sent to a chain's route (mode binary
// or structured, synchronous): admitted like any request, its body read
// into the pool buffer, parsed there; the data replaces the envelope in
// the buffer (structured), the attributes go into the header, and the
// chain's reply goes back as a CloudEvent.
func (c *conn) runCloudEvent(mode string) bool {
	x, n, keep, ok := c.admitBody()
	if !ok {
		return keep
	}
	ch := x.Chain()
	evs, err := ParseCloudEvents(c, c.req.ctype, x.Body()[:n])
	if err == nil && len(evs) != 1 {
		err = errCE("one event per request here (a batch is run asynchronously: it needs no Prefer)")
	}
	if err == nil {
		ev := &evs[0]
		if mode == "structured" {
			n = copy(x.Body(), ev.Data)
		}
		for _, a := range ev.Attrs {
			if !x.AppendAttrString(a[0], a[1]) {
				err = ErrMetaTooLarge
				break
			}
		}
		if err == nil {
			c.ceReply = ceReplyHeaders(c.ceReply[:0], ch, ev)
			c.state.Store(connPending)
			x.Send(n, []byte(ev.ContentType))
			return true
		}
	}
	x.Cancel()
	ch.count(err.Status, c.gr.Began)
	c.msg = c.gr.AppendMessage(c.msg[:0], err)
	c.writeResponse(err.Status, textPlain, c.msg, false, nil)
	return true
}

// ceReplyHeaders are the binary-mode attributes of the reply to event ev.
func ceReplyHeaders(dst []byte, ch *Chain, ev *CloudEvent) []byte {
	dst = append(dst, "Ce-Specversion: 1.0\r\nCe-Id: "...)
	if id := ev.Attr("id"); fieldSafe(id) {
		dst = append(dst, id...) // a structured event's id may hold anything
	}
	dst = append(dst, "-reply\r\nCe-Source: /spry/"...)
	dst = append(append(append(dst, ch.App.name...), '/'), ch.Name...)
	return append(dst, "\r\nCe-Type: dev.spry.reply\r\n"...)
}

// fieldSafe reports whether s can be written into a header field as is.
func fieldSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return len(s) <= 256
}

// runEvents serves a batch on a chain's route, any CloudEvent that asks
// for respond-async there, and every event sent to the node's event
// endpoint (ch nil): the body is read and parsed, and each event becomes
// an activation (Events.CloudEvents); the client gets 202 with their ids.
func (c *conn) runEvents(ch *Chain) bool {
	limit := 1 << 20
	if ch != nil {
		limit = int(ch.App.pool.BufferSize()) * 16
	}
	if c.req.length > int64(limit) {
		c.skipBody()
		c.msg = append(append(c.msg[:0], "spry: "...), fmt.Sprintf("events larger than %d bytes\n", limit)...)
		c.writeResponse(413, textPlain, c.msg, true, nil)
		return false
	}
	if cap(c.evbuf) < limit {
		c.evbuf = make([]byte, limit)
	}
	n, herr := c.readBody(c.evbuf[:limit])
	if herr != nil {
		if herr == ErrSilent {
			return false
		}
		c.writeError(herr, nil)
		return !herr.Close
	}
	evs, herr := ParseCloudEvents(c, c.req.ctype, c.evbuf[:n])
	if herr != nil {
		c.writeResponse(herr.Status, textPlain, c.errorBody(herr), false, nil)
		return true
	}
	res, herr := c.g.events.CloudEvents(ch, &c.gr, evs)
	if herr != nil {
		var extra []byte
		if herr.Retry {
			extra = retryAfter
		}
		c.writeResponse(herr.Status, textPlain, c.errorBody(herr), false, extra)
		return true
	}
	c.msg = append(c.msg[:0], `{"activations":[`...)
	for i, r := range res {
		if i > 0 {
			c.msg = append(c.msg, ',')
		}
		c.msg = append(append(append(c.msg, `{"id":"`...), r.ID...), '"')
		if r.Trigger != "" {
			c.msg = append(append(append(c.msg, `,"trigger":"`...), r.Trigger...), '"')
		}
		if r.Duplicate {
			c.msg = append(c.msg, `,"duplicate":true`...)
		}
		c.msg = append(c.msg, '}')
	}
	c.msg = append(c.msg, "]}\n"...)
	status := 202
	if ch != nil {
		ch.count(status, c.gr.Began)
	}
	c.writeResponse(status, appJSON, c.msg, false, nil)
	return true
}

// EventResult is one activation made from an event.
type EventResult struct {
	ID, Trigger string
	Duplicate   bool
}
