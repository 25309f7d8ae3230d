package fl

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spry-dev/spry/internal/builtin"
)

func init() {
	builtin.RegisterKeeper("fl-top", "federated learning: the top aggregator and its jobs (admits updates, combines the partial sums into each round's model, serves models); see docs/fl.md", Top)
	builtin.Register("fl-leaf", "federated learning: a leaf aggregator, folding each update where it lies into a partial sum in the pool", Leaf)
}

// AppOptions size the aggregation app's config.
type AppOptions struct {
	Name      string        // the app's name (default fl)
	Params    int           // the largest model it serves, in float32 parameters
	Uploads   int           // updates in flight at once that the pool takes (more wait: 503)
	MaxLeaves int           // the most leaf instances the control plane may run
	Idle      time.Duration // how long a job may go without a request (the top's scale.idle)
	// StateDir is where the top keeps its jobs so that they survive its
	// restart (EnvStateDir; "": in its memory only).
	StateDir string
}

func (o *AppOptions) defaults() {
	if o.Name == "" {
		o.Name = "fl"
	}
	if o.Params <= 0 {
		o.Params = 11_689_512
	}
	if o.Uploads <= 0 {
		o.Uploads = 16
	}
	if o.MaxLeaves <= 0 {
		o.MaxLeaves = 4
	}
	if o.Idle <= 0 {
		o.Idle = DefaultTTL
	}
}

// PoolMemory is the pool the app needs: the updates in flight, a partial
// sum per leaf, the round table and two models (the latest, and the one
// before for clients still fetching it), with a model's worth to spare;
// and the buffers' own areas (1024 × 64 KiB).
func (o AppOptions) PoolMemory() uint64 {
	o.defaults()
	model := (uint64(o.Params)*4 + 1<<16 - 1) &^ (1<<16 - 1)
	return uint64(o.Uploads+o.MaxLeaves+3)*model + uint64(TableBytes) + 1<<16 + 64<<20
}

// AppYAML is the aggregation app's spry.yaml:
//
//	PUT /fl/{job}, GET /fl/{job}, DELETE /fl/{job}  → fl-top
//	GET|POST /fl/{job}/model                        → fl-top
//	POST /fl/{job}/update                           → fl-top, fl-leaf, fl-top
//
// fl-leaf is scaled by the control plane (mu: from the arrival rate of
// updates and the time a fold of their size takes), from zero; fl-top is
// one instance that goes to zero once no job has had a request for Idle.
func AppYAML(o AppOptions) string {
	o.defaults()
	maxBody := (uint64(o.Params)*4 + 1<<20 - 1) &^ (1<<20 - 1)
	return fmt.Sprintf(`# Spry's federated-learning aggregation app (docs/fl.md), sized for models of up to
# %d float32 parameters and %d updates in flight: spry fl config --params %d --uploads %d --leaves %d
app: %s
pool:
  memory: %dMiB        # updates in flight, a partial sum per leaf, two models
limits:
  maxBody: %dMiB       # one update: the model's float32s
functions:
  fl-top:
    builtin: fl-top
    timeout: 5m
    scale: {min: 0, max: 1, idle: %s}       # one instance: it holds the jobs
    env: {%s: %s%s}        # a job's ttl may not outlast the top
  fl-leaf:
    builtin: fl-leaf
    timeout: 5m
    scale: {min: 0, max: %d, slo: 2s, idle: 30s}   # sized from the updates' rate and size
chains:
  fl-job:
    route: /fl/{job}
    steps: [fl-top]
    methods: [GET, PUT, DELETE]
  fl-model:
    route: /fl/{job}/model
    steps: [fl-top]
    methods: [GET, POST]
    timeout: 5m
  fl-update:
    route: /fl/{job}/update
    steps: [fl-top, fl-leaf, fl-top]
    methods: [POST]
    timeout: 5m
`, o.Params, o.Uploads, o.Params, o.Uploads, o.MaxLeaves, o.Name,
		(o.PoolMemory()+1<<20-1)>>20, maxBody>>20,
		o.Idle, EnvMaxTTL, o.Idle, stateEnv(o.StateDir), o.MaxLeaves)
}

// stateEnv is the top's EnvStateDir setting in AppYAML's env map.
func stateEnv(dir string) string {
	if dir == "" {
		return ""
	}
	b, _ := json.Marshal(dir) // a YAML flow scalar
	return ", " + EnvStateDir + ": " + string(b)
}
