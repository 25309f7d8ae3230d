package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/spry-dev/spry/internal/activation"
)

// pyEvents is a Python SDK function that answers what the SDK's event
// readers see.
const pyEvents = `import spry

def handler(req, res):
    e = req.event
    ev = "-" if e is None else f"{e.type} {e.source} {e.id} {e.get('region')} {sorted(e.extensions)}"
    res.write(f"cause={req.cause} act={req.activation_id} trigger={req.trigger} topic={req.topic} event={ev}".encode())
`

// The Python SDK reads what the node writes for events: the CloudEvent's
// attributes, the activation id, the cause, the trigger.
func TestPythonEventReaders(t *testing.T) {
	t.Parallel()
	python3(t)
	dir := openDir(t)
	writeFile(t, dir, "ev.py", pyEvents)
	n := startNode(t, "-f", writeFile(t, dir, "spry.yaml", `
app: pyev
functions:
  ev: {python: ./ev.py}
chains:
  ev: {route: /ev, steps: [ev], methods: [POST]}
triggers:
  orders: {cloudevent: {typePrefix: com.example.order.}, chain: ev}
`))
	c := client(1)
	if st, b, err := n.post(c, "/ev", "x"); err != nil || st != 200 || b != "cause=http act= trigger= topic= event=-" {
		t.Fatalf("sync request: %d %q %v", st, b, err)
	}
	// A CloudEvent, synchronously (binary mode): the reply's data is the output.
	ce, err := cloudevents.NewClientHTTP(cloudevents.WithTarget("http://" + n.http + "/ev"))
	if err != nil {
		t.Fatal(err)
	}
	reply, res := ce.Request(context.Background(), newEvent("b-1", "com.example.motion", "hi"))
	if want := "cause=http act= trigger= topic= event=com.example.motion /shop/eu b-1 eu ['region']"; !cloudevents.IsACK(res) || reply == nil || string(reply.Data()) != want {
		t.Fatalf("sync CloudEvent: %v %v, want data %q", res, reply, want)
	}
	// Asynchronously, through the trigger of the node's event endpoint.
	ep, _ := cloudevents.NewClientHTTP(cloudevents.WithTarget("http://" + n.http + "/events"))
	if res := ep.Send(context.Background(), newEvent("o-1", "com.example.order.created", "order")); !cloudevents.IsACK(res) {
		t.Fatalf("event endpoint: %v", res)
	}
	var list struct{ Activations []activation.Record }
	deadline := time.Now().Add(20 * time.Second)
	for len(list.Activations) == 0 || !list.Activations[0].State.Terminal() {
		if time.Now().After(deadline) {
			t.Fatalf("no finished activation of the trigger: %+v", list)
		}
		time.Sleep(20 * time.Millisecond)
		n.getJSON("/v1/activations?chain=ev", &list)
	}
	id := list.Activations[0].ID
	resp, err := http.Get("http://" + n.admin + "/v1/activations/" + id + "/result")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf("cause=cloudevent act=%s trigger=orders topic= event=com.example.order.created /shop/eu o-1 eu ['region']", id)
	if string(b) != want {
		t.Fatalf("async CloudEvent: %q, want %q", b, want)
	}
}
