// Package http is the instance adapter of http: functions: an existing
// HTTP server (a Knative service's container process, an OpenFaaS
// function, any program that listens on $PORT) runs as a step of a chain
// without a line changed.
//
// The adapter is the instance: a Go SDK handler in the spry binary (`spry
// runtime http -- PROGRAM`). It starts PROGRAM with the environment the
// Knative runtime contract promises (PORT, K_SERVICE, K_CONFIGURATION,
// K_REVISION) and OpenFaaS's watchdog reads (port), waits until it
// listens (or its health path answers 2xx), and only then announces the
// instance ready. Each descriptor then becomes one HTTP/1.1 request on a
// keep-alive connection to the program: method, path, query, the chain's
// forwarded headers, content type and the payload as the body, written
// straight from the pool; the response's body is read straight into the
// same pool buffer, its status, content type and other headers (Location,
// Set-Cookie, …; not the connection's framing, Date or Server) into the
// buffer header, and the SDK forwards the buffer as for any step. That is one copy in and
// one out per hop (the kernel's, through the loopback socket), where a
// native function has none.
//
// The client is a small HTTP/1.1 implementation of its own over blocking
// sockets (no net/http, no netpoller hop, no per-request allocation): it
// speaks Content-Length and chunked bodies, HTTP/1.0 and
// Connection: close servers (it reconnects), and skips 1xx responses.
//
// The program dies with the adapter (parent-death signal), and the
// adapter exits when the program does, so the supervisor restarts both
// and answers what was in flight with 502, as for any crashed instance.
// A program that hangs is killed by the node's timeout like a hung
// handler: 504 for the request, a restart for the instance.
package http

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	goruntime "runtime"
	"strconv"
	"sync/atomic"
	"time"

	rt "github.com/spry-dev/spry/internal/runtime"
	"github.com/spry-dev/spry/sdk"
)

// Options configure the adapter.
type Options struct {
	Port         int           // the port the program listens on; 0: a free one, given in $PORT
	Health       string        // a path that answers 2xx once the program is ready; "": it accepts connections
	ReadyTimeout time.Duration // how long the program may take to get ready (0: as long as the node waits)
	Argv         []string      // the program and its arguments
}

// Main runs the adapter with command-line args: [flags] -- PROGRAM [ARGS].
func Main(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("spry runtime http", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.IntVar(&o.Port, "port", 0, "the port the program listens on (default: a free port, given to it in $PORT)")
	fs.StringVar(&o.Health, "health", "", "a path that answers 2xx once the program is ready (default: ready when it accepts connections)")
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", 0, "how long the program may take to get ready")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Argv = fs.Args()
	return Run(o)
}

// Run starts the program, waits until it is ready, and serves descriptors
// as an instance until the node stops it.
func Run(o Options) error {
	// The program gets its parent-death signal when the thread that
	// started it exits: this one never does (sdk.Run below keeps it).
	goruntime.LockOSThread()
	name := os.Getenv(sdk.EnvFunction)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("adapter", "http", "function", name)
	port := o.Port
	if port == 0 {
		p, err := rt.FreePort()
		if err != nil {
			return fmt.Errorf("find a free port: %w", err)
		}
		port = p
	} else if err := rt.PortFree(port); err != nil {
		return err
	}
	ps := strconv.Itoa(port)
	env := []string{
		"PORT=" + ps, "port=" + ps, // Knative; OpenFaaS's watchdog
		"K_SERVICE=" + name, "K_CONFIGURATION=" + name, "K_REVISION=" + name + "-00001",
	}
	child, err := rt.Start(o.Argv, env, "")
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + ps
	probe, what := rt.ProbeTCP(addr), "listen on "+addr+" ($PORT="+ps+")"
	if o.Health != "" {
		probe, what = rt.ProbeHTTP("http://"+addr+o.Health), "answer 2xx to GET "+o.Health+" on "+addr
	}
	if err := rt.Ready(child, rt.AdapterTimeout(o.ReadyTimeout), what, probe); err != nil {
		child.Stop(time.Second)
		return err
	}
	conc, _ := strconv.Atoi(os.Getenv(sdk.EnvConcurrency))
	c := newClient(name, port, max(conc, 1))
	var stopping atomic.Bool
	go func() {
		<-child.Done()
		if stopping.Load() {
			return
		}
		// In-flight requests fail (502) with the connection; the node
		// restarts this instance, and the program with it.
		log.Error("the function's program exited; stopping the instance", "why", child.Err())
		os.Exit(1)
	}()
	err = sdk.Run(c.handle)
	stopping.Store(true)
	child.Stop(5 * time.Second)
	return err
}
