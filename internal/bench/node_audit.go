package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/spry-dev/spry/bench"
	"github.com/spry-dev/spry/internal/bench/load"
	"github.com/spry-dev/spry/internal/bench/proc"
)

// AuditOptions configure an audit of a running node's chain.
type AuditOptions struct {
	Admin       string // the node's admin API
	Route       string
	Method      string
	Body        []byte
	Header      [][2]string
	Requests    int // how many to send (default 2000)
	Connections int // at once (default 4)
}

// AuditNode measures a running node's chain: it sends the requests to the
// route, reads /proc for the node and the chain's instances before and
// after, and writes the overhead table.
func AuditNode(ctx context.Context, o AuditOptions, w io.Writer) (*Audit, error) {
	if o.Requests <= 0 {
		o.Requests = 2000
	}
	if o.Connections <= 0 {
		o.Connections = 4
	}
	st, err := fetchStatus(o.Admin)
	if err != nil {
		return nil, fmt.Errorf("audit: no spry node answers at %s: %w", o.Admin, err)
	}
	var chain *bench.Chain
	transportName := ""
	for _, a := range st.Apps {
		for _, c := range a.Chains {
			if c.Route == o.Route {
				chain = &bench.Chain{Name: c.Name, Route: c.Route, Steps: c.Steps}
				transportName = a.Transport
			}
		}
	}
	if chain == nil {
		return nil, fmt.Errorf("audit: no chain serves %s on the node at %s", o.Route, o.Admin)
	}
	procs, err := nodeProcs(o.Admin)
	if err != nil {
		return nil, err
	}
	listen, err := nodeListen(o.Admin)
	if err != nil {
		return nil, err
	}
	method := o.Method
	if method == "" {
		method = "GET"
		if o.Body != nil {
			method = "POST"
		}
	}
	raw := load.Build(method, o.Route, "spry", o.Header, o.Body)
	// One request first: its status is what every later one must get.
	first, err := load.Run(ctx, load.Config{Addr: listen, Requests: []load.Request{{Raw: raw, WantStatus: 200}}, Connections: 1,
		Duration: time.Hour, Schedule: &countSchedule{n: 1}, Timeout: time.Minute})
	if err != nil {
		return nil, err
	}
	if first.Requests != 1 {
		return nil, fmt.Errorf("audit: %s %s: %s", method, o.Route, first.FirstErr)
	}
	roots := make([]int, len(procs))
	comp := map[int]string{}
	for i, p := range procs {
		roots[i] = p.PID
		comp[p.PID] = p.Component
	}
	var before, after proc.Snapshot
	res, err := load.Run(ctx, load.Config{Addr: listen, Requests: []load.Request{{Raw: raw, WantStatus: 200, Name: chain.Name}},
		Connections: o.Connections, Duration: time.Hour, Schedule: &countSchedule{n: o.Requests}, Timeout: time.Minute,
		OnMeasure: func() { before = proc.Take(roots) }, OnEnd: func() { after = proc.Take(roots) }})
	if err != nil {
		return nil, err
	}
	if res.Errors > 0 {
		return nil, fmt.Errorf("audit: %d of %d requests failed: %s", res.Errors, o.Requests, res.FirstErr)
	}
	n := float64(max(res.Requests, 1))
	byComp := map[string]*proc.Cost{}
	var total proc.Cost
	for _, c := range after.Sub(before) {
		name := comp[c.PID]
		if name == "" {
			name = "other"
		}
		if byComp[name] == nil {
			byComp[name] = &proc.Cost{}
		}
		byComp[name].Add(c)
		total.Add(c)
	}
	per := map[string]Measured{}
	for k, c := range byComp {
		per[k] = Measured{CtxSw: float64(c.CtxSw()) / n, Syscalls: float64(c.Syscalls()) / n, OK: c.IOOK}
	}
	m := &spryMode{transport: transportName}
	path := m.Path(chain)
	a := BuildAudit(transportName, chain.Name, path, per, Arrivals(map[string][]Transfer{chain.Name: path}, map[string]float64{chain.Name: 1}),
		Measured{CtxSw: float64(total.CtxSw()) / n, Syscalls: float64(total.Syscalls()) / n, OK: total.IOOK})
	if w != nil {
		fmt.Fprintf(w, "%d requests to %s %s, %.0f req/s, CPU %.1f µs/request over %d processes\n\n", res.Requests, method, o.Route,
			res.RPS(), total.CPU.Seconds()/n*1e6, len(after.Procs))
		a.Text(w)
		fmt.Fprintln(w, "copies, protocol processing and (de)serializations count what the platform does to move the request")
		fmt.Fprintln(w, "between components; what a function does with its payload (decoding JSON, say) is its own work,")
		fmt.Fprintln(w, "measured as its CPU time below.")
		var names []string
		for k := range byComp {
			names = append(names, k)
		}
		sort.Strings(names)
		fmt.Fprint(w, "CPU per request:")
		for _, k := range names {
			fmt.Fprintf(w, "  %s %.1f µs", k, byComp[k].CPU.Seconds()/n*1e6)
		}
		fmt.Fprintln(w)
		if !total.IOOK {
			fmt.Fprintln(w, "(syscall counts need root: /proc/PID/io of the instances was not readable)")
		}
	}
	return &a, nil
}

// nodeListen returns the address the node's gateway can be reached at.
func nodeListen(admin string) (string, error) {
	s, err := fetchStatusFull(admin)
	if err != nil {
		return "", err
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return s, nil
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func fetchStatusFull(admin string) (string, error) {
	st, err := fetchStatus(admin)
	if err != nil {
		return "", err
	}
	if st.Node.Listen == "" {
		return "", fmt.Errorf("audit: the node did not say where it listens")
	}
	return strings.TrimSpace(st.Node.Listen), nil
}
