// Package trace loads and generates request-rate traces: one arrival rate
// (requests per second) per fixed interval, the load that autoscaler tests
// and benchmarks replay.
//
// The file format is the one of the Mu load tests (and of
// ../shared/traces): a JSON object {"rps": [144, 141, ...], "interval": 1}
// with interval in seconds. [Load] and [Parse] validate it; [Bursty],
// [IdleGaps], [Ramp] and [Diurnal] generate traces deterministically from a
// seed.
package trace

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"
)

// ErrInvalid is wrapped by every error about a trace's content.
var ErrInvalid = errors.New("invalid trace")

// MaxLen bounds a trace's length (a week of one-second samples).
const MaxLen = 7 * 24 * 3600

// Trace is a request-rate trace.
type Trace struct {
	// RPS holds the arrival rate, in requests per second, of each interval.
	RPS []float64 `json:"rps"`
	// Interval is the length of each sample, in seconds.
	Interval float64 `json:"interval"`
}

// Step returns the sample interval as a duration.
func (t Trace) Step() time.Duration { return time.Duration(t.Interval * float64(time.Second)) }

// Duration returns the trace's length in time.
func (t Trace) Duration() time.Duration { return time.Duration(len(t.RPS)) * t.Step() }

// Rate returns the arrival rate at time d (0 past the end).
func (t Trace) Rate(d time.Duration) float64 {
	if d < 0 || t.Interval <= 0 {
		return 0
	}
	i := int(d.Seconds() / t.Interval)
	if i >= len(t.RPS) {
		return 0
	}
	return t.RPS[i]
}

// Peak returns the highest rate in the trace.
func (t Trace) Peak() float64 {
	p := 0.0
	for _, r := range t.RPS {
		p = max(p, r)
	}
	return p
}

// Mean returns the mean rate.
func (t Trace) Mean() float64 {
	if len(t.RPS) == 0 {
		return 0
	}
	s := 0.0
	for _, r := range t.RPS {
		s += r
	}
	return s / float64(len(t.RPS))
}

// Validate reports the first problems with t (wrapping ErrInvalid): an
// empty or overlong trace, a missing or non-positive interval, a negative,
// NaN or infinite rate.
func (t Trace) Validate() error {
	var errs []error
	if len(t.RPS) == 0 {
		errs = append(errs, fmt.Errorf("%w: rps: empty or missing", ErrInvalid))
	}
	if len(t.RPS) > MaxLen {
		errs = append(errs, fmt.Errorf("%w: rps: %d samples, at most %d", ErrInvalid, len(t.RPS), MaxLen))
	}
	if !(t.Interval > 0) || t.Interval > 3600 || math.IsInf(t.Interval, 0) {
		errs = append(errs, fmt.Errorf("%w: interval: %v, want seconds in (0, 3600]", ErrInvalid, t.Interval))
	}
	bad := 0
	for i, r := range t.RPS {
		if r >= 0 && !math.IsInf(r, 1) {
			continue
		}
		if bad++; bad > 3 {
			errs = append(errs, fmt.Errorf("%w: rps: more bad samples follow", ErrInvalid))
			break
		}
		errs = append(errs, fmt.Errorf("%w: rps[%d]: %v, want a finite rate ≥ 0", ErrInvalid, i, r))
	}
	return errors.Join(errs...)
}

// Load reads and validates a trace file.
func Load(path string) (Trace, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Trace{}, fmt.Errorf("trace: %w", err)
	}
	t, err := Parse(b)
	if err != nil {
		return Trace{}, fmt.Errorf("trace %s: %w", path, err)
	}
	return t, nil
}

// Parse decodes and validates a trace. Unknown fields, trailing data and a
// missing interval are errors; JSON syntax errors name their line.
func Parse(b []byte) (Trace, error) {
	var raw struct {
		RPS      []float64 `json:"rps"`
		Interval *float64  `json:"interval"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return Trace{}, fmt.Errorf("%w: %s", ErrInvalid, describe(b, err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return Trace{}, fmt.Errorf("%w: trailing data after the trace object", ErrInvalid)
	}
	if raw.Interval == nil {
		return Trace{}, fmt.Errorf("%w: interval: missing (seconds per rps sample)", ErrInvalid)
	}
	t := Trace{RPS: raw.RPS, Interval: *raw.Interval}
	if err := t.Validate(); err != nil {
		return Trace{}, err
	}
	return t, nil
}

// describe adds the line number to JSON errors that carry an offset.
func describe(b []byte, err error) string {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
		if te.Field != "" {
			return fmt.Sprintf("line %d: %s: got JSON %s, want %v", line(b, off), te.Field, te.Value, te.Type)
		}
	case errors.Is(err, io.EOF):
		return "empty input"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	if off >= 0 {
		return fmt.Sprintf("line %d: %v", line(b, off), err)
	}
	return err.Error()
}

func line(b []byte, off int64) int {
	off = min(max(off, 0), int64(len(b)))
	return 1 + bytes.Count(b[:off], []byte{'\n'})
}

// Marshal encodes t in the file format.
func (t Trace) Marshal() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(t)
}
