package trace

import (
	"errors"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadAzure(t *testing.T) {
	t.Parallel()
	if got := BuiltinNames(); !reflect.DeepEqual(got, []string{"azure_workload_1", "azure_workload_2"}) {
		t.Fatalf("BuiltinNames() = %v", got)
	}
	for _, name := range []string{"azure_workload_1", "azure_workload_2"} {
		tr, err := Load("azure/" + name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		if b, ok := Builtin(name); !ok || !reflect.DeepEqual(b, tr) {
			t.Fatalf("Builtin(%q) = %v, differs from the file", name, ok)
		}
		if len(tr.RPS) != 1440 || tr.Interval != 1 || tr.Duration() != 24*time.Minute {
			t.Fatalf("%s: %d samples, interval %v", name, len(tr.RPS), tr.Interval)
		}
		if p := tr.Peak(); p < 150 || p > 250 {
			t.Fatalf("%s: peak %v", name, p)
		}
	}
	if _, err := Load("azure/missing.json"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	for _, bad := range []string{"missing", "azure/azure_workload_1", "azure_workload_1.json", ""} {
		if _, ok := Builtin(bad); ok {
			t.Fatalf("Builtin(%q) found a trace", bad)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, want string
	}{
		{``, "empty input"},
		{`{"rps": [1, 2,`, "truncated"},
		{"{\n\"rps\": [1, 2],\n\"interval\": x}", "line 3"},
		{`{"rps": [1, "2"], "interval": 1}`, `rps: got JSON string, want float64`},
		{`{"rps": [1, 2]}`, "interval: missing"},
		{`{"rps": [], "interval": 1}`, "rps: empty"},
		{`{"interval": 1}`, "rps: empty"},
		{`{"rps": [1, -2, 3], "interval": 1}`, "rps[1]: -2"},
		{`{"rps": [1], "interval": 0}`, "interval: 0"},
		{`{"rps": [1], "interval": -1}`, "interval: -1"},
		{`{"rps": [1], "interval": 1, "extra": true}`, `unknown field "extra"`},
		{`{"rps": [1], "interval": 1} {}`, "trailing data"},
		{`[1, 2, 3]`, "cannot unmarshal array"},
		{`{"rps": [-1, -1, -1, -1, -1], "interval": 1}`, "more bad samples follow"},
	} {
		_, err := Parse([]byte(c.in))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an ErrInvalid containing %q", c.in, err, c.want)
		}
	}
	tr, err := Parse([]byte(`{"rps": [1.5, 0, 3], "interval": 0.5}`))
	if err != nil || !reflect.DeepEqual(tr.RPS, []float64{1.5, 0, 3}) || tr.Step() != 500*time.Millisecond {
		t.Fatalf("valid trace: %+v, %v", tr, err)
	}
	if tr.Rate(700*time.Millisecond) != 0 || tr.Rate(1200*time.Millisecond) != 3 || tr.Rate(2*time.Second) != 0 {
		t.Fatal("Rate indexes by interval")
	}
}

func TestGeneratorsDeterministic(t *testing.T) {
	t.Parallel()
	gens := map[string]func(seed uint64) Trace{
		"bursty":  func(s uint64) Trace { return Bursty(s, 3000, 50) },
		"idle":    func(s uint64) Trace { return IdleGaps(s, 3000, 50) },
		"ramp":    func(s uint64) Trace { return Ramp(s, 3000, 10, 500) },
		"diurnal": func(s uint64) Trace { return Diurnal(s, 3000, 300, 1000) },
	}
	for name, g := range gens {
		a, b, c := g(1), g(1), g(2)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: same seed, different traces", name)
		}
		if reflect.DeepEqual(a, c) {
			t.Errorf("%s: different seeds, same trace", name)
		}
		if err := a.Validate(); err != nil || len(a.RPS) != 3000 {
			t.Errorf("%s: invalid or wrong length: %v", name, err)
		}
		if b, err := a.Marshal(); err != nil {
			t.Errorf("%s: marshal: %v", name, err)
		} else if r, err := Parse(b); err != nil || !reflect.DeepEqual(r, a) {
			t.Errorf("%s: round trip: %v", name, err)
		}
	}
}

func TestGeneratorShapes(t *testing.T) {
	t.Parallel()
	b := Bursty(7, 3600, 100)
	bursts, in := 0, false
	for _, r := range b.RPS {
		hot := r > 250
		if hot && !in {
			bursts++
		}
		in = hot
	}
	if bursts < 20 || bursts > 60 || b.Peak() > 100*8*1.1+1 {
		t.Errorf("bursty: %d bursts in an hour, peak %v", bursts, b.Peak())
	}

	g := IdleGaps(7, 3600, 100)
	longest, run := 0, 0
	for _, r := range g.RPS {
		if r == 0 {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	if longest < 60 || g.RPS[0] == 0 {
		t.Errorf("idle gaps: longest gap %d s, first sample %v", longest, g.RPS[0])
	}

	r := Ramp(7, 101, 0, 1000)
	if r.RPS[0] > 1 || math.Abs(r.RPS[100]-1000) > 50 || math.Abs(r.RPS[50]-500) > 25 {
		t.Errorf("ramp: %v … %v … %v", r.RPS[0], r.RPS[50], r.RPS[100])
	}

	d := Diurnal(7, 1000, 200, 1000)
	if d.RPS[0] > 25 || d.RPS[500] < 170 || d.Peak() > 221 {
		t.Errorf("diurnal: trough %v, peak %v at mid-day %v", d.RPS[0], d.Peak(), d.RPS[500])
	}
	if n := len(Bursty(1, -5, 10).RPS); n != 0 {
		t.Errorf("negative length gave %d samples", n)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"rps": [144, 141, 147], "interval": 1}`,
		`{"rps": [0.5], "interval": 0.25}`,
		`{"rps": [], "interval": 1}`,
		`{"rps": [1e308, 1e308], "interval": 3600}`,
		`{"rps": [1], "interval": 1, "x": 1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if err := tr.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid trace: %v", err)
		}
		out, err := tr.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out)
		if err != nil || !reflect.DeepEqual(again, tr) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
