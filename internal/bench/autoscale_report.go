package bench

import (
	"encoding/csv"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/spry-dev/spry/internal/bench/load"
)

// AutoscaleReport is what `spry bench autoscale` writes to report.json.
type AutoscaleReport struct {
	Trace    string            `json:"trace"`
	Speedup  float64           `json:"speedup"`
	Policies []PolicyResult    `json:"policies"`
	Settings AutoscaleSettings `json:"settings"`
	Machine  Machine           `json:"machine"`
}

// AutoscaleSettings say how the replay ran.
type AutoscaleSettings struct {
	TraceSamples  int     `json:"trace_samples"`
	TraceInterval float64 `json:"trace_interval_s"`
	TracePeak     float64 `json:"trace_peak_rps"` // in the trace's own units
	TraceMean     float64 `json:"trace_mean_rps"`
	RateScale     float64 `json:"rate_scale"`
	PeakRPS       float64 `json:"peak_rps"` // sent: trace × rate_scale (per second of wall time)
	MeanRPS       float64 `json:"mean_rps"`
	StepCPUMillis float64 `json:"step_cpu_ms"`
	WorkRate      float64 `json:"work_rate"`
	PeakCores     float64 `json:"peak_cores"` // peak_rps × step_cpu: the step's CPU at the peak
	Cores         int     `json:"cores"`
	SLOMillis     float64 `json:"slo_ms"`
	Min           int     `json:"min"`
	Max           int     `json:"max"`
	Concurrency   int     `json:"concurrency"`
	Connections   int     `json:"connections"`
	Arrivals      string  `json:"arrivals"`
	Seed          uint64  `json:"seed"`
	WarmupSeconds float64 `json:"warmup_s"` // wall time at the trace's first rate before it starts, not measured
	// WallSecondsPerTraceSecond is 1/speedup: how long one trace second
	// lasts; TraceSecondsPerControlPeriod how many trace seconds the node's
	// 1 s control period sees at once.
	WallSecondsPerTraceSecond    float64 `json:"wall_s_per_trace_s"`
	TraceSecondsPerControlPeriod float64 `json:"trace_s_per_control_period"`
	WallSeconds                  float64 `json:"wall_s_per_policy"`
	StatusPollMillis             float64 `json:"status_poll_ms"`
	// MuSLOWindowMillis is mu's scale.sloWindow: one trace second of wall
	// time, the interval violation seconds are counted over.
	MuSLOWindowMillis float64 `json:"mu_slo_window_ms"`
	// MuAttainment is mu's scale.attainment (0: its default, 0.99).
	MuAttainment float64 `json:"mu_attainment,omitempty"`
	// Nodes: 1, or the node agents of a local cluster (--nodes): the
	// controller sizes on their heartbeats and places; the load is split
	// evenly over their gateways.
	Nodes int `json:"nodes"`
}

