package contract

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/spry-dev/spry/internal/runtime/wasm"
)

// root is the repository's root directory.
func root(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// build builds the Go package pkg (relative to the root) into dir.
func build(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "./"+pkg)
	cmd.Dir = root(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func python3(t *testing.T) string {
	p, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("SPRY_REQUIRE_PYTHON") == "1" {
			t.Fatal("python3 not found; SPRY_REQUIRE_PYTHON=1")
		}
		t.Skip("python3 not found (Debian: apt-get install python3)")
	}
	return p
}

func check(t *testing.T, tg Target) {
	t.Helper()
	report, ok := Report(Run(tg))
	t.Logf("\n%s", report)
	if !ok {
		t.Fail()
	}
}

// The same cases pass for every implementation of the contract: the Go
// SDK, the Python SDK, the http: adapter in front of a Go net/http server
// and a Python http.server, and the lambda: adapter in front of an
// aws-lambda-go function.
func TestContract(t *testing.T) {
	bin := t.TempDir()
	spry := build(t, bin, "cmd/spry")
	t.Run("go-sdk", func(t *testing.T) {
		t.Parallel()
		check(t, Target{Argv: []string{build(t, bin, "internal/contract/gofn")}})
	})
	t.Run("python-sdk", func(t *testing.T) {
		py := python3(t)
		t.Parallel()
		check(t, Target{Argv: []string{py, "-m", "spry", filepath.Join(root(t), "sdk/python/tests/contract_fn.py")},
			Env: []string{"PYTHONPATH=" + filepath.Join(root(t), "sdk/python"), "PYTHONDONTWRITEBYTECODE=1"}})
	})
	t.Run("http-go", func(t *testing.T) {
		t.Parallel()
		check(t, Target{Argv: []string{spry, "runtime", "http", "--", build(t, bin, "internal/contract/httpfn")}, NoFresh: true})
	})
	t.Run("http-python", func(t *testing.T) {
		py := python3(t)
		t.Parallel()
		check(t, Target{Argv: []string{spry, "runtime", "http", "--", py, filepath.Join(root(t), "internal/contract/testdata/server.py")}, NoFresh: true})
	})
	t.Run("wasm-host", func(t *testing.T) {
		t.Parallel()
		// The same handler as go-sdk, built for WASI and run as a wasm:
		// function in a sandbox host. An instance there runs one step at
		// a time (more instances, not concurrency).
		mod := filepath.Join(bin, "gofn.wasm")
		args := append([]string{"build"}, wasm.GoBuildFlags...)
		cmd := exec.Command("go", append(args, "-o", mod, "./internal/contract/gofn")...)
		cmd.Dir = root(t)
		cmd.Env = append(os.Environ(), wasm.GoBuildEnv...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build gofn for wasip1: %v\n%s", err, b)
		}
		check(t, Target{Argv: []string{spry, "wasm-host"}, Wasm: mod, NoConcurrency: true})
	})
	t.Run("lambda", func(t *testing.T) {
		t.Parallel()
		check(t, Target{Argv: []string{spry, "runtime", "lambda", "--event", "http", "--", build(t, bin, "internal/runtime/lambda/testfn")},
			Env: []string{"EVENT=contract"}, NoFresh: true, NoConcurrency: true})
	})
}
