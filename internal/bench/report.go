package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Report is what `spry bench` writes to report.json.
type Report struct {
	Workload string       `json:"workload"`
	Doc      string       `json:"doc"`
	Machine  Machine      `json:"machine"`
	Config   RunConfig    `json:"config"`
	Modes    []ModeResult `json:"modes"`
	Audits   []Audit      `json:"audits"`
}

// Machine is where the numbers came from.
type Machine struct {
	CPU       string  `json:"cpu"`
	Cores     int     `json:"cores"`
	MemoryGiB float64 `json:"memory_gib"`
	Kernel    string  `json:"kernel"`
	Go        string  `json:"go"`
	OS        string  `json:"os"`
	Host      string  `json:"host"`
}

// RunConfig is how the benchmark ran.
type RunConfig struct {
	Duration    string   `json:"duration"`
	Warmup      string   `json:"warmup"`
	Rounds      int      `json:"rounds"`
	Connections int      `json:"connections"`
	Proto       string   `json:"proto,omitempty"` // what the load generator spoke to Spry (default http1)
	Loop        string   `json:"loop"`
	Idle        string   `json:"idle"`
	WorkRate    float64  `json:"work_rate"`
	StepCPU     string   `json:"step_cpu"`
	Scale       float64  `json:"scale"`
	Steps       int      `json:"steps,omitempty"`
	Payload     int      `json:"payload,omitempty"`
	Nodes       int      `json:"nodes,omitempty"` // the cluster mode's nodes
	Chains      []string `json:"chains"`
	Broker      string   `json:"broker"`
}

// ModeResult is one mode's measurements.
type ModeResult struct {
	Mode             string             `json:"mode"`
	Requests         uint64             `json:"requests"`
	Errors           uint64             `json:"errors"`
	Overtime         uint64             `json:"overtime,omitempty"` // answered correctly, but not wholly inside the measurement (load.Result.Overtime)
	Late             uint64             `json:"late,omitempty"`
	RPS              float64            `json:"rps"`
	P50              float64            `json:"p50_ms"`
	P99              float64            `json:"p99_ms"`
	P999             float64            `json:"p999_ms"`
	Mean             float64            `json:"mean_ms"`
	CPUPerReq        float64            `json:"cpu_s_per_req"`
	CtxSwPerReq      float64            `json:"ctxsw_per_req"`
	SyscallsPerReq   float64            `json:"syscalls_per_req"`
	SyscallsMeasured bool               `json:"syscalls_measured"`
	IdleCPUCores     float64            `json:"idle_cpu_cores"`
	CPUCores         float64            `json:"cpu_cores"`
	LoadgenCPUPerReq float64            `json:"loadgen_cpu_s_per_req"` // the bench process (not under test)
	Processes        int                `json:"processes"`
	ByRole           map[string]Cost    `json:"by_role"`
	ByChain          map[string]Latency `json:"by_chain"`
	CDF              [][2]float64       `json:"latency_cdf"` // [percentile, ms]
	CPUTimeline      []float64          `json:"cpu_timeline,omitempty"`
	RPSTimeline      []float64          `json:"rps_timeline,omitempty"`
	TickS            float64            `json:"tick_s"`
	FirstError       string             `json:"first_error,omitempty"`
	// HopUs is the mean time of a hop from one step to the next inside
	// the chain (Spry: from the buffers' hop stamps; not measured in the
	// baselines).
	HopUs *float64 `json:"hop_us,omitempty"`
}

// MarshalJSON writes a latency that was not measured (no request answered:
// load.Millis is NaN) as null; JSON has no NaN, and one mode that answered
// nothing must not cost the whole report.
func (r ModeResult) MarshalJSON() ([]byte, error) {
	type plain ModeResult // without this method
	return json.Marshal(struct {
		plain
		P50  *float64 `json:"p50_ms"`
		P99  *float64 `json:"p99_ms"`
		P999 *float64 `json:"p999_ms"`
		Mean *float64 `json:"mean_ms"`
	}{plain(r), measured(r.P50), measured(r.P99), measured(r.P999), measured(r.Mean)})
}

// Cost is a role's share per request.
type Cost struct {
	CPUPerReq      float64 `json:"cpu_s_per_req"`
	CtxSwPerReq    float64 `json:"ctxsw_per_req"`
	SyscallsPerReq float64 `json:"syscalls_per_req"`
}