// PolicyResult is one policy's replay. Seconds are trace seconds unless a
// field says wall.
type PolicyResult struct {
	Policy string `json:"policy"`
	// SLOViolationSeconds: trace seconds in which the p99 latency of the
	// requests completed in that second exceeded the SLO (plus the fixed
	// overhead, threshold_ms).
	SLOViolationSeconds int `json:"slo_violation_seconds"`
	// RequestsOverSLOFraction: measured requests slower than threshold_ms,
	// or failed.
	RequestsOverSLOFraction float64 `json:"requests_over_slo_fraction"`
	// InstanceSeconds: ∫ (ready + starting) dt over the trace, in trace
	// seconds (wall instance-seconds × speedup), from the node's log of
	// scale decisions.
	InstanceSeconds float64 `json:"instance_seconds"`
	ScaleEvents     int     `json:"scale_events"`
	P50             float64 `json:"p50_ms"`
	P99             float64 `json:"p99_ms"`

	ThresholdMillis       float64 `json:"threshold_ms"` // SLO + overhead
	OverheadMillis        float64 `json:"overhead_ms"`  // client latency − step time at light load
	Requests              int     `json:"requests"`     // measured (after the warm-up), answered
	Errors                uint64  `json:"errors"`       // measured, failed or never sent
	Unanswered            int     `json:"unanswered"`   // scheduled (warm-up included) but no answer nor failure
	Seconds               int     `json:"seconds"`      // trace seconds accounted (the trace's, and any after it with completions)
	ScaleUps              int     `json:"scale_ups"`
	ScaleDowns            int     `json:"scale_downs"`
	ColdStarts            int     `json:"cold_starts"`
	InstanceSecondsWall   float64 `json:"instance_seconds_wall"`
	InstanceSecondsPolled float64 `json:"instance_seconds_polled"` // the same from /v1/status polls (ready + starting), trace seconds
	MeanInstances         float64 `json:"mean_instances"`
	MaxInstances          int     `json:"max_instances"`
	ExecMillis            float64 `json:"exec_ms"` // the step's mean execution time during the replay (node's busy time / requests)
	// NodeOverSLOFraction: the node's own view, from its per-period step
	// histogram in /v1/status (1 − sloAttainment, weighted by rps): step
	// latency only, no gateway or client.
	NodeOverSLOFraction float64 `json:"node_over_slo_fraction"`
	Window              string  `json:"window,omitempty"` // scale.window and scale.idle as configured (wall time)
	Idle                string  `json:"idle,omitempty"`
	FixedInstances      int     `json:"fixed_instances,omitempty"`
	// CPU is where the machine's CPU went during the replay (mean cores).
	CPU        CPUUse `json:"cpu_cores"`
	FirstError string `json:"first_error,omitempty"`
	// Nodes: on a cluster (--nodes), each node's instance-seconds, most
	// instances and requests sent to its gateway.
	Nodes []NodeShare `json:"nodes,omitempty"`

	nodeCounts []clusterPoll // per status poll: ready + starting on each node
	seconds    []secondStat
	steps      []countStep // instances wanted (from the log)
	initial    int
	polls      []statusPoll
	events     []scaleEvent
	offered    []float64 // req/s per trace second
	origin     time.Duration
	sec        time.Duration
	nodeLog    []byte
}

func (p PolicyResult) String() string {
	return fmt.Sprintf("%-5s violations %4d s  over SLO %6.3f%%  instance-s %8.0f  scale events %4d  p50 %6.2f ms  p99 %7.2f ms  errors %d",
		p.Policy, p.SLOViolationSeconds, 100*p.RequestsOverSLOFraction, p.InstanceSeconds, p.ScaleEvents, p.P50, p.P99, p.Errors)
}

// CPUUse is where the machine's cores went during a replay, on average:
// the node and its instances, the load generator (the bench process),
// everything else on the machine (other jobs: noise), and the time the
// hypervisor stole from the machine.
type CPUUse struct {
	Node    float64 `json:"node"`
	LoadGen float64 `json:"loadgen"`
	Other   float64 `json:"other"`
	Steal   float64 `json:"steal"`
}

// policyInputs is what a replay measured, for account.
type policyInputs struct {
	policy    string
	samples   []load.Sample
	events    []scaleEvent
	polls     []statusPoll
	initial   int // instances wanted when the node came up
	origin    time.Duration
	sec       time.Duration
	n         int
	speedup   float64
	slo       time.Duration
	overhead  time.Duration
	scheduled int
}

