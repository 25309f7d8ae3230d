package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ColdStartOptions configure `spry bench coldstart`: the cold start of the
// same function (bench/startprobe) as a builtin, a go: function, an exec:
// function and a wasm: function, each scaled from zero Runs times.
type ColdStartOptions struct {
	Runs  int    // cold starts per kind (default 10)
	GoDir string // the go: function's package (default ./bench/startprobe/fn, if it exists)
	Exe   string // the spry executable (default: this one)
	Dir   string // scratch directory (default: a temporary one, removed)
	Log   io.Writer
}

// ColdStartReport is what `spry bench coldstart` writes to report.json.
type ColdStartReport struct {
	Machine Machine           `json:"machine"`
	Runs    int               `json:"runs"`
	Kinds   []ColdStartResult `json:"kinds"`
}

// ColdStartResult is one kind of function's cold starts, in milliseconds.
type ColdStartResult struct {
	Kind   string `json:"kind"`   // builtin, go, exec, wasm
	Source string `json:"source"` // what the config names
	// FirstWork: from the gateway's receipt of the request to the start of
	// the new instance's handler (the node's clock, read by the handler).
	FirstWork Stats `json:"first_work_ms"`
	// Client: the cold request's latency at the client (send to answer).
	Client Stats `json:"client_ms"`
	// Start: the node's startMillis of the instance: process start to its
	// ready message.
	Start Stats `json:"start_ms"`
	// Warm: a request's latency at the client once the instance runs.
	Warm Stats `json:"warm_ms"`
}

// Stats summarise a set of measurements.
type Stats struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Values []float64 `json:"values"`
}

func statsOf(v []float64) Stats {
	s := Stats{Values: v}
	if len(v) == 0 {
		return s
	}
	c := slices.Clone(v)
	slices.Sort(c)
	s.Min, s.Max = c[0], c[len(c)-1]
	if n := len(c); n%2 == 1 {
		s.Median = c[n/2]
	} else {
		s.Median = (c[n/2-1] + c[n/2]) / 2
	}
	return s
}

// RunColdStart measures the cold starts.
func RunColdStart(ctx context.Context, o ColdStartOptions) (*ColdStartReport, error) {
	if o.Runs <= 0 {
		o.Runs = 10
	}
	logf := lineLogger(o.Log)
	cleanup, err := workspace(&o.Exe, &o.Dir, "spry-coldstart-")
	defer cleanup()
	if err != nil {
		return nil, err
	}
	if o.GoDir == "" {
		if st, err := os.Stat("bench/startprobe/fn"); err == nil && st.IsDir() {
			o.GoDir = "bench/startprobe/fn"
		}
	}
	type kind struct{ name, source, yaml string }
	kinds := []kind{{"builtin", "start-probe", "builtin: start-probe"}}
	if o.GoDir == "" {
		logf("bench coldstart: no go: package (--go DIR, or run from the repository): measuring the builtin only")
	} else {
		if o.GoDir, err = filepath.Abs(o.GoDir); err != nil {
			return nil, err
		}
		// The exec: function is the same package, prebuilt here.
		bin := filepath.Join(o.Dir, "probe-exec")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
		cmd.Dir = o.GoDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("bench coldstart: go build %s: %v\n%s", o.GoDir, err, out)
		}
		os.Chmod(bin, 0o755)
		// The wasm: function is the same package again, built for WASI and
		// run in the app's sandbox host.
		kinds = append(kinds, kind{"go", o.GoDir, "go: " + o.GoDir}, kind{"exec", bin, "exec: [" + bin + "]"},
			kind{"wasm", o.GoDir, "wasm: " + o.GoDir})
	}
	rep := &ColdStartReport{Machine: machine(), Runs: o.Runs}
	for _, k := range kinds {
		logf("bench coldstart: %s (%s), %d cold starts", k.name, k.source, o.Runs)
		r, err := coldStarts(ctx, o, k.name, k.yaml)
		if err != nil {
			return nil, fmt.Errorf("bench coldstart: %s: %w", k.name, err)
		}
		r.Source = k.source
		logf("bench coldstart:   %s", r.String())
		rep.Kinds = append(rep.Kinds, *r)
	}
	return rep, nil
}

func (r ColdStartResult) String() string {
	return fmt.Sprintf("%-8s first work %6.2f ms  client %6.2f ms  instance start %6.2f ms  warm %5.2f ms  (medians; max first work %.2f ms)",
		r.Kind, r.FirstWork.Median, r.Client.Median, r.Start.Median, r.Warm.Median, r.FirstWork.Max)
}