// Latency is one chain's latency.
type Latency struct {
	Requests int64   `json:"requests"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
}

// MarshalJSON writes an unmeasured latency as null (see ModeResult's).
func (l Latency) MarshalJSON() ([]byte, error) {
	type plain Latency
	return json.Marshal(struct {
		plain
		P50 *float64 `json:"p50_ms"`
		P99 *float64 `json:"p99_ms"`
	}{plain(l), measured(l.P50), measured(l.P99)})
}

// measured is v, or nil when v is NaN (not measured) or infinite.
func measured(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Write writes report.json, report.md and the plots into dir.
func (r *Report) Write(dir string) error {
	if err := writeJSON(dir, r); err != nil {
		return err
	}
	plots, err := r.Plots(dir)
	if err != nil {
		return err
	}
	return writeMarkdown(dir, func(w io.Writer) { r.Markdown(w, plots) })
}

// writeJSON makes dir and writes v into dir/report.json, indented.
func writeJSON(dir string, v any) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.json"), append(js, '\n'), 0o644)
}

// writeMarkdown writes dir/report.md with md.
func writeMarkdown(dir string, md func(io.Writer)) error {
	f, err := os.Create(filepath.Join(dir, "report.md"))
	if err != nil {
		return err
	}
	md(f)
	return f.Close()
}

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// Markdown writes the report as Markdown: the results, each mode against
// the first, the cost by role, and the overhead audit.
func (r *Report) Markdown(w io.Writer, plots []string) {
	m := r.Machine
	c := r.Config
	fmt.Fprintf(w, "# spry bench %s\n\n%s.\n\n", r.Workload, r.Doc)
	fmt.Fprintf(w, "Machine: %s, %d cores, %.1f GiB, Linux %s, %s. ", m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go)
	fmt.Fprintf(w, "Load: %s loop, %d connections, %s measured per mode (%d interleaved rounds, %s warm-up each), chains %s",
		c.Loop, c.Connections, c.Duration, c.Rounds, c.Warmup, strings.Join(c.Chains, ", "))
	if c.Steps > 0 {
		fmt.Fprintf(w, ", %d steps, %d-byte payload", c.Steps, c.Payload)
	}
	fmt.Fprintf(w, ". Extra CPU per step %s, cost scale %g. Knative broker: %s.\n\n", c.StepCPU, c.Scale, c.Broker)
	for _, m := range r.Modes {
		if m.Mode == ModeKnative {
			fmt.Fprintf(w, "The `knative` mode is a local emulation of Knative's data path on this machine: each function an HTTP server behind its own queue-proxy-like sidecar, every hop through a broker (%s). It is not a Knative deployment (no activator, ingress gateway or cluster networking), and its numbers stand for that data path only.\n\n", c.Broker)
			break
		}
	}

	if len(r.Modes) == 0 {
		return
	}
	ref := r.Modes[0]
	fmt.Fprintln(w, "| mode | requests | errors | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | ctx sw/req | r/w syscalls/req | CPU cores busy | idle cores | processes | load generator CPU µs/req |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, x := range r.Modes {
		sys := num(x.SyscallsPerReq, 1)
		if !x.SyscallsMeasured {
			sys = "n/a"
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |\n", x.Mode, x.Requests, x.Errors,
			num(x.RPS, 0), num(x.P50, 3), num(x.P99, 3), num(x.P999, 3), num(x.CPUPerReq*1e6, 1), num(x.CtxSwPerReq, 1), sys,
			num(x.CPUCores, 2), num(x.IdleCPUCores, 3), x.Processes, num(x.LoadgenCPUPerReq*1e6, 1))
	}
	for _, x := range r.Modes {
		if x.HopUs != nil {
			fmt.Fprintf(w, "\n`%s`: a hop from one step to the next inside the chain took %s µs on average (from the buffers' hop stamps: a step's end to the next step's start).\n", x.Mode, num(*x.HopUs, 1))
		}
	}
	fmt.Fprintf(w, "\nEach mode against `%s` (same run):\n\n", ref.Mode)
	fmt.Fprintln(w, "| mode | req/s | p50 | p99 | CPU/req | ctx sw/req | syscalls/req | idle cores |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, x := range r.Modes {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", x.Mode, ratio(x.RPS, ref.RPS), ratio(x.P50, ref.P50), ratio(x.P99, ref.P99),
			ratio(x.CPUPerReq, ref.CPUPerReq), ratio(x.CtxSwPerReq, ref.CtxSwPerReq), ratio(x.SyscallsPerReq, ref.SyscallsPerReq), ratio(x.IdleCPUCores, ref.IdleCPUCores))
	}
	fmt.Fprintln(w, "\nCPU per request by role (µs):")
	fmt.Fprintln(w)
	roles := []string{RoleGateway, RoleBroker, RoleSidecar, RoleFunction}
	fmt.Fprintf(w, "| mode | %s |\n|---|%s\n", strings.Join(roles, " | "), strings.Repeat("---:|", len(roles)))
	for _, x := range r.Modes {
		cells := []string{x.Mode}
		for _, role := range roles {
			if c, ok := x.ByRole[role]; ok {
				cells = append(cells, num(c.CPUPerReq*1e6, 1))
			} else {
				cells = append(cells, "–")
			}
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	if len(ref.ByChain) > 1 {
		fmt.Fprintln(w, "\nLatency by chain (p50 / p99 ms):")
		fmt.Fprintln(w)
		var chains []string
		for ch := range ref.ByChain {
			chains = append(chains, ch)
		}
		sort.Strings(chains)
		fmt.Fprintf(w, "| mode | %s |\n|---|%s\n", strings.Join(chains, " | "), strings.Repeat("---:|", len(chains)))
		for _, x := range r.Modes {
			cells := []string{x.Mode}
			for _, ch := range chains {
				l := x.ByChain[ch]
				cells = append(cells, num(l.P50, 2)+" / "+num(l.P99, 2))
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
	}
	for _, x := range r.Modes {
		if x.FirstError != "" {
			fmt.Fprintf(w, "\n%s: first error: `%s`\n", x.Mode, x.FirstError)
		}
	}
	fmt.Fprintln(w, "\n## Overhead audit")
	fmt.Fprintln(w, "\nPer transfer of a request (→) and of its answer (⇢), as in SPRIGHT's audit. The design rows follow from how the mode moves a request (see docs/benchmarks.md); context switches and read/write syscalls are measured at the receiving component's processes, per request, split over the transfers that reach it (the total is every process under test).")
	fmt.Fprintln(w)
	for _, a := range r.Audits {
		a.Markdown(w)
	}
	if len(plots) > 0 {
		fmt.Fprintln(w, "## Plots")
		fmt.Fprintln(w)
		for _, p := range plots {
			fmt.Fprintf(w, "![%s](%s)\n\n", strings.TrimSuffix(p, ".png"), p)
		}
	}
}
