package bench

import (
	"fmt"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plots draws the report's figures into dir and returns their file names:
// throughput and CPU per request per mode, the latency CDF per mode, and
// CPU over time.
func (r *Report) Plots(dir string) ([]string, error) {
	var out []string
	names := make([]string, len(r.Modes))
	rps := make(plotter.Values, len(r.Modes))
	cpu := make(plotter.Values, len(r.Modes))
	for i, m := range r.Modes {
		names[i] = m.Mode
		rps[i] = m.RPS
		cpu[i] = m.CPUPerReq * 1e6
	}
	bar := func(file, title, ylabel string, v plotter.Values) error {
		if err := barPlot(filepath.Join(dir, file), title, ylabel, names, v); err != nil {
			return err
		}
		out = append(out, file)
		return nil
	}
	if err := bar("throughput.png", r.Workload+": throughput", "requests/s", rps); err != nil {
		return nil, err
	}
	if err := bar("cpu.png", r.Workload+": CPU per request (all processes under test)", "CPU µs/request", cpu); err != nil {
		return nil, err
	}

	// Latency CDF, log x.
	p := plot.New()
	p.Title.Text = r.Workload + ": latency CDF"
	p.X.Label.Text = "latency (ms)"
	p.Y.Label.Text = "percentile"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{}
	p.Legend.Top = false
	p.Legend.Left = false
	drawn := false
	for i, m := range r.Modes {
		var xy plotter.XYs
		for _, q := range m.CDF {
			if q[1] > 0 && !math.IsNaN(q[1]) {
				xy = append(xy, plotter.XY{X: q[1], Y: q[0]})
			}
		}
		if len(xy) < 2 {
			continue
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(m.Mode, l)
		drawn = true
	}
	if drawn {
		if err := p.Save(6*vg.Inch, 4*vg.Inch, filepath.Join(dir, "latency_cdf.png")); err != nil {
			return nil, err
		}
		out = append(out, "latency_cdf.png")
	}

	// CPU over time (first round of each mode).
	p = plot.New()
	p.Title.Text = r.Workload + ": CPU of the processes under test over time"
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = "cores"
	drawn = false
	for i, m := range r.Modes {
		if len(m.CPUTimeline) < 2 {
			continue
		}
		xy := make(plotter.XYs, len(m.CPUTimeline))
		for k, v := range m.CPUTimeline {
			xy[k] = plotter.XY{X: float64(k+1) * m.TickS, Y: v}
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		p.Add(l)
		p.Legend.Add(m.Mode, l)
		drawn = true
	}
	if drawn {
		p.Add(plotter.NewGrid())
		if err := p.Save(7*vg.Inch, 3.5*vg.Inch, filepath.Join(dir, "cpu_timeline.png")); err != nil {
			return nil, err
		}
		out = append(out, "cpu_timeline.png")
	}
	return out, nil
}

// String summarises a mode result on one line.
func (m ModeResult) String() string {
	s := fmt.Sprintf("%-9s %8.0f req/s  p50 %7.3f ms  p99 %7.3f ms  CPU %7.1f µs/req  ctxsw %5.1f/req  errors %d",
		m.Mode, m.RPS, m.P50, m.P99, m.CPUPerReq*1e6, m.CtxSwPerReq, m.Errors)
	if m.HopUs != nil {
		s += fmt.Sprintf("  hop %.1f µs", *m.HopUs)
	}
	if m.Mode == ModeKnative {
		s += "  (" + KnativeNote + ")"
	}
	return s
}

// KnativeNote is said next to every number of the knative mode: it is not
// Knative.
const KnativeNote = "knative = a local emulation of Knative's data path, not a Knative deployment"

// barPlot draws one bar per name into path (PNG).
func barPlot(path, title, ylabel string, names []string, v plotter.Values) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	b, err := plotter.NewBarChart(v, vg.Points(30))
	if err != nil {
		return err
	}
	b.Color = plotutil.Color(0)
	p.Add(b)
	p.NominalX(names...)
	return p.Save(5*vg.Inch, 3.5*vg.Inch, path)
}