// coldStarts runs a node with the probe function at zero instances and
// wakes it o.Runs times, each time waiting until it went back to zero.
func coldStarts(ctx context.Context, o ColdStartOptions, name, fnYAML string) (_ *ColdStartResult, err error) {
	yaml := "app: coldstart\nfunctions:\n  probe:\n    " + fnYAML + "\n" +
		"    instances: 0\n    scale: {min: 0, max: 1, policy: mu, window: 1s, idle: 1s}\n" +
		"chains:\n  probe:\n    route: /probe\n    steps: [probe]\n    methods: [POST]\n    timeout: 30s\n"
	node, err := startNode(o.Exe, filepath.Join(o.Dir, name), "spry node ("+name+")", yaml,
		"--cache-dir", filepath.Join(o.Dir, "cache"))
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := node.shutdown(); serr != nil && err == nil {
			err = serr
		}
	}()
	// Up, and at zero instances (a go: function is built first).
	if err := node.waitInstances(ctx, 0, 5*time.Minute); err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 30 * time.Second}
	url := "http://" + node.addr + "/probe"
	// Open the client's connection on a route no function serves.
	if resp, err := client.Get("http://" + node.addr + "/"); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	post := func() (time.Duration, float64, error) {
		t := time.Now()
		resp, err := client.Post(url, "text/plain", strings.NewReader("x"))
		if err != nil {
			return 0, 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(t)
		if err != nil {
			return 0, 0, err
		}
		if resp.StatusCode != 200 {
			return 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		var a struct {
			StartUS float64 `json:"start_us"`
		}
		if err := json.Unmarshal(b, &a); err != nil {
			return 0, 0, fmt.Errorf("answer %q: %w", b, err)
		}
		return took, a.StartUS / 1000, nil
	}
	var first, cl, start, warm []float64
	for range o.Runs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		took, fw, err := post()
		if err != nil {
			return nil, fmt.Errorf("cold request: %w", err)
		}
		first = append(first, fw)
		cl = append(cl, ms(took))
		// A wasm instance serves its first request before its host has
		// confirmed the start (the node makes its slot ready at once), so
		// its startMillis comes with the confirmation, a moment later.
		st, err := fetchStatus(node.admin)
		for wait := time.Now().Add(5 * time.Second); err == nil && readyStartMillis(st) == 0 && time.Now().Before(wait); {
			time.Sleep(5 * time.Millisecond)
			st, err = fetchStatus(node.admin)
		}
		if err != nil {
			return nil, err
		}
		start = append(start, readyStartMillis(st))
		for _, a := range st.Apps {
			for _, f := range a.Functions {
				for _, in := range f.Instances {
					node.saw(in.PID)
				}
			}
		}
		// Warm: the best of three (the instance is up now).
		best := time.Duration(1 << 62)
		for range 3 {
			took, _, err := post()
			if err != nil {
				return nil, fmt.Errorf("warm request: %w", err)
			}
			best = min(best, took)
		}
		warm = append(warm, ms(best))
		// Back to zero (the idle period is 1 s).
		if err := node.waitInstances(ctx, 0, 30*time.Second); err != nil {
			return nil, err
		}
	}
	return &ColdStartResult{Kind: name, FirstWork: statsOf(first), Client: statsOf(cl), Start: statsOf(start), Warm: statsOf(warm)}, nil
}

// readyStartMillis returns the startMillis of the node's ready instance
// (the probe's), or 0.
func readyStartMillis(st *status) float64 {
	for _, a := range st.Apps {
		for _, f := range a.Functions {
			for _, in := range f.Instances {
				if in.State == "ready" {
					return in.StartMillis
				}
			}
		}
	}
	return 0
}

// waitInstances waits until the node answers and runs n instances with a
// process (any state).
func (n *spryNode) waitInstances(ctx context.Context, want int, timeout time.Duration) error {
	return n.waitUp(ctx, timeout, func() error {
		st, err := fetchStatus(n.admin)
		if err != nil {
			return err
		}
		live := 0
		for _, a := range st.Apps {
			for _, f := range a.Functions {
				for _, in := range f.Instances {
					if in.PID > 0 {
						live++
						n.saw(in.PID)
					}
				}
			}
		}
		if live != want {
			return fmt.Errorf("%d instances, want %d", live, want)
		}
		return nil
	})
}

// Write writes report.json and report.md into dir.
func (r *ColdStartReport) Write(dir string) error {
	if err := writeJSON(dir, r); err != nil {
		return err
	}
	return writeMarkdown(dir, r.Markdown)
}

// Markdown writes the report as Markdown.
func (r *ColdStartReport) Markdown(f io.Writer) {
	m := r.Machine
	fmt.Fprintf(f, "# spry bench coldstart\n\nMachine: %s, %d cores, %.1f GiB, Linux %s, %s. %d cold starts per kind, each from zero instances (min: 0).\n\n",
		m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go, r.Runs)
	fmt.Fprintln(f, "| kind | request → first work, ms (median / min / max) | client latency, cold ms | instance startMillis | client latency, warm ms |")
	fmt.Fprintln(f, "|---|---:|---:|---:|---:|")
	for _, k := range r.Kinds {
		fmt.Fprintf(f, "| %s | %.2f / %.2f / %.2f | %.2f / %.2f / %.2f | %.2f / %.2f / %.2f | %.2f / %.2f / %.2f |\n", k.Kind,
			k.FirstWork.Median, k.FirstWork.Min, k.FirstWork.Max, k.Client.Median, k.Client.Min, k.Client.Max,
			k.Start.Median, k.Start.Min, k.Start.Max, k.Warm.Median, k.Warm.Min, k.Warm.Max)
	}
	fmt.Fprint(f, `
- **request → first work**: from the gateway's receipt of the request to the start of the
  new instance's handler, read by the handler from the request's buffer header (the node's
  clock): the wait a request pays for a cold start.
- **client latency, cold**: the same request at the client, send to answer (adds the HTTP
  round trip and the handler).
- **instance startMillis**: the node's measure of the instance, process start to its ready
  message (`+"`spry status -o json`"+`).
- **warm**: the best of three requests right after, to the running instance.
`)
}
