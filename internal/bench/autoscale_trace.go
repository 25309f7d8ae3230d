package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spry-dev/spry/internal/control/trace"
)

// Generated traces: their names, and the rates they are made at (trace
// units, like the Azure traces' 41–230 req/s; --rate-scale fits them to the
// machine).
var generators = map[string]func(seed uint64, n int) trace.Trace{
	// A base of 40 req/s with 3–8× bursts of 5–30 s.
	"bursty": func(seed uint64, n int) trace.Trace { return trace.Bursty(seed, n, 40) },
	// Active periods at 75–225 req/s between idle gaps of 1–5 minutes.
	"idlegaps": func(seed uint64, n int) trace.Trace { return trace.IdleGaps(seed, n, 150) },
	// 40 to 230 req/s over the whole trace.
	"ramp": func(seed uint64, n int) trace.Trace { return trace.Ramp(seed, n, 40, 230) },
	// One compressed day over the trace: trough, peak of 230 req/s, trough.
	"diurnal": func(seed uint64, n int) trace.Trace { return trace.Diurnal(seed, n, 230, n) },
}

// GeneratorNames lists the generated traces --trace accepts.
var GeneratorNames = []string{"bursty", "idlegaps", "ramp", "diurnal"}

// LoadTrace resolves a --trace argument: a generator name with an optional
// seed (bursty, bursty:7; n one-second samples), a trace file, or the name
// of a trace built into spry (azure_workload_1, azure_workload_2) when no
// file has that name. It returns the trace and the name the report gives
// it.
func LoadTrace(spec string, n int) (trace.Trace, string, error) {
	name, seedStr, hasSeed := strings.Cut(spec, ":")
	if gen, ok := generators[name]; ok {
		seed := uint64(1)
		if hasSeed {
			s, err := strconv.ParseUint(seedStr, 10, 64)
			if err != nil {
				return trace.Trace{}, "", fmt.Errorf("trace %q: seed %q: want a non-negative integer", spec, seedStr)
			}
			seed = s
		}
		if n < 1 || n > trace.MaxLen {
			return trace.Trace{}, "", fmt.Errorf("trace %q: length %d, want 1..%d", spec, n, trace.MaxLen)
		}
		t := gen(seed, n)
		return t, fmt.Sprintf("%s:%d", name, seed), t.Validate()
	}
	t, err := trace.Load(spec)
	if err != nil {
		if b, ok := trace.Builtin(spec); ok && errors.Is(err, fs.ErrNotExist) {
			return b, spec, nil
		}
		if !strings.ContainsAny(spec, "/.") {
			return trace.Trace{}, "", fmt.Errorf("%w (built-in traces: %s; generated: %s, each with an optional :SEED)",
				err, strings.Join(trace.BuiltinNames(), ", "), strings.Join(GeneratorNames, ", "))
		}
		return trace.Trace{}, "", err
	}
	return t, filepath.Base(spec), nil
}

// traceSchedule is the open-loop schedule of a trace replay: a warm-up at
// the trace's first rate, then each sample of the trace at its rate × scale,
// compressed in time by speedup. Arrivals are Poisson (the rate is piecewise
// constant, so the process is a non-homogeneous Poisson process, drawn by
// inverting its cumulative intensity) or evenly spaced.
type traceSchedule struct {
	segs    []segment
	poisson bool
	rng     *rand.Rand

	seg    int     // current segment
	segCum float64 // expected arrivals before segment seg
	target float64 // cumulative intensity of the next arrival
	count  int     // arrivals returned
}

// segment is a stretch of constant rate: from start, for dur, rate per
// second of wall time.
type segment struct {
	start, dur time.Duration
	rate       float64
}

// newTraceSchedule lays t out in wall time: warm at t's first rate, then
// t's samples, each interval/speedup long, at rate × scale.
func newTraceSchedule(t trace.Trace, speedup, scale float64, warm time.Duration, poisson bool, seed uint64) *traceSchedule {
	s := &traceSchedule{poisson: poisson, rng: rand.New(rand.NewPCG(seed, 0x7ace))}
	if warm > 0 && len(t.RPS) > 0 {
		s.segs = append(s.segs, segment{0, warm, t.RPS[0] * scale})
	}
	step := time.Duration(t.Interval / speedup * float64(time.Second))
	for i, r := range t.RPS {
		s.segs = append(s.segs, segment{warm + time.Duration(i)*step, step, r * scale})
	}
	s.advance()
	return s
}

// advance draws the cumulative intensity of the next arrival.
func (s *traceSchedule) advance() {
	if s.poisson {
		s.target += s.rng.ExpFloat64()
	} else {
		// Evenly spaced: the k-th arrival when k−½ are expected, so that
		// a segment of rate r has its first arrival after 1/(2r), not at
		// its start.
		if s.count == 0 {
			s.target = 0.5
		} else {
			s.target++
		}
	}
}

// Next returns the next arrival's offset from the start of the warm-up.
func (s *traceSchedule) Next() (time.Duration, bool) {
	for s.seg < len(s.segs) {
		g := &s.segs[s.seg]
		expect := g.rate * g.dur.Seconds()
		if s.target < s.segCum+expect && g.rate > 0 {
			off := g.start + time.Duration((s.target-s.segCum)/g.rate*float64(time.Second))
			s.count++
			s.advance()
			return off, true
		}
		s.segCum += expect
		s.seg++
	}
	return 0, false
}

// Expected returns the mean number of arrivals of the trace part (after
// the warm-up).
func (s *traceSchedule) expected(warm time.Duration) float64 {
	n := 0.0
	for _, g := range s.segs {
		if g.start >= warm {
			n += g.rate * g.dur.Seconds()
		}
	}
	return n
}

// autoRateScale is the default --rate-scale: the trace's peak then needs
// share of the machine's cores at cpu per request.
func autoRateScale(t trace.Trace, cpu time.Duration, cores int, share float64) float64 {
	peak := t.Peak()
	if peak <= 0 || cpu <= 0 {
		return 1
	}
	s := share * float64(cores) / (peak * cpu.Seconds())
	// Two significant digits: a setting one can read and repeat.
	p := math.Pow(10, math.Floor(math.Log10(s))-1)
	return math.Round(s/p) * p
}
