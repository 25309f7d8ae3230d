// Package lambda is the instance adapter of lambda: functions: an AWS
// Lambda function — built with aws-lambda-go (lambda.Start), or any custom
// runtime's bootstrap — runs as a step of a chain unchanged.
//
// The adapter is the instance (`spry runtime lambda -- PROGRAM`): it serves
// the Lambda Runtime API (2018-06-01) on a loopback port and starts PROGRAM
// with AWS_LAMBDA_RUNTIME_API pointing at it, and the environment a Lambda
// runtime expects. The instance is ready when the program first asks for an
// invocation (its init is done); an init error it posts, or its exit during
// init, is the instance's startup error.
//
// Each descriptor is one invocation: GET …/invocation/next answers with the
// event — the chain's payload as is (event: payload), or an API Gateway
// HTTP API (v2) request event built from the request (event: http) — and
// the headers Lambda-Runtime-Aws-Request-Id, -Deadline-Ms (the earlier of
// the chain's deadline and the function's timeout), -Invoked-Function-Arn
// and -Trace-Id. The program's POST …/response body is read straight into
// the pool buffer and passed on (with event: http, its statusCode, Content-
// Type header and body, base64 or not, become the step's); POST …/error is
// answered with the Lambda error shape ({"errorMessage", "errorType"}) as
// application/json and status 502, which ends the chain.
//
// A Lambda runtime takes one invocation at a time: concurrency is 1, and a
// function scales with instances.
package lambda

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync/atomic"
	"time"

	rt "github.com/spry-dev/spry/internal/runtime"
	"github.com/spry-dev/spry/sdk"
)

// Event shapes.
const (
	EventPayload = "payload"
	EventHTTP    = "http"
)

// Options configure the adapter.
type Options struct {
	Event        string // EventPayload or EventHTTP
	Handler      string // $_HANDLER for custom runtimes
	ReadyTimeout time.Duration
	Argv         []string
}

// Main runs the adapter with command-line args: [flags] -- PROGRAM [ARGS].
func Main(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("spry runtime lambda", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.StringVar(&o.Event, "event", EventPayload, "the event shape: payload (the chain's payload) or http (an API Gateway v2 request)")
	fs.StringVar(&o.Handler, "handler", "", "the handler name, for $_HANDLER")
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", 0, "how long the function's init may take")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Argv = fs.Args()
	if o.Event != EventPayload && o.Event != EventHTTP {
		return fmt.Errorf("--event %q: want payload or http", o.Event)
	}
	return Run(o)
}

// invocation is one descriptor's trip through the runtime.
type invocation struct {
	id       string
	event    []byte
	deadline time.Time
	out      []byte // the pool buffer's room for the response
	done     chan result
}

type result struct {
	n      int    // response bytes in out
	errMsg []byte // the error document, for an /error
	err    error  // the response could not be taken
}

// server is the Runtime API.
type server struct {
	name    string
	arn     string
	next    chan *invocation
	current atomic.Pointer[invocation]
	polled  chan struct{} // closed at the first /next: init is done
	initErr chan []byte
	seq     atomic.Uint64
}

// Run starts the program, serves the Runtime API to it, and serves
// descriptors as an instance until the node stops it.
func Run(o Options) error {
	goruntime.LockOSThread() // the program's parent-death signal follows this thread
	name := os.Getenv(sdk.EnvFunction)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("adapter", "lambda", "function", name)
	s := &server{
		name: name, arn: "arn:aws:lambda:spry-local:000000000000:function:" + name,
		next: make(chan *invocation), polled: make(chan struct{}), initErr: make(chan []byte, 1),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("runtime API: %w", err)
	}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	dir := ""
	if len(o.Argv) > 0 {
		dir = filepath.Dir(o.Argv[0])
	}
	env := []string{
		"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String(),
		"AWS_LAMBDA_FUNCTION_NAME=" + name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + name,
		"AWS_LAMBDA_LOG_STREAM_NAME=spry/" + os.Getenv("SPRY_ID"),
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"AWS_REGION=spry-local", "AWS_DEFAULT_REGION=spry-local",
		"AWS_EXECUTION_ENV=spry",
		"LAMBDA_TASK_ROOT=" + dir,
		"_HANDLER=" + o.Handler,
	}
	child, err := rt.Start(o.Argv, env, "")
	if err != nil {
		return err
	}
	var limit <-chan time.Time
	ready := rt.AdapterTimeout(o.ReadyTimeout)
	if ready > 0 {
		t := time.NewTimer(ready)
		defer t.Stop()
		limit = t.C
	}
	select {
	case <-s.polled:
	case msg := <-s.initErr:
		child.Stop(time.Second)
		return fmt.Errorf("the function failed its init: %s", msg)
	case <-child.Done():
		select {
		case msg := <-s.initErr:
			return fmt.Errorf("the function failed its init: %s", msg)
		default:
		}
		return fmt.Errorf("the function exited during init (%v) before asking for an invocation", child.Err())
	case <-limit:
		child.Stop(time.Second)
		return fmt.Errorf("the function did not finish its init within %s (it never asked GET /2018-06-01/runtime/invocation/next)", ready.Round(time.Millisecond))
	}
	var stopping atomic.Bool
	go func() {
		<-child.Done()
		if stopping.Load() {
			return
		}
		log.Error("the function's runtime exited; stopping the instance", "why", child.Err())
		os.Exit(1)
	}()
	timeout := time.Duration(0)
	if ms, err := strconv.Atoi(os.Getenv(sdk.EnvTimeout)); err == nil && ms > 0 {
		timeout = time.Duration(ms) * time.Millisecond
	}
	h := func(req *sdk.Request, res *sdk.Response) error { return s.invoke(req, res, o.Event, timeout) }
	err = sdk.Run(h)
	stopping.Store(true)
	child.Stop(5 * time.Second)
	return err
}

const api = "/2018-06-01/runtime"

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api+"/invocation/next", s.serveNext)
	mux.HandleFunc("POST "+api+"/invocation/{id}/response", s.serveResponse)
	mux.HandleFunc("POST "+api+"/invocation/{id}/error", s.serveError)
	mux.HandleFunc("POST "+api+"/init/error", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		select {
		case s.initErr <- b:
		default:
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"status":"OK"}`)
	})
	return mux
}

func (s *server) serveNext(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.polled:
	default:
		close(s.polled)
	}
	var inv *invocation
	select {
	case inv = <-s.next:
	case <-r.Context().Done():
		return
	}
	s.current.Store(inv)
	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.deadline.UnixMilli(), 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", s.arn)
	h.Set("Lambda-Runtime-Trace-Id", "Root=1-00000000-"+inv.id+";Sampled=0")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(inv.event)))
	w.Write(inv.event)
}

// take returns the invocation id names, if it is the current one.
func (s *server) take(w http.ResponseWriter, r *http.Request) *invocation {
	inv := s.current.Load()
	if inv == nil || inv.id != r.PathValue("id") || !s.current.CompareAndSwap(inv, nil) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"errorMessage":"no such invocation in progress","errorType":"InvalidRequestID"}`)
		return nil
	}
	return inv
}

