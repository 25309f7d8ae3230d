package control

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expectations in testdata/*.txt with the current output")

// TestScenarios replays testdata/*.txt. Each file is a series of blocks:
//
//	# comments
//	command key=value ...
//	----
//	expected output
//	(blank line)
//
// Commands:
//
//	config key=value...   build an autoscaler (keys below); prints "ok" or
//	                      the config's problems, one per line
//	tick key=value...     advance the clock and tick; prints one line per tick
//
// config keys: policy min max concurrency slo tick, and per policy
// mu: exec cold halflife up down stab idle percentile slowindow margin seed windows
// kpa: util stable panic threshold interval up down grace
// fixed: instances.
//
// tick keys: n (ticks, default 1), dt (default 1s), print (all | changes |
// last); the observation arrivals done busy queued inflight conc ready
// starting; shorthands rps=R and exec=D (arrivals = R·dt, done = arrivals,
// busy = done·D, inflight = R·D, conc = R·D + queued) and ready=follow
// (ready = the previous decision, starting = 0).
//
//	urgent key=value...   mu's look between ticks at=D after the last tick
//	                      (default 500ms), with arrivals (since the tick)
//	                      queued inflight ready starting, or rps=R (arrivals
//	                      = R·at) and ready=follow; prints "urgent=N" or
//	                      "no"; the clock does not move
//
// go test -run TestScenarios -rewrite regenerates the expectations.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			t.Parallel()
			runScenarioFile(t, f, &scenario{})
		})
	}
}

type block struct {
	pre  []string // comment and blank lines before the command
	cmd  string
	want []string
	line int
}

func parseScenario(t *testing.T, path string) []block {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var bs []block
	var cur block
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
			cur.pre = append(cur.pre, l)
			continue
		}
		cur.cmd, cur.line = l, i+1
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s:%d: command not followed by ----", path, i+1)
		}
		i += 2
		for ; i < len(lines) && lines[i] != ""; i++ {
			cur.want = append(cur.want, lines[i])
		}
		bs = append(bs, cur)
		cur = block{}
	}
	return bs
}

// runScenarioFile replays one file through s, which runs each command and
// returns its output lines.
func runScenarioFile(t *testing.T, path string, s interface{ run(string) []string }) {
	bs := parseScenario(t, path)
	var out strings.Builder
	for i, b := range bs {
		got := s.run(b.cmd)
		for _, l := range b.pre {
			out.WriteString(l + "\n")
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n", b.cmd, strings.Join(got, "\n"))
		if i < len(bs)-1 {
			out.WriteString("\n")
		}
		if !*rewrite && strings.Join(got, "\n") != strings.Join(b.want, "\n") {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, b.line, b.cmd,
				strings.Join(got, "\n"), strings.Join(b.want, "\n"))
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type scenario struct {
	a          Autoscaler
	now        time.Duration
	last       Decision
	lastReason string
}

func (s *scenario) run(cmd string) []string {
	f := strings.Fields(cmd)
	kv := map[string]string{}
	var order []string
	for _, a := range f[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return []string{"error: argument " + a + " is not key=value"}
		}
		kv[k] = v
		order = append(order, k)
	}
	var err error
	var out []string
	switch f[0] {
	case "config":
		out, err = s.config(kv, order)
	case "tick":
		out, err = s.tick(kv)
	case "urgent":
		out, err = s.urgent(kv)
	default:
		err = fmt.Errorf("unknown command %q", f[0])
	}
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	return out
}

func (s *scenario) config(kv map[string]string, order []string) ([]string, error) {
	var c Config
	for _, k := range order {
		v := kv[k]
		var err error
		switch k {
		case "policy":
			c.Policy = v
		case "min":
			c.MinInstances, err = strconv.Atoi(v)
		case "max":
			c.MaxInstances, err = strconv.Atoi(v)
		case "concurrency":
			c.Concurrency, err = strconv.Atoi(v)
		case "slo":
			c.SLO, err = time.ParseDuration(v)
		case "tick":
			c.Tick, err = time.ParseDuration(v)
		case "exec":
			c.Mu.ExecTime, err = time.ParseDuration(v)
		case "cold":
			c.Mu.ColdStart, err = time.ParseDuration(v)
		case "halflife":
			c.Mu.ExecHalfLife, err = time.ParseDuration(v)
		case "stab":
			c.Mu.StabilizationWindow, err = time.ParseDuration(v)
		case "idle":
			c.Mu.IdlePeriod, err = time.ParseDuration(v)
		case "percentile":
			c.Mu.Percentile, err = strconv.ParseFloat(v, 64)
		case "attainment":
			c.Mu.Attainment, err = strconv.ParseFloat(v, 64)
		case "slowindow":
			c.Mu.SLOWindow, err = time.ParseDuration(v)
		case "margin":
			c.Mu.ErrorMargin, err = strconv.ParseFloat(v, 64)
		case "seed":
			c.Mu.Predictor.Seed, err = strconv.ParseUint(v, 10, 64)
		case "windows":
			for _, w := range strings.Split(v, ",") {
				n, e := strconv.Atoi(w)
				err = errors.Join(err, e)
				c.Mu.Predictor.Windows = append(c.Mu.Predictor.Windows, n)
			}
		case "up":
			c.Mu.MaxScaleUpRate, err = strconv.ParseFloat(v, 64)
			c.KPA.MaxScaleUpRate = c.Mu.MaxScaleUpRate
		case "down":
			c.Mu.MaxScaleDownRate, err = strconv.ParseFloat(v, 64)
			c.KPA.MaxScaleDownRate = c.Mu.MaxScaleDownRate
		case "util":
			c.KPA.TargetUtilization, err = strconv.ParseFloat(v, 64)
		case "stable":
			c.KPA.StableWindow, err = time.ParseDuration(v)
		case "panic":
			c.KPA.PanicWindow, err = time.ParseDuration(v)
		case "threshold":
			c.KPA.PanicThreshold, err = strconv.ParseFloat(v, 64)
		case "interval":
			c.KPA.DecisionInterval, err = time.ParseDuration(v)
		case "grace":
			c.KPA.ScaleToZeroGrace, err = time.ParseDuration(v)
		case "instances":
			c.Fixed.Instances, err = strconv.Atoi(v)
		default:
			err = fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", k, err)
		}
	}
	a, err := New(c)
	if err != nil {
		var ce *ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
			return nil, err
		}
		return ce.Problems, nil
	}
	s.a, s.now, s.last, s.lastReason = a, 0, Decision{}, ""
	return []string{"ok"}, nil
}

func (s *scenario) tick(kv map[string]string) ([]string, error) {
	if s.a == nil {
		return nil, errors.New("tick before config")
	}
	num := func(k string, def float64) (float64, error) {
		v, ok := kv[k]
		if !ok {
			return def, nil
		}
		if d, err := time.ParseDuration(v); err == nil {
			return d.Seconds(), nil
		}
		return strconv.ParseFloat(v, 64)
	}
	var errs []error
	get := func(k string, def float64) float64 {
		x, err := num(k, def)
		errs = append(errs, err)
		return x
	}
	n := int(get("n", 1))
	dt := get("dt", 1)
	rps := get("rps", 0)
	exec := get("exec", 0)
	queued := get("queued", 0)
	arrivals := get("arrivals", math.Round(rps*dt))
	done := get("done", arrivals)
	busy := get("busy", done*exec)
	inflight := get("inflight", math.Round(rps*exec))
	conc := get("conc", rps*exec+queued)
	starting := get("starting", 0)
	follow := kv["ready"] == "follow"
	ready := 0.0
	if !follow {
		ready = get("ready", 0)
	}
	mode := kv["print"]
	if mode == "" {
		mode = "all"
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []string
	for i := range n {
		s.now += time.Duration(dt * float64(time.Second))
		o := Observation{
			Arrivals:    uint64(arrivals),
			Completions: uint64(done),
			Busy:        time.Duration(busy * float64(time.Second)),
			Queued:      int(queued),
			InFlight:    int(inflight),
			Concurrency: conc,
			Ready:       int(ready),
			Starting:    int(starting),
		}
		if follow {
			o.Ready, o.Starting = s.last.Desired, 0
		}
		d := s.a.Tick(s.now, o)
		// "changes" ignores kpa's hold ticks between decisions.
		changed := d.Desired != s.last.Desired || d.Panic != s.last.Panic || d.Warning != "" ||
			d.Reason != s.lastReason && d.Reason != ReasonHold
		s.last = d
		if d.Reason != ReasonHold {
			s.lastReason = d.Reason
		}
		if mode == "all" || i == n-1 || (mode == "changes" && changed) {
			out = append(out, fmt.Sprintf("t=%v ready=%d %v", s.now, o.Ready, d))
		}
	}
	return out, nil
}

func (s *scenario) urgent(kv map[string]string) ([]string, error) {
	u, ok := s.a.(Urgent)
	if !ok {
		return nil, errors.New("urgent: the policy does not look between ticks")
	}
	var errs []error
	get := func(k string, def float64) float64 {
		v, ok := kv[k]
		if !ok {
			return def
		}
		if d, err := time.ParseDuration(v); err == nil {
			return d.Seconds()
		}
		x, err := strconv.ParseFloat(v, 64)
		errs = append(errs, err)
		return x
	}
	at := get("at", 0.5)
	o := Observation{
		Arrivals: uint64(get("arrivals", math.Round(get("rps", 0)*at))),
		Queued:   int(get("queued", 0)), InFlight: int(get("inflight", 0)), Starting: int(get("starting", 0)),
	}
	if kv["ready"] == "follow" {
		o.Ready = s.last.Desired
	} else {
		o.Ready = int(get("ready", 0))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if n, ok := u.Urgent(s.now+time.Duration(at*float64(time.Second)), o); ok {
		return []string{fmt.Sprintf("urgent=%d", n)}, nil
	}
	return []string{"no"}, nil
}
