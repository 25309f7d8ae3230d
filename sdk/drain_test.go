package sdk

import (
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
)

// Defect 6 of issue 17: in-flight dropped to 0 before a finished step's
// output was forwarded; a drain then stopped the instance, the forward gave
// up and overwrote the output with a 503 that salvage returned. Now the
// instance keeps the finished output (the node's drain waits while it
// holds a buffer, pool.Holding; a stop that comes anyway leaves the output
// for the daemon's reclaim to send on).
func TestStopKeepsFinishedOutput(t *testing.T) {
	r := newRig(t, 1, upperInPlace, upperInPlace)
	r.p.SetSlotState(1, pool.SlotDraining) // the next step has no ready instance
	in := r.insts[0]
	buf, _ := r.p.Alloc(gwID)
	h := r.p.Header(buf)
	h.SetData(0, uint32(copy(r.p.Buffer(buf), "done")))
	h.SetReqID(1)
	h.SetTimes(mono.Now(), mono.Now()+int64(10*time.Second))
	r.send(0, buf)
	// The step ran; its output waits for the next step.
	waitUntil(t, func() bool { return in.st.Served.Load() == 1 })
	if in.st.InFlight.Load() != 0 || r.p.Holding(in.id) != 1 {
		t.Fatalf("in flight %d, holding %d: the drain must see the output held", in.st.InFlight.Load(), r.p.Holding(in.id))
	}
	in.shutdown() // the drain's SIGTERM
	time.Sleep(50 * time.Millisecond)
	o := h.Own()
	if o.Holder != in.id || o.Transit != 0 || h.Status() == 503 || string(r.p.Data(buf)) != "DONE" {
		t.Fatalf("after the stop: %+v status %d %q; want the output kept by the instance", o, h.Status(), r.p.Data(buf))
	}
	if _, end := h.HopTimes(0); end == 0 {
		t.Fatal("the finished hop has no end time: salvage would answer 502")
	}
	// What the daemon does after the process exits: the output goes on.
	var got []uint32
	r.p.Reclaim(in.id, func(b uint32) { got = append(got, b) })
	if len(got) != 1 || got[0] != buf {
		t.Fatalf("reclaimed %v", got)
	}
	r.p.Free(buf, pool.OwnerDaemon)
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
