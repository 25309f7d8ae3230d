package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/spry-dev/spry/internal/activation"
)

const ceYAML = `
app: ce
functions:
  upper: {builtin: upper}
chains:
  detect: {route: /detect, steps: [upper]}
  audit: {route: /audit, steps: [upper]}
triggers:
  orders: {cloudevent: {typePrefix: com.example.order.}, chain: detect}
  everything: {cloudevent: {}, chain: audit}
`

func newEvent(id, typ, data string) event.Event {
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource("/shop/eu")
	e.SetType(typ)
	e.SetExtension("region", "eu")
	e.SetData("text/plain", []byte(data))
	return e
}

func TestCloudEvents(t *testing.T) {
	t.Parallel()
	n := startNode(t, "-f", writeConfig(t, ceYAML))
	ctx := context.Background()
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget("http://" + n.http + "/detect"))
	if err != nil {
		t.Fatal(err)
	}
	// Binary mode (the SDK's default), synchronous: the reply is an event.
	reply, res := c.Request(ctx, newEvent("b-1", "com.example.motion", "hello"))
	if !cloudevents.IsACK(res) || reply == nil {
		t.Fatalf("binary: %v", res)
	}
	if reply.Type() != "dev.spry.reply" || reply.ID() != "b-1-reply" || reply.Source() != "/spry/ce/detect" || string(reply.Data()) != "HELLO" {
		t.Fatalf("binary reply: %v", reply)
	}
	// Structured mode.
	reply, res = c.Request(binding.WithForceStructured(ctx), newEvent("s-1", "com.example.motion", "structured"))
	if !cloudevents.IsACK(res) || reply == nil || string(reply.Data()) != "STRUCTURED" {
		t.Fatalf("structured: %v %v", res, reply)
	}
	// A malformed event: 400 naming the attribute.
	req, _ := http.NewRequest("POST", "http://"+n.http+"/detect", strings.NewReader("x"))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", "1")
	req.Header.Set("Ce-Source", "/s")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "attribute type: MUST be a non-empty string") {
		t.Fatalf("malformed: %d %s", resp.StatusCode, b)
	}

	// Batched mode: one activation per event; sent twice, the duplicate
	// rule (source + id) makes no second activation.
	batch, _ := json.Marshal([]event.Event{newEvent("o-1", "com.example.order.created", "one"), newEvent("o-2", "com.example.order.paid", "two")})
	post := func(path string, ctype string, body []byte) []struct {
		ID, Trigger string
		Duplicate   bool
	} {
		req, _ := http.NewRequest("POST", "http://"+n.http+path, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Activations []struct {
				ID, Trigger string
				Duplicate   bool
			}
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 202 || json.Unmarshal(b, &out) != nil {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
		return out.Activations
	}
	first := post("/detect", "application/cloudevents-batch+json", batch)
	again := post("/detect", "application/cloudevents-batch+json", batch)
	if len(first) != 2 || len(again) != 2 || again[0].ID != first[0].ID || !again[1].Duplicate {
		t.Fatalf("batch: %+v then %+v", first, again)
	}
	for _, a := range first {
		r := n.waitActivation(a.ID, 10*time.Second)
		if r.State != activation.Succeeded || r.Cause.Kind != "cloudevent" || r.Event["region"] != "eu" || r.Event["source"] != "/shop/eu" {
			t.Fatalf("batch activation: %+v", r)
		}
	}

	// The node's event endpoint fans out by the triggers' filters.
	ep, _ := cloudevents.NewClientHTTP(cloudevents.WithTarget("http://" + n.http + "/events"))
	if res := ep.Send(ctx, newEvent("n-1", "com.example.order.created", "fan")); !cloudevents.IsACK(res) {
		t.Fatalf("event endpoint: %v", res)
	}
	if res := ep.Send(ctx, newEvent("n-2", "com.other.thing", "one")); !cloudevents.IsACK(res) {
		t.Fatalf("event endpoint: %v", res)
	}
	waitFor(t, 10*time.Second, func() bool {
		var list struct{ Activations []activation.Record }
		n.getJSON("/v1/activations?limit=100", &list)
		got := map[string]int{}
		for _, a := range list.Activations {
			if a.Cause.Kind == "cloudevent" && a.Cause.Trigger != "" && a.State == activation.Succeeded {
				got[a.Event["id"]+":"+a.Cause.Trigger]++
			}
		}
		return got["n-1:orders"] == 1 && got["n-1:everything"] == 1 && got["n-2:everything"] == 1 && got["n-2:orders"] == 0
	})
}
