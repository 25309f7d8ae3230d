package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spry-dev/spry/bench"
	"github.com/spry-dev/spry/internal/bench/baseline"
)

// Modes that run the chain workload's step as other kinds of function
// (issue 13's measure), each against the same step written the way that
// kind's users write it:
//
//	spry-python     Spry, every step a python: function (the Python SDK, in place)
//	spry-http       Spry, every step an http: function: a plain Go net/http server
//	spry-lambda     Spry, every step a lambda: function built with aws-lambda-go
//	knative-python  the Knative-style local emulation: the same Python step as an
//	                http.server behind a sidecar each, sequenced by the broker
//	knative-http    the same, with the Go net/http server of spry-http
//
// The Go SDK's numbers are the skmsg (or uds) mode's; the knative mode is
// the Go SDK handler behind the same emulation. Only the chain workload
// has these steps.
const (
	ModeSpryPython    = "spry-python"
	ModeSpryHTTP      = "spry-http"
	ModeSpryLambda    = "spry-lambda"
	ModeKnativePython = "knative-python"
	ModeKnativeHTTP   = "knative-http"
)

// KindModes lists the modes of this file.
var KindModes = []string{ModeSpryPython, ModeSpryHTTP, ModeSpryLambda, ModeKnativePython, ModeKnativeHTTP}

// The Python step, as each kind's users write it.
const (
	pyStepSDK = `def handler(req, res):
    p = req.payload  # in the app's pool: changed in place
    n = int(bytes(p[:8])) + 1
    p[:8] = b"%08d" % n
`
	pyStepHTTP = `import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Step(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A fair server: the answer goes out in one write with Nagle off (the
    # defaults write head and body apart, and the body then waits 40 ms
    # for the delayed ACK of the head).
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def do_POST(self):
        body = bytearray(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        n = int(bytes(body[:8])) + 1
        body[:8] = b"%08d" % n
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 refuses a sidecar's burst of connections


Server(("127.0.0.1", int(os.environ["PORT"])), Step).serve_forever()
`
)

func chainOnly(mode string, w *bench.Workload) error {
	for _, f := range w.Functions {
		if f.Builtin != "chain-step" {
			return fmt.Errorf("bench: mode %s runs the chain workload's step only (function %s is %s)", mode, f.Name, f.Builtin)
		}
	}
	return nil
}

// python3 returns the interpreter both Python modes use: the first in
// $PATH that other uids can run (the node's instances run as the app's uid
// when root), else any.
func python3() (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, "python3")
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o001 == 0 {
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue
		}
		open := true
		for d := filepath.Dir(real); d != "/"; d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err != nil || fi.Mode()&0o001 == 0 {
				open = false
				break
			}
		}
		if open {
			return p, nil
		}
	}
	return exec.LookPath("python3")
}

// buildLambda builds the aws-lambda-go chain step from the source tree the
// bench runs in.
func buildLambda(dir string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/spry-dev/spry").Output()
	if err != nil {
		return "", fmt.Errorf("bench: %s builds an aws-lambda-go function: run spry bench from a checkout of spry (%v)", ModeSpryLambda, err)
	}
	bin := filepath.Join(dir, "bootstrap")
	cmd := exec.Command("go", "build", "-o", bin, "./internal/runtime/lambda/testfn")
	cmd.Dir = strings.TrimSpace(string(out))
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: build the Lambda function: %v\n%s", err, b)
	}
	return bin, nil
}

type kindMode struct{ name string }

func (m *kindMode) Name() string { return m.name }

