// Package baseline runs the benchmark's comparison architectures, each
// component a process of its own, around the very same sdk.Handler
// functions that Spry runs:
//
//	http     functions call each other directly over HTTP/1.1 keep-alive
//	grpc     the first function takes HTTP/1.1 from the client and the
//	         functions call each other over gRPC (protobuf messages)
//	knative  every function instance is an HTTP server behind its own
//	         sidecar (a queue-proxy: concurrency breaker, per-request
//	         metrics, timeout), and every hop goes through a broker (nginx,
//	         or a Go reverse proxy when nginx is not installed)
//
// A function process runs its handler on an sdk.Runner: the body that
// arrived over HTTP or gRPC is copied into the runner's buffer, which is the
// copy per hop these architectures pay. Chains are nested calls: a step
// calls the next and relays its answer back, as microservices do.
//
// The bench starts each process as `spry bench-proc` with its Config as JSON
// in the environment (EnvConfig); Main runs it until SIGTERM.
package baseline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// EnvConfig carries a process's Config, as JSON.
const EnvConfig = "SPRY_BENCH_PROC"

// Roles of a baseline process.
const (
	RoleFn      = "fn"
	RoleSidecar = "sidecar"
	RoleBroker  = "broker"
)

// Protocols a function process speaks to the next step.
const (
	ProtoHTTP    = "http"    // direct HTTP/1.1 to the next function
	ProtoKnative = "knative" // HTTP/1.1 through the broker and the next function's sidecar
	ProtoGRPC    = "grpc"    // gRPC to the next function
)

// ChainInfo is what a function process knows of a chain.
type ChainInfo struct {
	Name    string   `json:"name"`
	Route   string   `json:"route"`
	Steps   []string `json:"steps"`
	Headers []string `json:"headers,omitempty"`
	// A fan-out after the last step: the step calls every branch at once
	// (parallel calls), then Join on their answers, one after another in
	// one body. Hops number the steps, then the branches, then the join.
	Branches []string `json:"branches,omitempty"`
	Join     string   `json:"join,omitempty"`
}

// fnAt returns the function of hop ("" when there is none).
func (c *ChainInfo) fnAt(hop int) string {
	switch n := len(c.Steps); {
	case hop < 0:
		return ""
	case hop < n:
		return c.Steps[hop]
	case hop < n+len(c.Branches):
		return c.Branches[hop-n]
	case hop == n+len(c.Branches) && c.Join != "":
		return c.Join
	}
	return ""
}

// hops counts the chain's steps, branches and join.
func (c *ChainInfo) hops() int {
	n := len(c.Steps) + len(c.Branches)
	if c.Join != "" {
		n++
	}
	return n
}

// Config configures one baseline process.
type Config struct {
	Role string `json:"role"`

	// fn
	Function   string              `json:"function,omitempty"`
	Builtin    string              `json:"builtin,omitempty"`
	Proto      string              `json:"proto,omitempty"`
	HTTP       string              `json:"http,omitempty"` // HTTP/1.1 listen address
	GRPC       string              `json:"grpc,omitempty"` // gRPC listen address (proto grpc)
	Chains     []ChainInfo         `json:"chains,omitempty"`
	Next       map[string][]string `json:"next,omitempty"`   // function → its instances' addresses (http, grpc)
	Broker     string              `json:"broker,omitempty"` // knative: the broker's address
	BufferSize int                 `json:"bufferSize,omitempty"`
	MaxPayload int                 `json:"maxPayload,omitempty"` // larger than BufferSize: the runner's extent region
	Calls      int                 `json:"calls,omitempty"`      // handler runs at once

	// sidecar
	Listen      string        `json:"listen,omitempty"`
	Target      string        `json:"target,omitempty"`
	Concurrency int           `json:"concurrency,omitempty"` // 0: unlimited (Knative's default)
	QueueDepth  int           `json:"queueDepth,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`

	// broker (the Go one)
	Routes    map[string]string   `json:"routes,omitempty"`    // chain route → first function
	Upstreams map[string][]string `json:"upstreams,omitempty"` // function → sidecar addresses
	Sequences map[string][]string `json:"sequences,omitempty"` // chain route → its steps, run one after another by the broker
}

// Main runs the process described by the JSON in EnvConfig until SIGTERM
// or SIGINT.
func Main() error {
	var c Config
	if err := json.Unmarshal([]byte(os.Getenv(EnvConfig)), &c); err != nil {
		return fmt.Errorf("bench-proc: %s: %w", EnvConfig, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch c.Role {
	case RoleFn:
		return runFn(ctx, &c)
	case RoleSidecar:
		return runSidecar(ctx, &c)
	case RoleBroker:
		return runBroker(ctx, &c)
	case RoleHTTPFn:
		return runHTTPFn(ctx, &c)
	case RoleFLServer:
		return runFLServer(ctx, &c)
	case RoleFLLeaf:
		return runFLLeaf(ctx, &c)
	case RoleFLTop:
		return runFLTop(ctx, &c)
	}
	return fmt.Errorf("bench-proc: unknown role %q", c.Role)
}

// serveHTTP serves h on addr until ctx ends.
func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	s := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(slog.NewTextHandler(os.Stderr, nil), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- s.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		s.Close()
		return nil
	}
}

// transport is the HTTP client side of every baseline process: keep-alive
// HTTP/1.1 with room for as many idle connections as the load needs.
func transport() *http.Transport {
	return &http.Transport{
		Proxy: nil, MaxIdleConns: 0, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 2 * time.Minute,
		DisableCompression: true, ForceAttemptHTTP2: false, ResponseHeaderTimeout: time.Minute,
	}
}
