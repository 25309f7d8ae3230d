package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that Parse never panics and that what it returns holds
// together: either an *Error whose problems all point into the file, or an
// app whose every value is within its limits and whose chains name
// functions that exist.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"app: a\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n",
		yml(`
			app: hello
			transport: uds
			pool: {buffers: 64, bufferSize: 1MiB}
			limits: {inflight: 32}
			functions:
			  upper: {builtin: upper, instances: 2, concurrency: 4, timeout: 10s, env: {K: v}}
			  reverse: {go: ./fn}
			  wrap: {exec: [./bin/fn, --pretty]}
			chains:
			  hello:
			    route: /hello
			    steps: [upper, reverse, wrap]
			    timeout: 30s
			    methods: [GET, POST]
			    headers: [X-User-Id]
			`),
		"app: &a a\nfunctions: &f {f: {builtin: *a}}\nchains: {c: {route: /c, steps: *f}}\n",
		"app: a\n---\napp: b\n",
		"a: [1\n",
		"functions: {<<: {f: 1}}\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "fn"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "fn"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Parse("spry.yaml", data, dir, Options{})
		if err != nil {
			checkProblems(t, err, data)
			return
		}
		checkApp(t, a)
	})
}

func checkProblems(t *testing.T, err error, data []byte) {
	var e *Error
	if !errors.As(err, &e) || len(e.Problems) == 0 || !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %T %v: want an *Error with problems", err, err)
	}
	lines := lineCount(data)
	for _, p := range e.Problems {
		if p.File != "spry.yaml" || p.Msg == "" || p.Line < 0 || p.Line > lines {
			t.Errorf("problem %+v: want file spry.yaml, a message and a line in 0..%d", p, lines)
		}
	}
}

func checkApp(t *testing.T, a *App) {
	switch {
	case !appName.MatchString(a.Name) || len(a.Name) > maxAppName:
		t.Errorf("app name %q", a.Name)
	case a.Pool.Buffers < 2 || a.Pool.Buffers > 1<<20 || a.Pool.BufferSize < 1<<10 || a.Pool.BufferSize > 64<<20:
		t.Errorf("pool %+v", a.Pool)
	case a.Limits.Inflight < 1 || a.Limits.Inflight > int(a.Pool.Buffers):
		t.Errorf("inflight %d with %d buffers", a.Limits.Inflight, a.Pool.Buffers)
	case len(a.Functions) == 0 || len(a.Chains) == 0:
		t.Errorf("%d functions, %d chains", len(a.Functions), len(a.Chains))
	}
	for i, f := range a.Functions {
		if j, ok := a.FunctionIndex(f.Name); !ok || j != i || f.Index != i || !name.MatchString(f.Name) {
			t.Errorf("function %d: %+v", i, *f)
		}
		if f.Instances < 1 || f.Instances > MaxInstances || f.Concurrency < 1 || f.Concurrency > MaxConcurrency ||
			f.Timeout <= 0 || f.Timeout > MaxTimeout {
			t.Errorf("function %s: %+v", f.Name, *f)
		}
		switch f.Kind {
		case Builtin:
			if f.Builtin == "" {
				t.Errorf("function %s: empty builtin", f.Name)
			}
		case Go:
			if f.Go == "" {
				t.Errorf("function %s: empty go", f.Name)
			}
		case Exec:
			if len(f.Exec) == 0 || !filepath.IsAbs(f.Exec[0]) {
				t.Errorf("function %s: exec %q", f.Name, f.Exec)
			}
		default:
			t.Errorf("function %s: kind %v", f.Name, f.Kind)
		}
	}
	routes := map[string]bool{}
	for i, c := range a.Chains {
		if c.Index != i || !name.MatchString(c.Name) || checkRoute(c.Route) != "" || routes[c.Route] ||
			len(c.Steps) < 1 || len(c.Steps) > MaxSteps || len(c.Methods) == 0 || len(c.Headers) > MaxHeaders ||
			c.Timeout <= 0 || c.Timeout > MaxTimeout {
			t.Errorf("chain %d: %+v", i, *c)
		}
		routes[c.Route] = true
		for _, s := range c.Steps {
			if s < 0 || s >= len(a.Functions) {
				t.Errorf("chain %s: step %d of %d functions", c.Name, s, len(a.Functions))
			}
		}
	}
}