func (m *kindMode) Start(ctx context.Context, w *bench.Workload, env Env) (System, error) {
	if err := chainOnly(m.name, w); err != nil {
		return nil, err
	}
	dir := filepath.Join(env.Dir, m.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var fn string
	switch m.name {
	case ModeSpryPython:
		if err := os.WriteFile(filepath.Join(dir, "step.py"), []byte(pyStepSDK), 0o644); err != nil {
			return nil, err
		}
		fn = "python: " + filepath.Join(dir, "step.py")
	case ModeSpryHTTP:
		fn = fmt.Sprintf("http: [%s, bench-proc, %s]", env.Exe, baseline.RoleHTTPFn)
	case ModeSpryLambda:
		bin, err := buildLambda(dir)
		if err != nil {
			return nil, err
		}
		fn = "lambda: " + bin + "\n    env: {EVENT: chain}"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "app: bench\n%sfunctions:\n", poolYAML(w, 512))
	for _, f := range w.Functions {
		conc := f.Concurrency
		if m.name == ModeSpryLambda {
			conc = 1 // a Lambda runtime takes one invocation at a time
		}
		fmt.Fprintf(&b, "  %s:\n    %s\n    instances: %d\n    concurrency: %d\n    timeout: 10m\n", f.Name, fn, f.Instances, conc)
	}
	b.WriteString("chains:\n")
	for _, c := range w.Chains {
		fmt.Fprintf(&b, "  %s:\n    route: %s\n    steps: [%s]\n    methods: [%s]\n    timeout: 10m\n", c.Name, c.Route, strings.Join(c.Steps, ", "), strings.Join(c.Methods, ", "))
	}
	n, err := startNode(env.Exe, dir, "spry node ("+m.name+")", b.String(), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := n.waitUp(ctx, 120*time.Second, func() error { _, err := fetchStatus(n.admin); return err }); err != nil {
		n.stop(5 * time.Second)
		return nil, fmt.Errorf("bench: %w", err)
	}
	return &spryRun{n}, nil
}

// Path: as Spry's, with one HTTP exchange (or a Lambda invocation) over
// loopback TCP between the instance's adapter and the function per hop for
// spry-http and spry-lambda.
func (m *kindMode) Path(c *bench.Chain) []Transfer {
	t := (&spryMode{transport: "skmsg"}).Path(c)
	if m.name == ModeSpryPython {
		return t
	}
	var out []Transfer
	for _, x := range t {
		out = append(out, x)
		if strings.HasPrefix(x.To, "fn:") && !x.Answer {
			prog := "prog:" + strings.TrimPrefix(x.To, "fn:")
			out = append(out, Transfer{From: x.To, To: prog, Medium: MediumTCP, Codec: CodecHTTP},
				Transfer{From: prog, To: x.To, Medium: MediumTCP, Codec: CodecHTTP, Answer: true})
		}
	}
	return out
}

type seqMode struct{ name string }

func (m *seqMode) Name() string { return m.name }

func (m *seqMode) Start(ctx context.Context, w *bench.Workload, env Env) (_ System, err error) {
	if err := chainOnly(m.name, w); err != nil {
		return nil, err
	}
	dir := filepath.Join(env.Dir, m.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &baselineRun{}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	var py string
	if m.name == ModeKnativePython {
		if py, err = python3(); err != nil {
			return nil, fmt.Errorf("bench: %s needs python3: %w", m.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "step.py"), []byte(pyStepHTTP), 0o644); err != nil {
			return nil, err
		}
	}
	n := 1
	for _, f := range w.Functions {
		n += 2 * f.Instances
	}
	ports, err := freePorts(n)
	if err != nil {
		return nil, err
	}
	brokerAddr, i := ports[0], 1
	upstreams := map[string][]string{}
	var waits []func() error
	for _, f := range w.Functions {
		for k := range f.Instances {
			fnAddr, side := ports[i], ports[i+1]
			i += 2
			port := fnAddr[strings.LastIndexByte(fnAddr, ':')+1:]
			var cmd *exec.Cmd
			if py != "" {
				cmd = exec.Command(py, filepath.Join(dir, "step.py"))
			} else {
				js, _ := json.Marshal(baseline.Config{Role: baseline.RoleHTTPFn})
				cmd = exec.Command(env.Exe, "bench-proc")
				cmd.Env = append(os.Environ(), baseline.EnvConfig+"="+string(js))
			}
			if cmd.Env == nil {
				cmd.Env = os.Environ()
			}
			cmd.Env = append(cmd.Env, "PORT="+port)
			tag := fmt.Sprintf("%s-%d", f.Name, k)
			ch, err := startChild(m.name+" "+tag, cmd, filepath.Join(dir, "fn-"+tag+".log"))
			if err != nil {
				return nil, err
			}
			r.children = append(r.children, ch)
			r.procs = append(r.procs, Proc{PID: ch.pid(), Role: RoleFunction, Component: "fn:" + f.Name})
			waits = append(waits, func() error { return waitListening(fnAddr, 30*time.Second, ch) })
			sc, _ := json.Marshal(baseline.Config{Role: baseline.RoleSidecar, Listen: side, Target: fnAddr, Timeout: 10 * time.Minute})
			scmd := exec.Command(env.Exe, "bench-proc")
			scmd.Env = append(os.Environ(), baseline.EnvConfig+"="+string(sc))
			sch, err := startChild("sidecar "+tag, scmd, filepath.Join(dir, "sidecar-"+tag+".log"))
			if err != nil {
				return nil, err
			}
			r.children = append(r.children, sch)
			r.procs = append(r.procs, Proc{PID: sch.pid(), Role: RoleSidecar, Component: "sidecar:" + f.Name})
			waits = append(waits, func() error { return waitListening(side, 30*time.Second, sch) })
			upstreams[f.Name] = append(upstreams[f.Name], side)
		}
	}
	seqs := map[string][]string{}
	for _, c := range w.Chains {
		seqs[c.Route] = c.Steps
	}
	bc, _ := json.Marshal(baseline.Config{Role: baseline.RoleBroker, Listen: brokerAddr, Upstreams: upstreams, Sequences: seqs})
	bcmd := exec.Command(env.Exe, "bench-proc")
	bcmd.Env = append(os.Environ(), baseline.EnvConfig+"="+string(bc))
	bch, err := startChild("go broker", bcmd, filepath.Join(dir, "broker.log"))
	if err != nil {
		return nil, err
	}
	r.children = append(r.children, bch)
	r.procs = append(r.procs, Proc{PID: bch.pid(), Role: RoleBroker, Component: "broker"})
	waits = append(waits, func() error { return waitListening(brokerAddr, 30*time.Second, bch) })
	r.addr = brokerAddr
	for _, wt := range waits {
		if err := wt(); err != nil {
			return nil, fmt.Errorf("bench: %s: %w", m.name, err)
		}
	}
	return r, nil
}

// Path: Knative's Sequence: client → broker, then for every step broker →
// sidecar → function and back to the broker, and the last reply from the
// broker to the client.
func (m *seqMode) Path(c *bench.Chain) []Transfer {
	t := []Transfer{{From: "client", To: "broker", Medium: MediumTCP, Codec: CodecHTTP}}
	for _, s := range c.Steps {
		t = append(t,
			Transfer{From: "broker", To: "sidecar:" + s, Medium: MediumTCP, Codec: CodecHTTP},
			Transfer{From: "sidecar:" + s, To: "fn:" + s, Medium: MediumTCP, Codec: CodecHTTP},
			Transfer{From: "fn:" + s, To: "sidecar:" + s, Medium: MediumTCP, Codec: CodecHTTP, Answer: true},
			Transfer{From: "sidecar:" + s, To: "broker", Medium: MediumTCP, Codec: CodecHTTP, Answer: true})
	}
	return append(t, Transfer{From: "broker", To: "client", Medium: MediumTCP, Codec: CodecHTTP, Answer: true})
}
