package main

// End-to-end tests of the kinds beyond Go: python: functions on the Python
// SDK, and existing HTTP servers as http: functions, through the real
// binary.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// python3 returns a python3 the instances can run (as the apps' uids when
// the tests run as root): it skips with the reason when there is none, or
// fails when SPRY_REQUIRE_PYTHON=1.
func python3(t testing.TB) string {
	t.Helper()
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, "python3")
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o001 == 0 {
			continue
		}
		if os.Geteuid() == 0 && !reachable(p) {
			continue
		}
		return p
	}
	msg := "no python3 in $PATH that other uids can run (Debian: apt-get install python3)"
	if os.Getenv("SPRY_REQUIRE_PYTHON") == "1" {
		t.Fatal(msg + "; SPRY_REQUIRE_PYTHON=1")
	}
	t.Skip(msg)
	return ""
}

// reachable reports whether every directory above p is open to others.
func reachable(p string) bool {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return false
	}
	for d := filepath.Dir(real); d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode()&0o001 == 0 {
			return false
		}
	}
	return true
}

// openDir makes a directory for function files that the apps' uids can
// read.
func openDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	httpFnOnce sync.Once
	httpFnPath string
	httpFnErr  error
)

// httpFn builds testdata/httpfn, a plain net/http server, once.
func httpFn(t testing.TB) string {
	t.Helper()
	httpFnOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spry-httpfn-")
		if err != nil {
			httpFnErr = err
			return
		}
		os.Chmod(dir, 0o755)
		httpFnPath = filepath.Join(dir, "httpfn")
		out, err := exec.Command("go", "build", "-o", httpFnPath, "./testdata/httpfn").CombinedOutput()
		if err != nil {
			httpFnErr = fmt.Errorf("build httpfn: %v\n%s", err, out)
		}
	})
	if httpFnErr != nil {
		t.Fatal(httpFnErr)
	}
	return httpFnPath
}

// pyStep is a Python SDK function: prefixes the payload into a fresh
// buffer; ?ms=N sleeps first; ?raise=1 raises.
const pyStep = `import time
import spry

def handler(req, res):
    q = dict(kv.split("=", 1) for kv in req.query.split("&") if "=" in kv)
    if "raise" in q:
        raise ValueError("no such thing: " + bytes(req.payload).decode())
    if "ms" in q:
        time.sleep(int(q["ms"]) / 1000)
    res.write(b"py(")
    res.write(req.payload)
    res.write(b")")
`

// pyServer is an http.server function: wraps the body in brackets.
const pyServer = `import os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if "ms=" in self.path:
            time.sleep(int(self.path.split("ms=")[1].split("&")[0]) / 1000)
        out = b"[" + body + b"]"
        self.send_response(200)
        self.send_header("Content-Type", "text/x-bracketed")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`

func polyglotConfig(t *testing.T, extra string) string {
	py := python3(t)
	dir := openDir(t)
	writeFile(t, dir, "step.py", pyStep)
	writeFile(t, dir, "server.py", pyServer)
	return writeFile(t, dir, "spry.yaml", fmt.Sprintf(`
app: poly
functions:
  upper: {builtin: upper}
  py: {python: ./step.py, concurrency: 4}
  pyhttp: {http: [%s, ./server.py], concurrency: 4}
  gohttp: {http: %s, health: /_/health, concurrency: 4, timeout: 2s}
  rev: {builtin: reverse}
chains:
  mixed: {route: /mixed, steps: [upper, py, pyhttp, gohttp, rev], methods: [POST]}
  py: {route: /py, steps: [py], methods: [POST]}
  pyhttp: {route: /pyhttp, steps: [pyhttp], methods: [POST]}
  gohttp: {route: /gohttp, steps: [gohttp], methods: [GET, POST], headers: [X-Test], timeout: 1s}
%s`, py, httpFn(t), extra))
}

// A chain of Go, Python and HTTP steps (a Python http.server and a Go
// net/http server) answers 64 concurrent keep-alive clients correctly, and
// every buffer comes back.
func TestPolyglotChain(t *testing.T) {
	for _, tr := range []string{"uds", "skmsg"} {
		t.Run(tr, func(t *testing.T) {
			if tr == "skmsg" {
				if err := bpfAvailable(); err != nil {
					t.Skip(err)
				}
			}
			n := startNode(t, "--transport", tr, "-f", polyglotConfig(t, ""))
			load(t, n, 64, 2000, "/mixed", func(i int) (string, []string, func(int, string) error) {
				in := fmt.Sprintf("req %d", i)
				want := reverse(strings.ToUpper("[py(" + strings.ToUpper(in) + ")]"))
				return in, nil, func(status int, got string) error {
					if status != 200 || got != want {
						return fmt.Errorf("got %d %q, want 200 %q", status, got, want)
					}
					return nil
				}
			})
			n.waitFreeBuffers("poly")
			// What the HTTP function sees of the request.
			c := client(1)
			req, _ := http.NewRequest("GET", "http://"+n.http+"/gohttp?meta=1&b=2", nil)
			req.Header.Set("X-Test", "forwarded")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := "GET\n/gohttp\nmeta=1&b=2\nforwarded\ngohttp"; resp.StatusCode != 200 || string(body) != want {
				t.Errorf("GET /gohttp?meta=1&b=2: %d %q, want %q", resp.StatusCode, body, want)
			}
			if h := resp.Header; h.Get("X-From-Function") != "gohttp" || strings.Join(h.Values("Set-Cookie"), ";") != "a=1;b=2" {
				t.Errorf("the function's response headers did not reach the client: %v", h)
			}
			st, b, err := n.post(c, "/gohttp?status=418", "x")
			if err != nil || st != 418 || b != "status 418" {
				t.Errorf("status from the function: %d %q %v, want 418", st, b, err)
			}
		})
	}
}