// account turns a replay's measurements into its result.
func account(in policyInputs) *PolicyResult {
	threshold := in.slo + in.overhead
	end := in.origin + time.Duration(in.n)*in.sec
	pr := &PolicyResult{Policy: in.policy, ThresholdMillis: ms(threshold), OverheadMillis: ms(in.overhead),
		origin: in.origin, sec: in.sec, initial: in.initial, events: in.events, polls: in.polls}
	pr.seconds = perSecond(in.samples, in.origin, in.sec, in.n, threshold)
	pr.Seconds = len(pr.seconds)
	total, over := 0, 0
	for _, s := range pr.seconds {
		if s.Violated {
			pr.SLOViolationSeconds++
		}
		total += s.Requests
		over += s.Over
		pr.Errors += uint64(s.Failed)
	}
	if total > 0 {
		pr.RequestsOverSLOFraction = float64(over) / float64(total)
	}
	p50, p99, n := latencyQuantiles(in.samples, in.origin)
	pr.P50, pr.P99, pr.Requests = ms(p50), ms(p99), n
	pr.Unanswered = max(in.scheduled-len(in.samples), 0)

	pr.steps = eventSteps(in.events)
	pr.InstanceSecondsWall = integrate(pr.steps, in.initial, in.origin, end)
	pr.InstanceSeconds = pr.InstanceSecondsWall * in.speedup
	if end > in.origin {
		pr.MeanInstances = pr.InstanceSecondsWall / (end - in.origin).Seconds()
	}
	pr.MaxInstances = countAt(pr.steps, in.initial, in.origin)
	for _, s := range pr.steps {
		if s.At >= in.origin && s.At < end {
			pr.MaxInstances = max(pr.MaxInstances, s.N)
		}
	}
	pr.ScaleEvents, pr.ScaleUps, pr.ScaleDowns = countEvents(in.events, in.origin, end)
	for _, e := range in.events {
		if e.Reason == "cold-start" && e.At >= in.origin && e.At < end {
			pr.ColdStarts++
		}
	}
	if len(in.polls) > 0 {
		ps := make([]countStep, len(in.polls))
		for i, p := range in.polls {
			ps[i] = countStep{p.At, p.Ready + p.Starting}
		}
		pr.InstanceSecondsPolled = integrate(ps, ps[0].N, in.origin, end) * in.speedup
	}
	// The node's view: each poll shows the last control period's rate and
	// attainment; weight them by the time to the next poll.
	var req, miss float64
	for i := 0; i+1 < len(in.polls); i++ {
		p := in.polls[i]
		if p.At < in.origin || p.At >= end+nodeControlPeriod {
			continue
		}
		dt := (in.polls[i+1].At - p.At).Seconds()
		req += p.RPS * dt
		miss += p.RPS * dt * (1 - p.Attainment)
	}
	if req > 0 {
		pr.NodeOverSLOFraction = miss / req
	}
	return pr
}

// Write writes report.json, report.md, the plot, and per policy the
// timeline (timeline-POLICY.csv) and the node's log (node-POLICY.log).
func (r *AutoscaleReport) Write(dir string) error {
	if err := writeJSON(dir, r); err != nil {
		return err
	}
	for i := range r.Policies {
		p := &r.Policies[i]
		if err := p.writeTimeline(filepath.Join(dir, "timeline-"+p.Policy+".csv")); err != nil {
			return err
		}
		if len(p.Nodes) > 0 {
			if err := p.writeNodes(filepath.Join(dir, "nodes-"+p.Policy+".csv")); err != nil {
				return err
			}
		}
		if p.nodeLog != nil {
			if err := os.WriteFile(filepath.Join(dir, "node-"+p.Policy+".log"), p.nodeLog, 0o644); err != nil {
				return err
			}
		}
	}
	if err := r.Plot(filepath.Join(dir, "autoscale.png")); err != nil {
		return err
	}
	return writeMarkdown(dir, r.Markdown)
}

