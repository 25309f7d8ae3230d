package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Write writes report.json, report.md and the plots into dir.
func (r *FLReport) Write(dir string) error {
	if err := writeJSON(dir, r); err != nil {
		return err
	}
	plots, err := r.Plots(dir)
	if err != nil {
		return err
	}
	return writeMarkdown(dir, func(w io.Writer) { r.Markdown(w, plots) })
}

// Plots draws, per mode, the round and aggregation times and the CPU per
// round.
func (r *FLReport) Plots(dir string) ([]string, error) {
	names := make([]string, len(r.Modes))
	round, agg, cpu := make(plotter.Values, len(r.Modes)), make(plotter.Values, len(r.Modes)), make(plotter.Values, len(r.Modes))
	for i, m := range r.Modes {
		names[i] = m.Mode
		round[i], agg[i], cpu[i] = m.RoundP50, m.AggregateP50, m.CPUPerRound
	}
	title := fmt.Sprintf("FL: %d clients × %.1f MB updates", r.Clients, float64(r.Params)*4/1e6)
	var out []string
	for _, p := range []struct {
		file, what, unit string
		v                plotter.Values
	}{
		{"fl-round.png", "round time (median)", "seconds", round},
		{"fl-aggregate.png", "last update → model (median)", "seconds", agg},
		{"fl-cpu.png", "CPU per round (all processes)", "CPU-seconds", cpu},
	} {
		if err := barPlot(filepath.Join(dir, p.file), title+": "+p.what, p.unit, names, p.v); err != nil {
			return nil, err
		}
		out = append(out, p.file)
	}
	return out, nil
}

// Markdown writes the report as Markdown.
func (r *FLReport) Markdown(w io.Writer, plots []string) {
	m := r.Machine
	fmt.Fprintf(w, "# spry bench fl\n\n%d clients, %d parameters (%.1f MB an update", r.Clients, r.Params, float64(r.Params)*4/1e6)
	if r.Preset != "" {
		fmt.Fprintf(w, ", %s", r.Preset)
	}
	fetch := "each client fetches the global model at the start of its round"
	if !r.Fetch {
		fetch = "clients do not fetch the model"
	}
	fmt.Fprintf(w, "), %d rounds, arrivals %s, at most %d updates in flight; %s.\n\nMachine: %s, %d cores, %.1f GiB, Linux %s, %s.\n\n",
		r.Rounds, r.Pattern, r.Concurrency, fetch, m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go)
	fmt.Fprintln(w, "| mode | round s (median) | aggregate s (median) | CPU s / round | peak memory MiB | idle CPU s/s | idle wake-ups/s | errors | refused | retries |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, x := range r.Modes {
		fmt.Fprintf(w, "| %s | %.3f | %.3f | %.3f | %.0f | %.4f | %.1f | %d | %d | %d |\n", x.Mode, x.RoundP50, x.AggregateP50,
			x.CPUPerRound, float64(x.PeakRSS)/(1<<20), x.IdleCPU, x.IdleWakeups, x.Errors, x.Refused, x.Retries)
	}
	if len(r.Modes) > 1 {
		ref := r.Modes[0]
		fmt.Fprintf(w, "\nAgainst %s (how many times %s's):\n\n| mode | round | aggregate | CPU / round | memory |\n|---|---:|---:|---:|---:|\n", ref.Mode, ref.Mode)
		for _, x := range r.Modes[1:] {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", x.Mode, ratio(x.RoundP50, ref.RoundP50), ratio(x.AggregateP50, ref.AggregateP50),
				ratio(x.CPUPerRound, ref.CPUPerRound), ratio(float64(x.PeakRSS), float64(ref.PeakRSS)))
		}
	}
	fmt.Fprintln(w)
	for _, x := range r.Modes {
		if x.FirstError != "" {
			fmt.Fprintf(w, "- %s: first error: %s\n", x.Mode, x.FirstError)
		}
		if len(x.Leaves) > 0 {
			fmt.Fprintf(w, "- %s: leaf aggregators per round (the control plane's plan from the updates' rate and size): %v; partial sums combined: %v\n", x.Mode, x.Leaves, x.Partials)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintln(w)
	for _, p := range plots {
		fmt.Fprintf(w, "![%s](%s)\n", p, p)
	}
}

// FLSweep is a sweep over client counts: one report per count.
type FLSweep struct {
	Reports []*FLReport `json:"reports"`
}

// Write writes sweep.json, each count's report in clients-N/, and the
// plots of round time and CPU per round against the clients.
func (s *FLSweep) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, r := range s.Reports {
		if err := r.Write(filepath.Join(dir, fmt.Sprintf("clients-%d", r.Clients))); err != nil {
			return err
		}
	}
	if err := writeJSON(dir, s); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, "report.json"), filepath.Join(dir, "sweep.json")); err != nil {
		return err
	}
	for _, p := range []struct {
		file, title, unit string
		v                 func(FLModeResult) float64
	}{
		{"fl-round-vs-clients.png", "round time (median) vs clients", "seconds", func(m FLModeResult) float64 { return m.RoundP50 }},
		{"fl-cpu-vs-clients.png", "CPU per round vs clients", "CPU-seconds", func(m FLModeResult) float64 { return m.CPUPerRound }},
	} {
		if err := s.linePlot(filepath.Join(dir, p.file), p.title, p.unit, p.v); err != nil {
			return err
		}
	}
	return nil
}

func (s *FLSweep) linePlot(path, title, unit string, v func(FLModeResult) float64) error {
	if len(s.Reports) == 0 {
		return nil
	}
	p := plot.New()
	r0 := s.Reports[0]
	p.Title.Text = fmt.Sprintf("FL, %.1f MB updates: %s", float64(r0.Params)*4/1e6, title)
	p.X.Label.Text = "clients"
	p.Y.Label.Text = unit
	var args []any
	for i, m := range r0.Modes {
		var pts plotter.XYs
		for _, r := range s.Reports {
			if i < len(r.Modes) && r.Modes[i].Mode == m.Mode {
				pts = append(pts, plotter.XY{X: float64(r.Clients), Y: v(r.Modes[i])})
			}
		}
		args = append(args, m.Mode, pts)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	p.Legend.Top = true
	p.Legend.Left = true
	return p.Save(5*vg.Inch, 3.5*vg.Inch, path)
}