// Failures of python: and http: instances are answered and repaired as for
// native ones: a raise is a 502 with the message; kill -9 of the Python
// instance or of the HTTP function's process mid-flight is a 502 and a
// restart; a hanging HTTP function is a 504 and a restart; nothing leaks.
func TestPolyglotFailures(t *testing.T) {
	n := startNode(t, "--transport", "uds", "-f", polyglotConfig(t, ""))
	c := client(8)
	if s, b, err := n.post(c, "/py?raise=1", "gold"); err != nil || s != 502 || b != "ValueError: no such thing: gold" {
		t.Errorf("a raising handler: %d %q %v, want 502 with its message", s, b, err)
	}
	// Its traceback is in the function's log.
	out, err := exec.Command(spryBin, "logs", "py", "--admin", n.admin, "--tail", "50").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ValueError: no such thing: gold") || !strings.Contains(string(out), "Traceback") {
		t.Errorf("spry logs py: %v\n%s", err, out)
	}
	if out, err := exec.Command(spryBin, "logs", "nope", "--admin", n.admin).CombinedOutput(); err == nil || !strings.Contains(string(out), "no function nope") {
		t.Errorf("spry logs nope: %v\n%s", err, out)
	}

	killMidFlight := func(fn, route string, pid func(pid int) int) {
		t.Helper()
		in := findFunction(t, findApp(t, n.mustStatus(), "poly"), fn).Instances[0]
		results := make(chan int, 4)
		for range 4 {
			go func() {
				s, _, _ := n.post(c, route, "x")
				results <- s
			}()
		}
		deadline := time.Now().Add(10 * time.Second)
		for findFunction(t, findApp(t, n.mustStatus(), "poly"), fn).Instances[0].Inflight == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no request reached the instance", fn)
			}
			time.Sleep(10 * time.Millisecond)
		}
		victim := pid(in.PID)
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		got502 := 0
		for range 4 {
			if s := <-results; s == 502 {
				got502++
			} else if s != 200 {
				t.Errorf("%s: a request got %d", fn, s)
			}
		}
		if got502 == 0 {
			t.Errorf("%s: no request answered 502 after kill -9 of %d", fn, victim)
		}
		for {
			now := findFunction(t, findApp(t, n.mustStatus(), "poly"), fn).Instances[0]
			if now.State == "ready" && now.PID != in.PID {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not restarted: %+v", fn, now)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if s, b, err := n.post(c, strings.Split(route, "?")[0], "ok"); err != nil || s != 200 {
			t.Errorf("%s after restart: %d %q %v", fn, s, b, err)
		}
	}
	killMidFlight("py", "/py?ms=3000", func(pid int) int { return pid })
	killMidFlight("pyhttp", "/pyhttp?ms=3000", childOf)

	// A hung HTTP function: 504 at the chain's deadline, and the instance
	// is restarted once it ran past its timeout.
	before := findFunction(t, findApp(t, n.mustStatus(), "poly"), "gohttp").Instances[0]
	if s, _, err := n.post(c, "/gohttp?hang=1", "x"); err != nil || s != 504 {
		t.Errorf("hung function: %d %v, want 504", s, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		now := findFunction(t, findApp(t, n.mustStatus(), "poly"), "gohttp").Instances[0]
		if now.State == "ready" && now.PID != before.PID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hung function not restarted: %+v", now)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s, b, err := n.post(c, "/gohttp", "fine"); err != nil || s != 200 || b != "FINE" {
		t.Errorf("after the restart: %d %q %v", s, b, err)
	}
	n.waitFreeBuffers("poly")
}

// childOf returns the one child process of pid (the adapter's program).
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, _ := strconv.Atoi(f[0])
			return c
		}
	}
	// The child may have been forked by another thread of the adapter.
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range ents {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, e.Name()))
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, _ := strconv.Atoi(f[0])
			return c
		}
	}
	return -1
}

