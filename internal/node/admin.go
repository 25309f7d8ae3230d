package node

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spry-dev/spry/internal/cluster/peer"
	"github.com/spry-dev/spry/internal/config"
)

// Status is what GET /v1/status returns: the node and everything it runs.
type Status struct {
	Node   NodeStatus    `json:"node"`
	Apps   []AppStatus   `json:"apps"`
	Events *EventsStatus `json:"events,omitempty"` // activations, their store, the MQTT broker
}

// NodeStatus describes the node itself.
type NodeStatus struct {
	PID        int     `json:"pid"`
	Listen     string  `json:"listen"`
	TLS        bool    `json:"tls,omitempty"` // the gateway serves TLS on Listen
	Admin      string  `json:"admin"`
	Uptime     float64 `json:"uptimeSeconds"`
	Version    string  `json:"version"`
	RuntimeDir string  `json:"runtimeDir"`
	// EBPF says whether the node's eBPF data path is loaded, and how many
	// descriptors it refused (across apps, or naming no instance).
	EBPF EBPFStatus `json:"ebpf"`
	// Links are the node's links to the other nodes of its cluster.
	Links []peer.LinkStatus `json:"links,omitempty"`
}

// EBPFStatus is the node's eBPF data path.
type EBPFStatus struct {
	Loaded  bool   `json:"loaded"`
	Reason  string `json:"reason,omitempty"` // why it is not loaded, when an app asked for it
	Refused uint64 `json:"refused"`
}

// AppStatus is one app.
type AppStatus struct {
	Name      string           `json:"name"`
	Transport string           `json:"transport"`
	UID       int              `json:"uid"`
	Pool      PoolStatus       `json:"pool"`
	Requests  RequestStatus    `json:"requests"`
	Functions []FunctionStatus `json:"functions"`
	Chains    []ChainStatus    `json:"chains"`
}

// PoolStatus is an app's shared-memory pool.
type PoolStatus struct {
	Buffers    uint32 `json:"buffers"`
	Free       int    `json:"free"`
	BufferSize uint32 `json:"bufferSize"`
	Bytes      int64  `json:"bytes"`
	AllocFails uint64 `json:"allocFails"`
	Reclaimed  uint64 `json:"reclaimed"`
	Stale      uint64 `json:"stale"`
	// The large-extent region: its size (pool.memory less the buffers),
	// what payloads larger than a buffer take of it now, and the claims
	// that found no room (503s).
	ExtentBytes uint64 `json:"extentBytes"`
	ExtentUsed  uint64 `json:"extentUsed"`
	ExtentFails uint64 `json:"extentFails"`
	MaxBody     uint64 `json:"maxBody"`
}

// RequestStatus are an app's gateway counters.
type RequestStatus struct {
	Inflight  int    `json:"inflight"`
	Limit     int    `json:"limit"`
	Admitted  uint64 `json:"admitted"`
	Answered  uint64 `json:"answered"`
	Failed    uint64 `json:"failed"`
	Timeouts  uint64 `json:"timeouts"`
	Rejected  uint64 `json:"rejected"`
	Abandoned uint64 `json:"abandoned"`
	// LateInputs are join inputs dropped: late (the join had run),
	// duplicate, or of a request already answered.
	LateInputs uint64 `json:"lateInputs"`
	// Transits and TransitNs: the hops from one step to the next inside
	// the answered requests' chains, and their time in all (from the
	// buffers' hop stamps: a step's end to the next step's start).
	Transits  uint64 `json:"transits"`
	TransitNs uint64 `json:"transitNs"`
}

// FunctionStatus is one function and its instances.
type FunctionStatus struct {
	Name        string           `json:"name"`
	Kind        string           `json:"kind"`
	Source      string           `json:"source"`
	Concurrency int              `json:"concurrency"`
	Scale       ScaleStatus      `json:"scale"`
	Limits      *LimitsStatus    `json:"limits,omitempty"`
	Instances   []InstanceStatus `json:"instances"`
	// Remote is the function's instances on other nodes (a cluster node).
	Remote *RemoteStatus `json:"remote,omitempty"`
}

// LimitsStatus are the kernel's limits on each instance of a function.
type LimitsStatus struct {
	MemoryBytes uint64  `json:"memoryBytes,omitempty"`
	CPU         float64 `json:"cpu,omitempty"`
}

// ChainStatus is one chain.
type ChainStatus struct {
	Name    string   `json:"name"`
	Route   string   `json:"route"`
	Steps   []string `json:"steps"`
	Methods []string `json:"methods"`
	Timeout string   `json:"timeout"`
}

// Version is the spry version the admin API reports (set by the CLI).
var Version = "dev"

