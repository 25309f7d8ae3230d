package sdk

import (
	"testing"
)

// The attributes the gateway writes reach a handler through Event,
// ActivationID, Cause, Trigger and Topic, read from the buffer header
// without allocating.
func TestEventAttributes(t *testing.T) {
	r, err := NewRunner(RunnerOptions{BufferSize: 4096, Calls: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := r.Begin()
	c.SetRequest("POST", "/e", "")
	c.AddHeader("X-A", "1")
	for _, a := range [][2]string{{"specversion", "1.0"}, {"id", "e-1"}, {"source", "/shop"}, {"type", "com.example.order"},
		{"subject", "o-9"}, {"region", "eu"}, {"spry.activation", "18ec8810cc3ee615a7a82c5533d1ab10"}, {"spry.cause", "cloudevent"},
		{"spry.trigger", "orders"}, {"spry.topic", "sensors/a/motion"}} {
		if !c.AddAttr(a[0], a[1]) {
			t.Fatal("AddAttr did not fit")
		}
	}
	var allocs float64
	out := c.Run(func(req *Request, res *Response) error {
		ev, ok := req.Event()
		if !ok || ev.ID() != "e-1" || ev.Source() != "/shop" || ev.Type() != "com.example.order" || ev.Subject() != "o-9" ||
			ev.SpecVersion() != "1.0" || ev.Attr("region") != "eu" || ev.Time() != "" {
			t.Errorf("event: %q %q %q", ev.ID(), ev.Source(), ev.Type())
		}
		var ext []string
		ev.Extensions(func(k, v string) { ext = append(ext, k+"="+v) })
		if len(ext) != 1 || ext[0] != "region=eu" {
			t.Errorf("extensions %v", ext)
		}
		if req.ActivationID() != "18ec8810cc3ee615a7a82c5533d1ab10" || req.Cause() != "cloudevent" || req.Trigger() != "orders" ||
			req.Topic() != "sensors/a/motion" || req.Header("x-a") != "1" {
			t.Errorf("activation %q cause %q trigger %q topic %q", req.ActivationID(), req.Cause(), req.Trigger(), req.Topic())
		}
		allocs = testing.AllocsPerRun(100, func() {
			e, _ := req.Event()
			_ = e.Type()
			_ = req.ActivationID()
			_ = req.Trigger()
		})
		return nil
	}, 0, 0, 1)
	if out.Status >= 400 {
		t.Fatalf("status %d: %s", out.Status, out.Body)
	}
	if allocs != 0 {
		t.Fatalf("the attribute accessors allocate %v", allocs)
	}
	c.End()
	// A plain synchronous request has none.
	c2 := r.Begin()
	defer c2.End()
	c2.SetRequest("GET", "/", "")
	c2.Run(func(req *Request, res *Response) error {
		if _, ok := req.Event(); ok || req.ActivationID() != "" || req.Cause() != "http" || req.Trigger() != "" {
			t.Error("a plain request has event attributes")
		}
		return nil
	}, 0, 0, 1)
}