func (s *server) serveResponse(w http.ResponseWriter, r *http.Request) {
	inv := s.take(w, r)
	if inv == nil {
		return
	}
	// Straight into the pool buffer: the one copy out of the function.
	n, err := io.ReadFull(r.Body, inv.out)
	var res result
	switch err {
	case io.ErrUnexpectedEOF, io.EOF:
		res.n = n
	case nil:
		var one [1]byte
		if m, _ := r.Body.Read(one[:]); m > 0 {
			res.err = sdk.Errorf(502, "spry: the Lambda function's response is larger than a pool buffer (%d bytes; raise pool.bufferSize)", len(inv.out))
		} else {
			res.n = n
		}
	default:
		res.err = fmt.Errorf("spry: reading the Lambda function's response: %w", err)
	}
	if res.err != nil {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	} else {
		w.WriteHeader(http.StatusAccepted)
	}
	io.WriteString(w, `{"status":"OK"}`)
	inv.done <- res
}

func (s *server) serveError(w http.ResponseWriter, r *http.Request) {
	inv := s.take(w, r)
	if inv == nil {
		return
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	var doc struct {
		ErrorMessage string `json:"errorMessage"`
		ErrorType    string `json:"errorType"`
	}
	if json.Unmarshal(b, &doc) != nil || (doc.ErrorMessage == "" && doc.ErrorType == "") {
		doc.ErrorMessage = string(b)
		doc.ErrorType = r.Header.Get("Lambda-Runtime-Function-Error-Type")
		if doc.ErrorType == "" {
			doc.ErrorType = "Unhandled"
		}
		b, _ = json.Marshal(doc)
	}
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"status":"OK"}`)
	inv.done <- result{errMsg: b}
}

// invoke is the step: one invocation per descriptor.
func (s *server) invoke(req *sdk.Request, res *sdk.Response, shape string, timeout time.Duration) error {
	deadline := time.Now().Add(req.Remaining())
	if timeout > 0 && time.Now().Add(timeout).Before(deadline) {
		deadline = time.Now().Add(timeout)
	}
	id := fmt.Sprintf("%016x-%08x", req.ID(), s.seq.Add(1))
	inv := &invocation{id: id, deadline: deadline, out: res.Buffer(), done: make(chan result, 1)}
	if shape == EventHTTP {
		ev, err := httpEvent(req, id)
		if err != nil {
			return err
		}
		inv.event = ev
	} else {
		inv.event = req.Payload() // written to the runtime from the pool
	}
	s.next <- inv
	r := <-inv.done
	switch {
	case r.err != nil:
		return r.err
	case r.errMsg != nil:
		b := res.Buffer()
		n := copy(b, r.errMsg)
		res.SetLen(n)
		res.SetContentType("application/json")
		res.SetStatus(502)
		return nil
	}
	if shape == EventHTTP {
		return httpResult(res, r.n)
	}
	res.SetLen(r.n)
	res.SetContentType("application/json")
	return nil
}