// writeTimeline writes one row per trace second.
func (p *PolicyResult) writeTimeline(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"trace_s", "offered_rps", "answered_rps", "p99_ms", "over_slo", "failed", "violation", "instances", "ready_polled", "node_rps", "predicted_rps", "reason", "node_p99_ms", "queue", "node_cores", "other_cores", "steal_cores"})
	pi := 0
	for k, s := range p.seconds {
		mid := p.origin + time.Duration(k)*p.sec + p.sec/2
		for pi+1 < len(p.polls) && p.polls[pi+1].At <= mid {
			pi++
		}
		var poll statusPoll
		if len(p.polls) > 0 {
			poll = p.polls[pi]
		}
		off := ""
		if k < len(p.offered) {
			off = strconv.FormatFloat(p.offered[k], 'f', 1, 64)
		}
		viol := "0"
		if s.Violated {
			viol = "1"
		}
		w.Write([]string{strconv.Itoa(k), off, strconv.FormatFloat(float64(s.Requests)/p.sec.Seconds(), 'f', 1, 64),
			p99Cell(s), strconv.Itoa(s.Over), strconv.Itoa(s.Failed), viol,
			strconv.Itoa(countAt(p.steps, p.initial, mid)), strconv.Itoa(poll.Ready + poll.Starting),
			strconv.FormatFloat(poll.RPS, 'f', 1, 64), strconv.FormatFloat(poll.Predicted, 'f', 1, 64), poll.Reason,
			strconv.FormatFloat(poll.P99Millis, 'f', 2, 64), strconv.Itoa(poll.Queue),
			strconv.FormatFloat(poll.NodeCores, 'f', 2, 64), strconv.FormatFloat(poll.OtherCores, 'f', 2, 64), strconv.FormatFloat(poll.StealCores, 'f', 2, 64)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeNodes writes, per trace second, the instances (ready + starting)
// on each node of a cluster replay, from the status poll nearest its
// middle.
func (p *PolicyResult) writeNodes(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	head := []string{"trace_s", "offered_rps", "instances"}
	for _, n := range p.Nodes {
		head = append(head, n.Node)
	}
	w.Write(head)
	pi := 0
	for k := range p.seconds {
		mid := p.origin + time.Duration(k)*p.sec + p.sec/2
		for pi+1 < len(p.nodeCounts) && p.nodeCounts[pi+1].sum.At <= mid {
			pi++
		}
		off := ""
		if k < len(p.offered) {
			off = strconv.FormatFloat(p.offered[k], 'f', 1, 64)
		}
		row := []string{strconv.Itoa(k), off, strconv.Itoa(countAt(p.steps, p.initial, mid))}
		for i := range p.Nodes {
			c := ""
			if pi < len(p.nodeCounts) {
				c = strconv.Itoa(p.nodeCounts[pi].byNode[i])
			}
			row = append(row, c)
		}
		w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func p99Cell(s secondStat) string {
	switch {
	case s.Requests == 0:
		return ""
	case s.P99 == failedLatency:
		return "failed"
	}
	return strconv.FormatFloat(ms(s.P99), 'f', 2, 64)
}

// Plot draws, per policy, the request rate (offered, seen by the node,
// predicted) over the trace and, below it, the instances and the seconds
// that violated the SLO.
func (r *AutoscaleReport) Plot(path string) error {
	if len(r.Policies) == 0 {
		return nil
	}
	maxInst, maxRate, xmax := 1.0, 1.0, 1.0
	for _, p := range r.Policies {
		maxInst = max(maxInst, float64(p.MaxInstances))
		for _, s := range p.steps {
			maxInst = max(maxInst, float64(s.N))
		}
		for _, v := range p.offered {
			maxRate = max(maxRate, v)
		}
		for _, q := range p.polls {
			maxRate = max(maxRate, q.RPS, q.Predicted)
		}
		xmax = max(xmax, float64(len(p.offered)))
	}
	const width, panelH = 10 * vg.Inch, 2.4 * vg.Inch
	rows := 2 * len(r.Policies)
	img := vgimg.New(width, panelH*vg.Length(rows))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8), PadY: vg.Points(6)}
	var plots [][]*plot.Plot
	gray := color.RGBA{150, 150, 150, 255}
	blue := color.RGBA{31, 119, 180, 255}
	orange := color.RGBA{255, 127, 14, 255}
	green := color.RGBA{44, 160, 44, 255}
	red := color.RGBA{214, 39, 40, 255}
	toTrace := func(p *PolicyResult, at time.Duration) float64 {
		return float64(at-p.origin) / float64(p.sec) * r.Settings.TraceInterval
	}
	for i := range r.Policies {
		p := &r.Policies[i]
		// Rates.
		rp := plot.New()
		rp.Title.Text = fmt.Sprintf("%s — %s (speedup %g): %d violation s, %.0f instance-s, p99 %.1f ms", p.Policy, r.Trace, r.Speedup,
			p.SLOViolationSeconds, p.InstanceSeconds, p.P99)
		rp.Y.Label.Text = "req/s"
		rp.X.Min, rp.X.Max, rp.Y.Min, rp.Y.Max = 0, xmax, 0, maxRate*1.1
		off := make(plotter.XYs, len(p.offered))
		for k, v := range p.offered {
			off[k] = plotter.XY{X: float64(k) * r.Settings.TraceInterval, Y: v}
		}
		var seen, pred plotter.XYs
		for _, q := range p.polls {
			x := toTrace(p, q.At)
			if x < 0 || x > xmax {
				continue
			}
			seen = append(seen, plotter.XY{X: x, Y: q.RPS})
			if q.Predicted > 0 || p.Policy == "mu" {
				pred = append(pred, plotter.XY{X: x, Y: q.Predicted})
			}
		}
		if err := addLine(rp, off, gray, 1, "offered (trace × rate scale)"); err != nil {
			return err
		}
		if err := addLine(rp, seen, blue, 1, "arrivals seen by the node (last control period)"); err != nil {
			return err
		}
		if err := addLine(rp, pred, orange, 1, "predicted (mu)"); err != nil {
			return err
		}
		rp.Legend.Top = true
		rp.Legend.Left = true
		rp.Add(plotter.NewGrid())

		// Instances and violations.
		ip := plot.New()
		ip.X.Label.Text = "trace time (s)"
		ip.Y.Label.Text = "instances"
		ip.X.Min, ip.X.Max, ip.Y.Min, ip.Y.Max = 0, xmax, 0, maxInst+1
		var want plotter.XYs
		cur := countAt(p.steps, p.initial, p.origin)
		want = append(want, plotter.XY{X: 0, Y: float64(cur)})
		for _, s := range p.steps {
			x := toTrace(p, s.At)
			if x <= 0 || x > xmax {
				continue
			}
			want = append(want, plotter.XY{X: x, Y: float64(cur)}, plotter.XY{X: x, Y: float64(s.N)})
			cur = s.N
		}
		want = append(want, plotter.XY{X: xmax, Y: float64(cur)})
		var ready plotter.XYs
		for _, q := range p.polls {
			if x := toTrace(p, q.At); x >= 0 && x <= xmax {
				ready = append(ready, plotter.XY{X: x, Y: float64(q.Ready + q.Starting)})
			}
		}
		if err := addLine(ip, want, green, 1.5, "instances wanted (node log)"); err != nil {
			return err
		}
		if err := addLine(ip, ready, blue, 0.7, "ready + starting (status polls)"); err != nil {
			return err
		}
		var viol plotter.XYs
		for k, s := range p.seconds {
			if s.Violated {
				viol = append(viol, plotter.XY{X: (float64(k) + 0.5) * r.Settings.TraceInterval, Y: maxInst + 0.5})
			}
		}
		if len(viol) > 0 {
			sc, err := plotter.NewScatter(viol)
			if err != nil {
				return err
			}
			sc.GlyphStyle.Color = red
			sc.GlyphStyle.Shape = draw.BoxGlyph{}
			sc.GlyphStyle.Radius = vg.Points(1.5)
			ip.Add(sc)
			ip.Legend.Add("SLO violated (p99 of that second)", sc)
		}
		ip.Legend.Top = true
		ip.Legend.Left = true
		ip.Add(plotter.NewGrid())
		plots = append(plots, []*plot.Plot{rp}, []*plot.Plot{ip})
	}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func addLine(p *plot.Plot, xy plotter.XYs, c color.Color, width float64, label string) error {
	if len(xy) == 0 {
		return nil
	}
	l, err := plotter.NewLine(xy)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(width)
	p.Add(l)
	p.Legend.Add(label, l)
	return nil
}

// Markdown writes the report.
func (r *AutoscaleReport) Markdown(w io.Writer) {
	s := r.Settings
	m := r.Machine
	fmt.Fprintf(w, "# spry bench autoscale: %s\n\n", r.Trace)
	fmt.Fprintf(w, "Machine: %s, %d cores, %.1f GiB, Linux %s, %s.\n\n", m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go)
	fmt.Fprintf(w, "Trace `%s`: %d samples of %gs, %.0f req/s mean, %.0f peak; sent × %.3g (rate scale) = %.0f req/s mean, %.0f peak. ",
		r.Trace, s.TraceSamples, s.TraceInterval, s.TraceMean, s.TracePeak, s.RateScale, s.MeanRPS, s.PeakRPS)
	fmt.Fprintf(w, "A one-step chain whose step burns %.3g ms of CPU per request (concurrency 1 per instance): %.2f cores at the peak, on %d. ",
		s.StepCPUMillis, s.PeakCores, s.Cores)
	fmt.Fprintf(w, "SLO %.3g ms; scale min %d, max %d. %s arrivals (seed %d), %d connections, %.0f s warm-up at the first rate (not measured).\n\n",
		s.SLOMillis, s.Min, s.Max, strings.ToUpper(s.Arrivals[:1])+s.Arrivals[1:], s.Seed, s.Connections, s.WarmupSeconds)
	fmt.Fprintf(w, "**Time is compressed %g×**: one trace second lasts %.3g s, so the node's 1 s control period sees %.3g trace seconds at once "+
		"(and kpa's 2 s decision interval twice that). The request *rate* is not scaled, only the timeline: a policy replay takes %.0f s of wall time. "+
		"The policies' windows are compressed by the same factor (scale.window, scale.idle below), except that kpa's stable window stays ≥ 10 s "+
		"(its panic window, a tenth of it, must hold one 1 s sample). mu judges the SLO per trace second, as violation seconds count it "+
		"(scale.sloWindow %.3g ms).\n\n",
		r.Speedup, s.WallSecondsPerTraceSecond, s.TraceSecondsPerControlPeriod, s.WallSeconds, s.MuSLOWindowMillis)

	if s.Nodes > 1 {
		fmt.Fprintf(w, "**On a local cluster of %d node agents** (spry-controller local: etcd, kube-apiserver, the controller and the agents, all on this machine): "+
			"the controller's autoscaler sizes the function on the cluster-wide counters of the agents' heartbeats (every %v; control period 1 s), "+
			"DRF places the instances (each node offers room for its share of scale.max and one more), and the load is split evenly over every node's gateway "+
			"(a node without an instance hands the request to one that has; a function at zero is woken from any node). "+
			"Instance-seconds come from the nodes' status polls (the controller logs no decisions per node); the node cores include the control plane.\n\n",
			s.Nodes, clusterHeartbeat)
	}
	fmt.Fprintln(w, "| policy | SLO violations (trace s) | requests over SLO | instance-seconds | scale events (up/down) | p50 ms | p99 ms | mean / max instances | errors | window / idle |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, p := range r.Policies {
		wi := "–"
		if p.Window != "" {
			wi = p.Window + " / " + p.Idle
		}
		if p.FixedInstances > 0 {
			wi = fmt.Sprintf("%d instances", p.FixedInstances)
		}
		fmt.Fprintf(w, "| %s | %d of %d | %.3f%% | %.0f | %d (%d/%d) | %.2f | %.2f | %.2f / %d | %d | %s |\n",
			p.Policy, p.SLOViolationSeconds, p.Seconds, 100*p.RequestsOverSLOFraction, p.InstanceSeconds, p.ScaleEvents, p.ScaleUps, p.ScaleDowns,
			p.P50, p.P99, p.MeanInstances, p.MaxInstances, p.Errors, wi)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| policy | requests | threshold ms (SLO + overhead) | overhead ms | step exec ms | node: step over SLO | instance-s from status polls | cold starts | cores: node / load gen / other / steal |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, p := range r.Policies {
		fmt.Fprintf(w, "| %s | %d | %.3f | %.3f | %.3f | %.3f%% | %.0f | %d | %.2f / %.2f / %.2f / %.2f |\n", p.Policy, p.Requests, p.ThresholdMillis, p.OverheadMillis,
			p.ExecMillis, 100*p.NodeOverSLOFraction, p.InstanceSecondsPolled, p.ColdStarts, p.CPU.Node, p.CPU.LoadGen, p.CPU.Other, p.CPU.Steal)
	}
	if s.Nodes > 1 {
		fmt.Fprint(w, "\nInstances per node (instance-seconds, trace seconds / most at once / requests sent to its gateway):\n\n")
		fmt.Fprint(w, "| policy |")
		for _, n := range r.Policies[0].Nodes {
			fmt.Fprintf(w, " %s |", n.Node)
		}
		fmt.Fprint(w, "\n|---|")
		for range r.Policies[0].Nodes {
			fmt.Fprint(w, "---:|")
		}
		fmt.Fprintln(w)
		for _, p := range r.Policies {
			fmt.Fprintf(w, "| %s |", p.Policy)
			for _, n := range p.Nodes {
				fmt.Fprintf(w, " %.0f / %d / %d |", n.InstanceSeconds, n.MaxInstances, n.Requests)
			}
			fmt.Fprintln(w)
		}
	}
	for _, p := range r.Policies {
		if p.FirstError != "" {
			fmt.Fprintf(w, "\n%s: first error: `%s`\n", p.Policy, p.FirstError)
		}
	}
	fmt.Fprint(w, `
Definitions:

- **Latency** is the client's, end to end, from when the request was due (open loop, no
  coordinated omission). The SLO is the step's (queueing + execution, as the node sizes
  for it), so a request is over the SLO when its latency exceeds SLO + the fixed overhead
  between the client and the step (gateway, two descriptor hops, HTTP, load generator),
  measured before each replay as the mean client latency minus the node's mean step time
  at 40 req/s. Unlike the node's step histogram, this also counts a request that waited
  at the gateway for an instance (a cold start), and it is exact per request.
- **SLO violation seconds**: trace seconds (each 1/speedup of wall time) in which the
  nearest-rank p99 latency of the requests *completed* in that second exceeds the
  threshold; a failed request counts as infinitely slow; a second without completions is
  not a violation; seconds after the trace's end count when requests completed then. A
  trace second holds rate/speedup requests, so under 100 its p99 is its slowest request.
- **Instance-seconds**: ∫ (ready + starting) dt over the trace, from the node's log of its
  scale decisions and cold starts (exact to the millisecond; an instance is starting or
  ready from the decision on, and draining ones take milliseconds to go), × speedup, so
  that it is in trace seconds, comparable with a replay in real time. The same integral
  from /v1/status polls every status_poll_ms is shown as a cross-check.
- **Scale events**: changes of the wanted instance count during the trace (decisions in
  the node's log, and cold starts).
- **Node: step over SLO**: the node's own per-control-period attainment from
  /v1/status, weighted by rate: step latency only.
- **Cores**: mean CPU during the replay of the node and its instances, of the load
  generator (the bench process), of everything else on the machine (/proc/stat busy
  minus those two: other jobs, the noise), and stolen by the hypervisor.

Files: `+"`timeline-POLICY.csv`"+` (per trace second: offered and answered rate, p99, requests over the
threshold, instances, and the status poll nearest its middle: the node's rate, prediction,
reason, step p99, queue, and the cores of the node, of other processes, and stolen, over
the second before it), `+"`node-POLICY.log`"+` (every scale decision with its
reason, rate, prediction and queue; on a cluster, the cluster's log), and on a cluster
`+"`nodes-POLICY.csv`"+` (per trace second, the instances on each node).

![autoscale](autoscale.png)
`)
}
