package gateway

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestPreferAsync(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{
		"respond-async": true, "Respond-Async": true, "wait=10, respond-async": true, " respond-async ; x=1": true,
		"return=minimal,respond-async": true, "respond-async=1": true,
		"": false, "wait=5": false, "respond-asyncx": false, "return=representation": false, "respond": false,
	} {
		if got := preferAsync([]byte(v)); got != want {
			t.Errorf("preferAsync(%q) = %v, want %v", v, got, want)
		}
	}
}

// With the default record setting (failures only), a chain's successful
// requests pay nothing for the recorder: still no allocation.
func TestRecorderFailuresOnlyZeroAllocs(t *testing.T) {
	var recorded atomic.Int64
	r := newRigWith(t, rigOpts{buffers: 8, inflight: 4, timeout: 5 * time.Second, recorder: func(Reply, int64) { recorded.Add(1) }})
	k := newKeepAlive(t, r.addr, "zero allocations")
	for range 100 {
		k.roundTrip(t)
	}
	if a := testing.AllocsPerRun(2000, func() { k.roundTrip(t) }); a != 0 {
		t.Fatalf("%v allocations per request, want 0", a)
	}
	if recorded.Load() != 0 {
		t.Fatalf("%d successful requests recorded by a failures-only recorder", recorded.Load())
	}
}
