package bench

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spry-dev/spry/internal/builtin"
	"github.com/spry-dev/spry/sdk"
)

// Workload is one benchmark application: its functions, its chains, the
// requests a load generator sends and how it sends them.
type Workload struct {
	Name       string
	Doc        string
	Functions  []Function
	Chains     []Chain
	Requests   []Request // the request mix; the load generator cycles through it by weight
	Traffic    Traffic
	BufferSize int // the largest request or response body, in bytes
	Settings   Settings
	// Varies, when set, marks where an answer stops being the same on
	// every run (the demo's wrap ends in measured hop durations): answers
	// are checked up to and including its first occurrence.
	Varies []byte
	// Variants are the same application shaped otherwise on Spry (the
	// fan-out as a line of steps, the boutique's pages as calls): a Spry
	// mode named TRANSPORT+VARIANT runs one. Its chains have the names,
	// routes and answers of Chains.
	Variants map[string]Variant
}

// Variant is a workload's application shaped otherwise (see
// Workload.Variants): its functions and chains replace the workload's.
type Variant struct {
	Doc       string
	Functions []Function
	Chains    []Chain
}

// Function is one function of a workload.
type Function struct {
	Name        string // name in the app
	Builtin     string // the registered handler it runs
	Instances   int
	Concurrency int
}

// Chain is one chain of a workload.
type Chain struct {
	Name    string
	Route   string
	Steps   []string // function names
	Methods []string
	Headers []string // request headers the functions read
	// Branches, when set, make the chain a fan-out: the last step's output
	// goes to every branch at once, and Join joins the branches' outputs
	// (all of them, in this order) into the answer.
	Branches []string
	Join     string
	// Calls, for the audit, are the calls the chain's steps make
	// (caller, callee), in order: one exchange each.
	Calls [][2]string
}

// Graph reports whether the chain fans out.
func (c *Chain) Graph() bool { return len(c.Branches) > 0 }

// Functions lists every function the chain runs as a step.
func (c *Chain) Functions() []string {
	fns := slices.Clone(c.Steps)
	fns = append(fns, c.Branches...)
	if c.Join != "" {
		fns = append(fns, c.Join)
	}
	return fns
}

// Request is one request of the mix.
type Request struct {
	Chain  string // chain name
	Method string
	Target string      // path with an optional query
	Header [][2]string // name, value
	Body   []byte
	Weight int // relative frequency in the mix (0 counts as 1)
}

// Traffic is how the load arrives.
type Traffic struct {
	// Every > 0 makes the traffic bursty: Burst requests every Every,
	// spread evenly over Spread. Zero means steady load (closed or open
	// loop, as the benchmark is told).
	Every  time.Duration
	Burst  int
	Spread time.Duration
}

// Bursty reports whether the traffic comes in bursts.
func (t Traffic) Bursty() bool { return t.Every > 0 && t.Burst > 0 }

// Options shape a workload.
type Options struct {
	Steps      int           // chain: steps (1..10, default 2)
	Payload    int           // chain: payload bytes (64 B .. 256 MiB, default 64); fanout: default 4 KiB
	Branches   int           // fanout: branches (2..16, default 8)
	StepCPU    time.Duration // extra CPU per step
	Scale      float64       // motion, parking: cost multiplier (default 1 motion, 0.05 parking)
	Chains     []string      // boutique: only these chains (default all six)
	BurstEvery time.Duration // motion, parking: burst period
	BurstSize  int           // motion, parking: requests per burst
	Instances  int           // instances per function (default 1)
	WorkRate   float64       // work units per µs (default: calibrate)
}

// Names lists the workloads.
var Names = []string{"boutique", "motion", "parking", "chain", "fanout", "hello"}

// New makes workload name.
func New(name string, o Options) (*Workload, error) {
	if o.Instances <= 0 {
		o.Instances = 1
	}
	var w *Workload
	var err error
	switch name {
	case "boutique":
		w, err = boutique(o)
	case "motion":
		w, err = motion(o)
	case "parking":
		w, err = parking(o)
	case "chain":
		w, err = chain(o)
	case "fanout":
		w, err = fanout(o)
	case "hello":
		w, err = hello(o)
	default:
		return nil, fmt.Errorf("bench: no workload %q (workloads: %s)", name, strings.Join(Names, ", "))
	}
	if err != nil {
		return nil, err
	}
	defaults := func(fns []Function) {
		for i := range fns {
			if fns[i].Instances == 0 {
				fns[i].Instances = o.Instances
			}
			if fns[i].Concurrency == 0 {
				fns[i].Concurrency = 1
			}
		}
	}
	defaults(w.Functions)
	for _, v := range w.Variants {
		defaults(v.Functions)
	}
	w.Settings.StepCPU = o.StepCPU
	w.Settings.WorkRate = o.WorkRate
	if w.Settings.Scale == 0 {
		w.Settings.Scale = 1
	}
	return w, w.check()
}

// check verifies that the workload is consistent.
func (w *Workload) check() error {
	chains := map[string]bool{}
	if err := checkShape(w.Name, w.Functions, w.Chains); err != nil {
		return err
	}
	for _, c := range w.Chains {
		chains[c.Name] = true
	}
	for name, v := range w.Variants {
		if err := checkShape(w.Name+"+"+name, v.Functions, v.Chains); err != nil {
			return err
		}
		for _, c := range v.Chains {
			if !chains[c.Name] || w.Chain(c.Name).Route != c.Route {
				return fmt.Errorf("bench: %s+%s: chain %s is not one of the workload's (by name and route)", w.Name, name, c.Name)
			}
		}
	}
	if len(w.Requests) == 0 {
		return fmt.Errorf("bench: %s: no requests", w.Name)
	}
	for _, r := range w.Requests {
		if !chains[r.Chain] {
			return fmt.Errorf("bench: %s: request for unknown chain %q", w.Name, r.Chain)
		}
		if len(r.Body) > w.BufferSize {
			return fmt.Errorf("bench: %s: request body of %d bytes is larger than the buffer size %d", w.Name, len(r.Body), w.BufferSize)
		}
	}
	return nil
}

