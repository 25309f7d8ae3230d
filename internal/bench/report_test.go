package bench

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// A mode that answered no request has no latencies (NaN); its report must
// still be written, with those fields null.
func TestReportWithUnansweredMode(t *testing.T) {
	nan := math.NaN()
	r := Report{Modes: []ModeResult{
		{Mode: "skmsg", Requests: 10, P50: 1.5, P99: 2, P999: 3, Mean: 1.6,
			ByChain: map[string]Latency{"a": {Requests: 10, P50: 1.5, P99: 2}}},
		{Mode: "knative", P50: nan, P99: nan, P999: nan, Mean: nan,
			ByChain: map[string]Latency{"a": {P50: nan, P99: nan}}},
	}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	s := string(b)
	for _, want := range []string{`"p50_ms":1.5`, `"p99_ms":2`, `"mean_ms":1.6`, `"p50_ms":null`, `"p999_ms":null`, `"mode":"knative"`} {
		if !strings.Contains(s, want) {
			t.Errorf("report.json lacks %s: %s", want, s)
		}
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if back.Modes[0].P99 != 2 || back.Modes[0].ByChain["a"].P50 != 1.5 {
		t.Errorf("round trip lost values: %+v", back.Modes[0])
	}
}