// Status reports the node's state now.
func (n *Node) Status() Status {
	s := Status{Node: NodeStatus{
		PID: os.Getpid(), Listen: n.httpLn.Addr().String(), Admin: n.adminLn.Addr().String(), TLS: n.certs != nil,
		Uptime: time.Since(n.started).Seconds(), Version: Version, RuntimeDir: n.runDir,
		Links: n.Links(),
	}, Events: n.eventsStatus()}
	if n.bpf != nil {
		s.Node.EBPF = EBPFStatus{Loaded: true, Refused: n.bpf.Refused()}
	} else if n.bpfErr != nil {
		s.Node.EBPF.Reason = n.bpfErr.Error()
	}
	for _, a := range n.serving() {
		p := a.pool
		st := a.gw.Stats()
		as := AppStatus{
			Name: a.cfg.Name, Transport: a.transport, UID: a.uid,
			Pool: PoolStatus{
				Buffers: p.Buffers(), Free: p.FreeBuffers(), BufferSize: p.BufferSize(), Bytes: p.Layout().Size(),
				AllocFails: p.AllocFails(), Reclaimed: p.Reclaimed(), Stale: p.Stale(),
				ExtentBytes: p.ExtentBytes(), ExtentUsed: p.ExtentUsed(), ExtentFails: p.ExtentFails(),
				MaxBody: a.cfg.Limits.MaxBody,
			},
			Requests: RequestStatus{
				Inflight: a.gw.Inflight(), Limit: a.cfg.Limits.Inflight,
				Admitted: st.Requests.Load(), Answered: st.Replies.Load(), Failed: st.Failed.Load(),
				Timeouts: st.Timeouts.Load(), Rejected: st.Rejected.Load(), Abandoned: st.Abandoned.Load(),
				LateInputs: st.LateInputs.Load(),
				Transits:   st.Transits.Load(), TransitNs: st.TransitNs.Load(),
			},
		}
		if as.UID < 0 {
			as.UID = os.Getuid()
		}
		for _, f := range a.fns {
			fs := FunctionStatus{Name: f.cfg.Name, Kind: f.cfg.Kind.String(), Source: source(f.cfg), Concurrency: f.cfg.Concurrency}
			if l := f.cfg.Limits; l != (config.FnLimits{}) {
				fs.Limits = &LimitsStatus{MemoryBytes: l.Memory, CPU: l.CPU}
			}
			if sc := f.scaler(); sc != nil {
				fs.Scale = sc.status()
			}
			fs.Scale.Ready = 0 // as of now, not as of the last decision
			for _, in := range f.insts {
				is := in.status()
				if is.State == "ready" {
					fs.Scale.Ready++
				}
				fs.Instances = append(fs.Instances, is)
			}
			fs.Remote = f.remoteState()
			as.Functions = append(as.Functions, fs)
		}
		for _, c := range a.cfg.Chains {
			cs := ChainStatus{Name: c.Name, Route: c.Route, Methods: c.Methods, Timeout: c.Timeout.String()}
			for _, i := range c.Steps {
				cs.Steps = append(cs.Steps, a.cfg.Functions[i].Name)
			}
			as.Chains = append(as.Chains, cs)
		}
		s.Apps = append(s.Apps, as)
	}
	return s
}

func source(f *config.Function) string {
	switch f.Kind {
	case config.Builtin:
		return f.Builtin
	case config.Go:
		return f.Go
	case config.Exec:
		return f.Exec[0]
	case config.Python:
		return f.Python
	case config.HTTP:
		return f.HTTP[0]
	case config.Lambda:
		return f.Lambda[0]
	}
	return ""
}

// adminHandler serves the admin API:
//
//	GET /v1/status   the node, its apps, functions, instances and chains
//	GET /v1/logs     a function's recent output, and more as it comes (logs.go)
//	GET /metrics     Prometheus metrics: chains, functions, pools, the daemon
//	PUT /v1/apps     deploy an app (spry deploy; deploy.go), DELETE /v1/apps/{name}
//	GET /healthz     200 while the node runs
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{n}, eventsCollector{n}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "spry"}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelError)}))
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(n.Status())
	})
	mux.HandleFunc("GET /v1/logs", n.serveLogs)
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		res, err := n.Reload(r.Context())
		if err != nil {
			n.log.Error("reload failed", "err", err)
			code := http.StatusUnprocessableEntity
			if errors.Is(err, ErrNoReload) {
				code = http.StatusNotImplemented
			}
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		n.log.Info("reloaded", "apps", res.String(), "took", res.Took)
		json.NewEncoder(w).Encode(res)
	})
	n.eventsRoutes(mux)
	n.serveDeploy(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"no such admin endpoint; try GET /v1/status or /metrics"}`, http.StatusNotFound)
	})
	if n.cfg.AdminToken == "" {
		return mux
	}
	want := sha256.Sum256([]byte("Bearer " + n.cfg.AdminToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if r.URL.Path != "/healthz" && subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="spry admin"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"the admin API wants Authorization: Bearer <token> (spry verbs send $SPRY_ADMIN_TOKEN)"}` + "\n"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}
