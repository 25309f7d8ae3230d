package config

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spry-dev/spry/internal/auth"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/route"
)

// Transports an app may name.
const (
	TransportAuto     = "auto"
	TransportSKMsg    = "skmsg"
	TransportUDS      = "uds"
	TransportPoll     = "poll"
	TransportAdaptive = "adaptive"
)

// Kind is how a function is provided.
type Kind int

// Kinds of function.
const (
	Builtin Kind = iota + 1 // compiled into the spry binary
	Go                      // a Go package built against the SDK
	Exec                    // a prebuilt executable
	Python                  // a Python handler file, run by the Python SDK
	HTTP                    // an existing HTTP server, behind spry's http adapter
	Lambda                  // an AWS Lambda function, behind spry's Lambda Runtime API
	Wasm                    // a WebAssembly module, run in the app's sandbox host
)

func (k Kind) String() string {
	switch k {
	case Builtin:
		return "builtin"
	case Go:
		return "go"
	case Exec:
		return "exec"
	case Python:
		return "python"
	case HTTP:
		return "http"
	case Lambda:
		return "lambda"
	case Wasm:
		return "wasm"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// App is one spry.yaml: a security domain with its own pool. Every field
// holds its resolved value, defaults filled in.
type App struct {
	Name      string
	File      string // the file it came from, as named to Load or Parse
	Dir       string // absolute directory that relative paths resolved against
	Line      int    // line of "app:"
	Transport string // one of the Transport constants
	Pool      Pool
	Limits    Limits
	TLS       TLS // the node's gateway certificate, when the file names one
	// Secrets are made readable to the app's instances only, as files in
	// the directory $SPRY_SECRETS names.
	Secrets   []Secret
	Functions []*Function // in file order; Functions[i].Index == i
	Chains    []*Chain    // in file order; Chains[i].Index == i
	// Triggers start chains on MQTT messages, times and CloudEvents, in
	// file order; Activations says how activation records are kept.
	Triggers    []*Trigger
	Activations Activations

	fnIndex map[string]int
}

// Pool sizes the app's shared-memory pool; the fields go into pool.Layout.
type Pool struct {
	Buffers    uint32 // number of buffers
	BufferSize uint32 // payload bytes per buffer
	// Memory is all the pool's payloads may take: the buffers, and the
	// large-extent region that holds payloads larger than one buffer
	// (the rest). Committed only as it is used.
	Memory uint64
}

// ExtentBytes returns the size of the pool's large-extent region: what
// Memory leaves after the buffers, in whole chunks.
func (p Pool) ExtentBytes() uint64 {
	arena := uint64(p.Buffers) * uint64(p.BufferSize)
	if p.Memory <= arena {
		return 0
	}
	return (p.Memory - arena) / pool.ChunkSize * pool.ChunkSize
}

// Chunks returns the large-extent region in pool chunks.
func (p Pool) Chunks() uint32 { return uint32(min(p.ExtentBytes()/pool.ChunkSize, pool.MaxChunks)) }

// Secret is one of an app's secrets.
type Secret struct {
	Name   string // its file name in the instances' secrets directory
	Source string // the file it was read from, or "value"
	Value  []byte `json:"-"` // never printed
}

// TLSOf returns the certificate the apps name (the same in each that names
// one; Conflicts checks), or the zero TLS.
func TLSOf(apps []*App) TLS {
	for _, a := range apps {
		if a.TLS != (TLS{}) {
			return a.TLS
		}
	}
	return TLS{}
}

// TLS names the certificate and key (PEM files, absolute paths) the
// node's gateway serves TLS with. It is the node's, not the app's: every
// file that sets it must name the same files.
type TLS struct {
	Cert, Key string
}

// Limits bound what the gateway admits for the app.
type Limits struct {
	Inflight int    // requests in flight at once
	Async    int    // of those, asynchronous activations at once (default Inflight/2)
	MaxBody  uint64 // the largest request body, in bytes
}

// Function is one function of an app.
type Function struct {
	Name  string
	Index int    // position in App.Functions
	File  string // for messages: where it is defined
	Line  int

	Kind    Kind
	Builtin string   // Kind Builtin: the builtin's name
	Go      string   // Kind Go: an absolute directory, or an import path (never starts with '/')
	Exec    []string // Kind Exec: the absolute program path, then its arguments
	Python  string   // Kind Python: the absolute path of the handler file
	HTTP    []string // Kind HTTP: the absolute program path, then its arguments
	Lambda  []string // Kind Lambda: the absolute program path, then its arguments
	Wasm    string   // Kind Wasm: an absolute .wasm file, or a Go package (as Go) spry builds for WASI

	// Options of the kinds above (see kinds.go).
	Virtualenv   string   // Python: a virtualenv directory whose interpreter runs the handler
	Requirements string   // Python: a requirements file spry installs into a virtualenv of its own
	Port         int      // HTTP: the fixed port the server listens on (0: spry picks one, in $PORT)
	Health       string   // HTTP: the path that answers 2xx once the server is ready ("": it accepts connections)
	Event        string   // Lambda: the event shape, EventPayload or EventHTTP
	Handler      string   // Lambda: the handler name a runtime reads from $_HANDLER
	WasmBuild    bool     // Wasm: Wasm is a Go package to build, not a .wasm file
	Grants       []string // Wasm: what the guest may use beyond its memory (GrantClock, GrantRandom)

	Instances   int           // instances at start (the count, without scale:)
	Scale       Scale         // how the count changes with load
	Concurrency int           // handlers at once per instance
	Timeout     time.Duration // longest one step may run
	Env         []string      // "KEY=value" from envFrom: then env: (env: wins), expanded, for exec.Cmd.Env
	EnvFrom     []string      // the env files read into Env, absolute
	WorkDir     string        // the instances' working directory, absolute
	WorkDirSet  bool          // WorkDir was given (workDir:), not the default
	Limits      FnLimits      // what the kernel lets one instance use
}

// FnLimits are the kernel's bounds on one instance of a function (cgroups);
// zero is no bound.
type FnLimits struct {
	Memory uint64  // bytes of memory (RSS and page cache); over it the kernel kills the instance
	CPU    float64 // CPUs' worth of time per period (0.5: half of one CPU)
}

// Scale is a function's autoscaling: Policy sizes the instance count
// between Min and Max for the SLO. Without scale: in the file, Policy is
// "fixed" and Min = Max = Instances.
type Scale struct {
	Policy   string        // PolicyMu, PolicyKPA or PolicyFixed
	Min, Max int           // bounds of the instance count
	SLO      time.Duration // latency objective of one step (queueing + execution), at the 99th percentile
	// Window is how far back a scale-down looks (mu: the stabilisation
	// window; kpa: the stable window); Idle how long without traffic
	// before a function with Min 0 goes to zero (mu: the idle period; kpa:
	// the grace after the stable window). 0 means the policy's default.
	Window, Idle time.Duration
	// SLOWindow is the interval the SLO is judged over: the 99th
	// percentile of each SLOWindow's requests is to stay within SLO. 0
	// means 1s.
	SLOWindow time.Duration
	// Attainment is the share of SLO windows that are to meet the SLO
	// (mu sizes for it), in [0.5, 1). 0 means 0.99.
	Attainment float64
}

// Scaling policies.
const (
	PolicyMu    = "mu"    // sizes for the SLO from the predicted arrival rate and the backlog
	PolicyKPA   = "kpa"   // Knative's concurrency-based autoscaler, for comparison
	PolicyFixed = "fixed" // a fixed count
)

// DefaultSLO is the SLO of a scaled function that names none.
const DefaultSLO = time.Second

// DefaultMaxInstances is the largest count of a scaled function that names
// no max.
const DefaultMaxInstances = 10

// Chain is one chain of an app: a route and the functions it runs, in order.
type Chain struct {
	Name  string
	Index int    // position in App.Chains
	File  string // for messages: where it is defined
	Line  int

	Route string
	// Steps is the function (an index into App.Functions) of each step,
	// in Graph's order.
	Steps []int
	// Graph is the chain's graph: Graph[0] is where requests enter. A
	// line (steps: [a, b]) is a graph whose steps each lead to the next.
	Graph   []Step
	Timeout time.Duration // deadline for the whole chain
	Methods []string      // upper case
	Headers []string      // canonical header names (textproto.CanonicalMIMEHeaderKey)
	// Auth is what a request must present to run the chain (nil: nothing).
	Auth *auth.Config `json:"-"`
	// AuthSum identifies Auth's keys and secrets (for a reload to tell a
	// change), without holding them.
	AuthSum string
	Record  string // which sync requests get an activation record: RecordFailures, RecordAll, RecordNone
	Async   Async  // how its asynchronous invocations run

	routeLine int
}

// Step is one step of a chain's graph.
type Step struct {
	Name string // unique in the chain; by default its function's name
	Fn   int    // the function it runs (an index into App.Functions)
	Line int
	// Next are the steps the output goes to (indexes into the graph): none
	// ends the chain; several are a fan-out (all at once, sharing the
	// output) unless Choose, when the handler picks one (res.Next), by
	// default the first.
	Next   []int
	Choose bool
	// JoinAt is, for a fan-out, the step its branches meet at (-1 for
	// other steps).
	JoinAt int
	// Join, when set, makes the step join the branches of a fan-out.
	Join *Join
	// Depth is how many fan-outs the step is a branch of.
	Depth int
}

// Join says when a join step runs.
type Join struct {
	// Quorum is how many branches must have succeeded (0: all of them).
	// The step runs once that many did, or when every branch ended.
	Quorum int
	// Wait, when not 0, bounds how long after the fan-out the join waits:
	// then it runs with the branches that arrived.
	Wait time.Duration
	// Ordinal numbers the chain's joins, from 0.
	Ordinal int
	// Of is how many branches the fan-out sends.
	Of int
}

// IsLine reports whether the chain is a plain line of steps.
func (c *Chain) IsLine() bool {
	for i, s := range c.Graph {
		if s.Join != nil || s.Choose || len(s.Next) > 1 || (len(s.Next) == 1 && s.Next[0] != i+1) {
			return false
		}
	}
	return true
}

// FunctionIndex returns the index of the function called name.
func (a *App) FunctionIndex(name string) (int, bool) {
	i, ok := a.fnIndex[name]
	return i, ok
}

// Function returns the function called name, or nil.
func (a *App) Function(name string) *Function {
	if i, ok := a.fnIndex[name]; ok {
		return a.Functions[i]
	}
	return nil
}

// Chain returns the chain called name, or nil.
func (a *App) Chain(name string) *Chain {
	for _, c := range a.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Options are what the loader needs from the rest of spry.
type Options struct {
	// Builtins reports whether a builtin function of that name exists.
	// nil accepts every name.
	Builtins func(name string) bool
	// BuiltinNames lists the builtins for the message about an unknown one.
	// Optional.
	BuiltinNames []string
	// Getenv looks up the node's environment for ${NAME} in values
	// (default os.LookupEnv).
	Getenv func(name string) (string, bool)
}

func (o Options) getenv(name string) (string, bool) {
	if o.Getenv != nil {
		return o.Getenv(name)
	}
	return os.LookupEnv(name)
}

// Load reads and validates one app's config file. Relative paths in it
// resolve against the file's directory. On problems it returns nil and an
// *Error holding all of them.
func Load(path string, o Options) (*App, error) {
	a, ps := load(path, o)
	if err := asError(ps, []string{path}); err != nil {
		return nil, err
	}
	return a, nil
}

// Parse validates one app's config held in memory. name is the file name
// for messages; relative paths resolve against dir ("" is the working
// directory).
func Parse(name string, data []byte, dir string, o Options) (*App, error) {
	a, ps := parse(name, data, dir, o)
	if err := asError(ps, []string{name}); err != nil {
		return nil, err
	}
	return a, nil
}

// LoadAll loads the config files of several apps that run together. Besides
// each file's problems, it reports those between files: two apps of one
// name, a route served by two apps. The apps come back in the order of
// paths.
func LoadAll(paths []string, o Options) ([]*App, error) {
	var apps []*App
	var ps []Problem
	for _, p := range paths {
		a, aps := load(p, o)
		ps = append(ps, aps...)
		if a != nil {
			apps = append(apps, a)
		}
	}
	ps = append(ps, conflicts(apps)...)
	if err := asError(ps, paths); err != nil {
		return nil, err
	}
	return apps, nil
}

// Conflicts reports what keeps apps from running together on one node:
// two apps of one name, a route served by two apps. The daemon checks an
// app deployed later against the running ones with it.
func Conflicts(apps []*App) error {
	var files []string
	for _, a := range apps {
		files = append(files, a.File)
	}
	return asError(conflicts(apps), files)
}

func load(path string, o Options) (*App, []Problem) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, []Problem{{File: path, Msg: reason(err), Err: err}}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, []Problem{{File: path, Msg: reason(err), Err: err}}
	}
	return parse(path, data, filepath.Dir(abs), o)
}

// parse returns the app even when there are problems, with what could be
// made of it, so that LoadAll can look for conflicts with other files.
func parse(name string, data []byte, dir string, o Options) (*App, []Problem) {
	if name == "" {
		name = "config"
	}
	ps := &problems{file: name}
	s := decode(data, ps)
	if s == nil {
		return nil, clampLines(ps.list, data)
	}
	s.file, s.dir = name, dir
	a := s.validate(o, ps)
	return a, clampLines(ps.list, data)
}

// clampLines points problems past the end of data at its last line:
// yaml.v3 places the end of the stream, and the empty value of a bare
// "---", on a line of its own.
func clampLines(ps []Problem, data []byte) []Problem {
	n := lineCount(data)
	for i := range ps {
		ps[i].Line = min(ps[i].Line, n)
	}
	return ps
}

// conflicts finds duplicate app names and routes served twice across apps.
func conflicts(apps []*App) []Problem {
	var ps []Problem
	byName := map[string]*App{}
	type served struct {
		app   *App
		chain *Chain
	}
	routes := map[string]served{}
	var tlsFrom *App
	for _, a := range apps {
		if a.TLS != (TLS{}) {
			if tlsFrom != nil && tlsFrom.TLS != a.TLS {
				ps = append(ps, Problem{File: a.File, Line: a.Line, Path: "tls",
					Msg: fmt.Sprintf("the node serves one certificate: %s names %s, this file %s", tlsFrom.File, tlsFrom.TLS.Cert, a.TLS.Cert)})
			} else if tlsFrom == nil {
				tlsFrom = a
			}
		}
		if a.Name == "" {
			continue // its problem was reported
		}
		if first, ok := byName[a.Name]; ok {
			ps = append(ps, Problem{File: a.File, Line: a.Line, Path: "app",
				Msg: fmt.Sprintf("%q is already defined by %s:%d", a.Name, first.File, first.Line)})
			continue // its routes would all clash too: say it once
		}
		byName[a.Name] = a
		for _, c := range a.Chains {
			if c.Route == "" {
				continue
			}
			if s, ok := routes[route.Shape(c.Route)]; ok {
				if s.app == a {
					continue // reported by validate
				}
				ps = append(ps, Problem{File: a.File, Line: c.routeLine, Path: "chains." + pathKey(c.Name) + ".route",
					Msg: fmt.Sprintf("%s is already served by app %q (%s:%d)%s", c.Route, s.app.Name, s.app.File, s.chain.routeLine, sameAs(c.Route, s.chain.Route))})
				continue
			}
			routes[route.Shape(c.Route)] = served{a, c}
		}
	}
	return ps
}
