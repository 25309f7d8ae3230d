package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	lambdaFnOnce sync.Once
	lambdaFnPath string
	lambdaFnErr  error
)

// lambdaFn builds internal/runtime/lambda/testfn, an aws-lambda-go
// function, once.
func lambdaFn(t testing.TB) string {
	t.Helper()
	lambdaFnOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spry-lambdafn-")
		if err != nil {
			lambdaFnErr = err
			return
		}
		os.Chmod(dir, 0o755)
		lambdaFnPath = filepath.Join(dir, "bootstrap")
		cmd := exec.Command("go", "build", "-o", lambdaFnPath, "./internal/runtime/lambda/testfn")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			lambdaFnErr = err
			t.Logf("%s", out)
		}
	})
	if lambdaFnErr != nil {
		t.Fatal(lambdaFnErr)
	}
	return lambdaFnPath
}

// An aws-lambda-go function runs unchanged as a step: payload events and
// API Gateway v2 events, its errors in the Lambda error shape as 502, a
// chain of Go, Lambda and Go steps.
func TestLambdaFunction(t *testing.T) {
	fn := lambdaFn(t)
	dir := openDir(t)
	cfg := writeFile(t, dir, "spry.yaml", `
app: lam
functions:
  greet: {lambda: `+fn+`}
  api: {lambda: `+fn+`, event: http, env: {EVENT: http}}
  echo: {builtin: echo}
chains:
  greet: {route: /greet, steps: [echo, greet, echo], methods: [POST]}
  api: {route: /lambda-http, steps: [api], methods: [GET, POST]}
  missing: {route: /lambda-http/missing, steps: [api]}
`)
	n := startNode(t, "--transport", "uds", "-f", cfg)
	load(t, n, 8, 200, "/greet", func(i int) (string, []string, func(int, string) error) {
		return `{"name":"spry"}`, nil, func(status int, got string) error {
			var o struct {
				Greeting, Function string
				Deadline           bool
			}
			if status != 200 || json.Unmarshal([]byte(got), &o) != nil || o.Greeting != "hello spry" || o.Function != "greet" || !o.Deadline {
				t.Errorf("got %d %q", status, got)
			}
			return nil
		}
	})
	c := client(1)
	if s, b, err := n.post(c, "/greet", `{"name":""}`); err != nil || s != 502 ||
		!strings.Contains(b, `"errorMessage":"no name given"`) || !strings.Contains(b, `"errorType":"errorString"`) {
		t.Errorf("a handler error: %d %q %v, want 502 with the Lambda error shape", s, b, err)
	}
	if s, b, err := n.post(c, "/lambda-http?x=1", "body"); err != nil || s != 201 || b != "POST /lambda-http x=1 BODY" {
		t.Errorf("an http event: %d %q %v", s, b, err)
	}
	if s, b, err := n.post(c, "/lambda-http/missing", ""); err != nil || s != 404 || b != "no such thing" {
		t.Errorf("an http event answered 404: %d %q %v", s, b, err)
	}
	n.waitFreeBuffers("lam")
}

// A Lambda function that exits during init is a startup error naming it.
func TestLambdaInitFailure(t *testing.T) {
	fn := lambdaFn(t)
	dir := openDir(t)
	cfg := writeFile(t, dir, "spry.yaml", "app: lam\nfunctions:\n  bad: {lambda: "+fn+", env: {FAIL_INIT: '1'}}\nchains:\n  c: {route: /c, steps: [bad]}\n")
	out := upFails(t, cfg)
	for _, w := range []string{"function bad: ", "exited during init", "cannot load my configuration"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