// upFails runs spry up on cfg and returns its output once it exits, which
// it must, with an error.
func upFails(t *testing.T, cfg string, args ...string) string {
	t.Helper()
	cmd := exec.Command(spryBin, append([]string{"up", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "-f", cfg}, args...)...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Minute): // a hang, not a slow machine: see TestPolyglotBadInput
		cmd.Process.Kill()
		<-done
		t.Fatalf("spry up did not exit\n%s", out)
	}
	if err == nil {
		t.Fatalf("spry up succeeded, want a startup error\n%s", out)
	}
	// Nothing it started is left: no process runs a file of this config.
	procs, _ := exec.Command("pgrep", "-f", filepath.Dir(cfg)).Output()
	if s := strings.TrimSpace(string(procs)); s != "" {
		t.Errorf("processes left running: %s", s)
	}
	return string(out)
}

// Bad functions are startup errors that name the function and say what is
// wrong, and leave nothing running.
//
// A function that fails at start must fail before the ready timeout
// says it never became ready: its interpreter's start is the machine's
// (seconds for python3 at nice 19 on a saturated machine), so those cases
// run with a ready timeout no start reaches; "never ready" has its own.
func TestPolyglotBadInput(t *testing.T) {
	py := python3(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	slowStart := []string{"--ready-timeout", "4m"}
	for _, c := range []struct {
		name, file, content, fn string
		args                    []string
		want                    []string
	}{
		{"syntax error", "bad.py", "def handler(req, res)\n    pass\n", "{python: ./bad.py}", slowStart,
			[]string{"function bad: ", "instance exited before it was ready", "bad.py\", line 1", "SyntaxError"}},
		{"no handler", "bad.py", "def handle(req, res):\n    pass\n", "{python: ./bad.py}", slowStart,
			[]string{"function bad: ", "defines no function handler(req, res)"}},
		{"never ready", "bad.py", "import time\ntime.sleep(60)\n", "{http: [" + py + ", ./bad.py]}", []string{"--ready-timeout", "3s"},
			[]string{"function bad: ", "did not become ready within", "listen on 127.0.0.1:"}},
		{"exits at start", "bad.py", "raise SystemExit('no config here')\n", "{http: [" + py + ", ./bad.py]}", slowStart,
			[]string{"function bad: ", "exited before it was ready", "no config here"}},
		{"port in use", "bad.py", "import time\ntime.sleep(60)\n", fmt.Sprintf("{http: [%s, ./bad.py], port: %d}", py, busy), nil,
			[]string{"function bad: ", fmt.Sprintf("port %d is already in use", busy)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := openDir(t)
			writeFile(t, dir, c.file, c.content)
			cfg := writeFile(t, dir, "spry.yaml", "app: bad\nfunctions:\n  bad: "+c.fn+"\nchains:\n  c: {route: /c, steps: [bad]}\n")
			out := upFails(t, cfg, c.args...)
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	// A python: function on a transport Python cannot use is a config
	// error naming both.
	dir := openDir(t)
	writeFile(t, dir, "ok.py", "def handler(req, res):\n    pass\n")
	cfg := writeFile(t, dir, "spry.yaml", "app: bad\ntransport: poll\nfunctions:\n  fn: {python: ./ok.py}\nchains:\n  c: {route: /c, steps: [fn]}\n")
	out, err := exec.Command(spryBin, "up", "--check", "-f", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "transport: function fn is a python: function, which runs on skmsg or uds, not poll") {
		t.Errorf("--check on python + poll: %v\n%s", err, out)
	}
}

// A python: function with requirements: runs in a virtualenv spry makes
// (python3 -m venv, pip install -r), here installing a package from a
// local directory (no index needed).
func TestPythonRequirements(t *testing.T) {
	py := python3(t)
	if exec.Command(py, "-c", "import venv, ensurepip").Run() != nil {
		if os.Getenv("SPRY_REQUIRE_PYTHON") == "1" {
			t.Fatal("python3 has no venv (Debian: apt-get install python3-venv)")
		}
		t.Skip("python3 has no venv (Debian: apt-get install python3-venv)")
	}
	dir := openDir(t)
	writeFile(t, dir, "requirements.txt", "--no-index\n"+filepath.Join(repoRoot(t), "sdk", "python")+"\n")
	writeFile(t, dir, "fn.py", `import sys, importlib.metadata

def handler(req, res):
    res.write(("venv" if sys.prefix != sys.base_prefix else "system") + " " + importlib.metadata.version("spry"))
`)
	cfg := writeFile(t, dir, "spry.yaml", "app: req\nfunctions:\n  fn: {python: ./fn.py, requirements: ./requirements.txt}\nchains:\n  c: {route: /c, steps: [fn]}\n")
	// The node comes up once the virtualenv is made: python3 -m venv
	// (ensurepip) and pip install take ~4 s of CPU, 16 s alone here, but
	// 2 min at nice 19 on a machine at load 44, past startNode's 90 s.
	n := startNodeWithin(t, 5*time.Minute, "--transport", "uds", "--cache-dir", openDir(t), "-f", cfg)
	if s, b, err := n.post(client(1), "/c", ""); err != nil || s != 200 || b != "venv 0.1.0" {
		t.Errorf("got %d %q %v, want the handler running in the virtualenv with the requirement installed", s, b, err)
	}
}