// checkShape verifies functions and chains.
func checkShape(name string, functions []Function, chains []Chain) error {
	fns := map[string]bool{}
	for _, f := range functions {
		if _, ok := builtin.Lookup(f.Builtin); !ok {
			return fmt.Errorf("bench: %s: function %s runs unknown builtin %q", name, f.Name, f.Builtin)
		}
		fns[f.Name] = true
	}
	for _, c := range chains {
		if len(c.Methods) == 0 {
			return fmt.Errorf("bench: %s: chain %s: no methods", name, c.Name)
		}
		if len(c.Steps) == 0 || c.Graph() != (c.Join != "") {
			return fmt.Errorf("bench: %s: chain %s: no steps, or branches without a join", name, c.Name)
		}
		for _, s := range c.Functions() {
			if !fns[s] {
				return fmt.Errorf("bench: %s: chain %s: unknown function %q", name, c.Name, s)
			}
		}
		for _, call := range c.Calls {
			if !fns[call[0]] || !fns[call[1]] {
				return fmt.Errorf("bench: %s: chain %s: a call between unknown functions %q", name, c.Name, call)
			}
		}
	}
	return nil
}

// Shaped returns the functions and chains of variant ("" for the
// workload's own).
func (w *Workload) Shaped(variant string) ([]Function, []Chain, error) {
	if variant == "" {
		return w.Functions, w.Chains, nil
	}
	v, ok := w.Variants[variant]
	if !ok {
		names := make([]string, 0, len(w.Variants))
		for n := range w.Variants {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, nil, fmt.Errorf("bench: workload %s has no variant %q (variants: %s)", w.Name, variant, strings.Join(names, ", "))
	}
	return v.Functions, v.Chains, nil
}

// Stable returns the part of answer body that is the same on every run:
// all of it, or up to and including the first Varies (ok false when a
// Varies workload's answer lacks it).
func (w *Workload) Stable(body []byte) (stable []byte, ok bool) {
	if w.Varies == nil {
		return body, true
	}
	i := bytes.Index(body, w.Varies)
	if i < 0 {
		return body, false
	}
	return body[:i+len(w.Varies)], true
}

// Chain returns the chain called name.
func (w *Workload) Chain(name string) *Chain {
	for i := range w.Chains {
		if w.Chains[i].Name == name {
			return &w.Chains[i]
		}
	}
	return nil
}

// Function returns the function called name.
func (w *Workload) Function(name string) *Function {
	for i := range w.Functions {
		if w.Functions[i].Name == name {
			return &w.Functions[i]
		}
	}
	return nil
}

// Handler returns the handler function name runs.
func (w *Workload) Handler(name string) sdk.Handler {
	f := w.Function(name)
	if f == nil {
		return nil
	}
	b, _ := builtin.Lookup(f.Builtin)
	return b.Handler
}

// Mix expands the requests by weight into the order a load generator
// cycles through, interleaving the chains.
func (w *Workload) Mix() []int {
	var mix []int
	left := make([]int, len(w.Requests))
	for i, r := range w.Requests {
		left[i] = max(r.Weight, 1)
	}
	for {
		added := false
		for i := range left {
			if left[i] > 0 {
				mix = append(mix, i)
				left[i]--
				added = true
			}
		}
		if !added {
			return mix
		}
	}
}

// register adds the handlers as builtins.
func register(prefix string, fns map[string]struct {
	doc string
	h   sdk.Handler
}) {
	names := make([]string, 0, len(fns))
	for n := range fns {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		builtin.Register(prefix+n, fns[n].doc, fns[n].h)
	}
}

// Context documents: the boutique, motion and parking steps pass a small
// text document of "key=value" lines and append their results to it in
// place (Response.Buffer and SetLen), the way a zero-copy step should.

// field returns the value of the last line "key=…" in doc.
func field(doc []byte, key string) []byte {
	var v []byte
	for len(doc) > 0 {
		i := 0
		for i < len(doc) && doc[i] != '\n' {
			i++
		}
		line := doc[:i]
		if len(line) > len(key) && line[len(key)] == '=' && string(line[:len(key)]) == key {
			v = line[len(key)+1:]
		}
		if i < len(doc) {
			i++
		}
		doc = doc[i:]
	}
	return v
}

// appender appends lines to a step's payload in place.
type appender struct {
	res *sdk.Response
	buf []byte
	n   int
	err error
}

func newAppender(req *sdk.Request, res *sdk.Response) appender {
	return appender{res: res, buf: res.Buffer(), n: len(req.Payload())}
}

func (a *appender) add(parts ...string) {
	for _, p := range parts {
		if a.err != nil {
			return
		}
		if len(p) > len(a.buf)-a.n {
			a.err = sdk.Errorf(507, "bench: context document outgrew its buffer")
			return
		}
		a.n += copy(a.buf[a.n:], p)
	}
}

func (a *appender) addBytes(p []byte) {
	if a.err != nil {
		return
	}
	if len(p) > len(a.buf)-a.n {
		a.err = sdk.Errorf(507, "bench: context document outgrew its buffer")
		return
	}
	a.n += copy(a.buf[a.n:], p)
}

// line appends "key=value\n".
func (a *appender) line(key string, value ...string) {
	a.add(key, "=")
	a.add(value...)
	a.add("\n")
}

func (a *appender) done() error {
	if a.err != nil {
		return a.err
	}
	a.res.SetLen(a.n)
	return nil
}
