package pool

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"unsafe"

	"github.com/spry-dev/spry/internal/hist"
)

// The Python SDK (sdk/python/spry/_pool.py) spells the layout out again, by
// hand: this test holds it to the Go structs, so a layout change that
// forgets it fails here, field by field, instead of in a Python instance.
func TestPythonSDKLayout(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("SPRY_REQUIRE_PYTHON") == "1" {
			t.Fatal("python3 not found; SPRY_REQUIRE_PYTHON=1")
		}
		t.Skip("python3 not found (Debian: apt-get install python3)")
	}
	_, file, _, _ := runtime.Caller(0)
	sdk := filepath.Join(filepath.Dir(file), "..", "..", "sdk", "python")
	cmd := exec.Command(py, "-c", `import json; from spry import _pool as P
print(json.dumps({k: v for k, v in vars(P).items() if k.isupper() and isinstance(v, (int, list))}))`)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+sdk, "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	var got map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber() // the magic does not fit a float
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var h header
	var b BufHeader
	var st SlotStats
	want := map[string]any{
		"MAGIC": Magic, "VERSION": Version, "PAGE": PageSize, "HEADER_SIZE": HeaderSize,
		"MAX_HOPS": MaxHops, "MAX_STEPS": MaxSteps, "STATS_SIZE": StatsSize, "MAX_CTYPE": MaxContentType,
		"OFF_META": unsafe.Offsetof(b.meta), "MAX_META": MaxMeta,
		"H_VERSION": unsafe.Offsetof(h.version), "H_LAYOUT": unsafe.Offsetof(h.layout), "H_REGIONS": unsafe.Offsetof(h.route),
		"H_HEAD": unsafe.Offsetof(h.head), "H_FREE": unsafe.Offsetof(h.free), "H_ALLOC_FAILS": unsafe.Offsetof(h.allocFails),
		"H_RECLAIMED": unsafe.Offsetof(h.reclaimed), "H_STALE": unsafe.Offsetof(h.stale),
		"ROUTE_HEADER": unsafe.Sizeof(routeHeader{}), "FN_ENTRY": unsafe.Sizeof(fnEntry{}),
		"CHAIN_ENTRY": unsafe.Sizeof(chainEntry{}), "SLOT_INFO": unsafe.Sizeof(slotInfo{}),
		"SLOT_READY": SlotReady,
		"S_QUEUE":    unsafe.Offsetof(st.Queue), "S_INFLIGHT": unsafe.Offsetof(st.InFlight), "S_ARRIVALS": unsafe.Offsetof(st.Arrivals),
		"S_SERVED": unsafe.Offsetof(st.Served), "S_ERRORS": unsafe.Offsetof(st.Errors), "S_BUSY_NANOS": unsafe.Offsetof(st.BusyNanos),
		"S_BUSY_SINCE": unsafe.Offsetof(st.BusySince), "S_STALE": unsafe.Offsetof(st.Stale),
		"S_CLIENT_ERRORS": unsafe.Offsetof(st.ClientErrors), "S_LATENCY": unsafe.Offsetof(st.Latency),
		"B_OWN": unsafe.Offsetof(b.own), "B_NEXT": unsafe.Offsetof(b.next), "B_LEN": unsafe.Offsetof(b.length),
		"B_REQID": unsafe.Offsetof(b.reqID), "B_OFF": unsafe.Offsetof(b.off), "B_STATUS": unsafe.Offsetof(b.status),
		"B_FLAGS": unsafe.Offsetof(b.flags), "B_HOPS": unsafe.Offsetof(b.hops), "B_CHAIN": unsafe.Offsetof(b.chain),
		"B_CTYPE_LEN": unsafe.Offsetof(b.ctypeLen), "B_META_LEN": unsafe.Offsetof(b.metaLen),
		"B_INGRESS": unsafe.Offsetof(b.ingress), "B_DEADLINE": unsafe.Offsetof(b.deadline),
		"B_CTYPE": unsafe.Offsetof(b.ctype), "B_TIMES": unsafe.Offsetof(b.times),
		"FLAG_STOP": FlagStop, "FLAG_CONTENT_TYPE": FlagContentType, "OWNER_FREE": OwnerFree, "OWNER_DAEMON": OwnerDaemon,
		"BOUNDS": hist.Bounds[:],
		// Layout 5: graphs, shared buffers, joins, calls, large payloads.
		"MAX_NODES": MaxNodes, "MAX_NEXT": MaxNext, "MAX_NAME": MaxName, "MAX_DEPTH": MaxDepth, "MAX_SEGS": MaxSegs,
		"CHUNK": ChunkSize, "EXT_ALIGN": extAlign, "NO_NODE": NoNode, "CALL_NODE": CallNode,
		"H_EXT_CURSOR": unsafe.Offsetof(h.cursor), "H_EXT_USED": unsafe.Offsetof(h.used), "H_EXT_FAILS": unsafe.Offsetof(h.extFails),
		"NODE_ENTRY": unsafe.Sizeof(nodeEntry{}), "NODE_CHOOSE": nodeChoose, "NODE_JOIN": nodeJoin,
		"B_SENT": unsafe.Offsetof(b.sent), "B_NODE": unsafe.Offsetof(b.node), "B_PHASE": unsafe.Offsetof(b.phase),
		"B_NSEG": unsafe.Offsetof(b.nseg), "B_DEPTH": unsafe.Offsetof(b.depth), "B_KIND": unsafe.Offsetof(b.kind),
		"B_REF_BIT": unsafe.Offsetof(b.refBit), "B_CHOSEN": unsafe.Offsetof(b.chosen), "B_REF": unsafe.Offsetof(b.ref),
		"B_REF_GEN": unsafe.Offsetof(b.refGen), "B_HELD": unsafe.Offsetof(b.held), "B_CALL": unsafe.Offsetof(b.call),
		"B_FRAMES": unsafe.Offsetof(b.frames), "B_SEGS": unsafe.Offsetof(b.segs), "B_INPUTS": unsafe.Offsetof(b.inputs),
		"B_WIDTH": unsafe.Offsetof(b.width), "B_OF": unsafe.Offsetof(b.of), "B_ARRIVED": unsafe.Offsetof(b.arrived),
		"B_OKAYS":      unsafe.Offsetof(b.okays),
		"PHASE_QUEUED": PhaseQueued, "PHASE_RUNNING": PhaseRunning, "PHASE_DONE": PhaseDone,
		"KIND_DATA": KindData, "KIND_JOIN": KindJoin, "OWNER_JOINED": OwnerJoined, "OWNER_SHARED": OwnerShared,
	}
	for k, w := range want {
		wj, _ := json.Marshal(w)
		gj, _ := json.Marshal(got[k])
		if string(wj) != string(gj) {
			t.Errorf("sdk/python/spry/_pool.py %s = %s, the Go layout says %s", k, gj, wj)
		}
	}
}
