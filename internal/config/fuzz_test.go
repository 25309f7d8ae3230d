package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spry-dev/spry/internal/pool"
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
		yml(`
			app: g
			pool: {memory: 2GiB}
			limits: {maxBody: 256MiB}
			functions: {a: {builtin: upper}, b: {builtin: upper}, j: {builtin: upper}}
			chains:
			  x:
			    route: /x
			    steps:
			      a: [b, c]
			      b: {choose: [j, d]}
			      c: {function: a, next: j}
			      d: {function: b, next: j}
			      j: {join: 1, wait: 10ms, next: e}
			      e: {function: a}
			`),
		"app: g\nfunctions: {a: {builtin: upper}}\nchains: {x: {route: /x, steps: {a: a}}}\n",
		"app: g\nfunctions: {a: {builtin: upper}}\nchains: {x: {route: /x, steps: {a: [b, c], b: j, c: j, j: {function: a, join: all}}}}\n",
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
		checkGraph(t, c)
	}
	if a.Pool.Memory < uint64(a.Pool.Buffers)*uint64(a.Pool.BufferSize) || a.Pool.Memory > MaxMemory ||
		a.Limits.MaxBody < 1 || (a.Limits.MaxBody > uint64(a.Pool.BufferSize) && a.Limits.MaxBody > a.Pool.ExtentBytes()) {
		t.Errorf("pool %+v, limits %+v", a.Pool, a.Limits)
	}
}

// checkGraph checks that a chain's graph can run: what the routing table
// and the gateway rely on.
func checkGraph(t *testing.T, c *Chain) {
	g := c.Graph
	if len(g) != len(c.Steps) || len(g) == 0 || len(g) > MaxSteps || g[0].Join != nil {
		t.Fatalf("chain %s: graph %+v, steps %v", c.Name, g, c.Steps)
	}
	state := make([]int, len(g))
	var visit func(i int)
	visit = func(i int) {
		if state[i] == 1 {
			t.Fatalf("chain %s: a cycle through %s", c.Name, g[i].Name)
		}
		if state[i] == 2 {
			return
		}
		state[i] = 1
		for _, j := range g[i].Next {
			if j < 0 || j >= len(g) {
				t.Fatalf("chain %s: step %s leads to %d", c.Name, g[i].Name, j)
			}
			visit(j)
		}
		state[i] = 2
	}
	visit(0)
	joins := 0
	for i, s := range g {
		if state[i] != 2 {
			t.Errorf("chain %s: step %s unreachable", c.Name, s.Name)
		}
		if s.Fn != c.Steps[i] || s.Depth > pool.MaxDepth || len(s.Next) > pool.MaxNext {
			t.Errorf("chain %s: step %+v", c.Name, s)
		}
		fan := !s.Choose && len(s.Next) > 1
		if fan != (s.JoinAt >= 0) || (fan && (s.JoinAt >= len(g) || g[s.JoinAt].Join == nil || g[s.JoinAt].Join.Of != len(s.Next))) {
			t.Errorf("chain %s: fan-out %+v", c.Name, s)
		}
		if s.Join != nil {
			if s.Join.Ordinal != joins || s.Join.Quorum > s.Join.Of || s.Join.Of < 2 || s.Join.Wait >= c.Timeout {
				t.Errorf("chain %s: join %+v", c.Name, *s.Join)
			}
			joins++
		}
	}
	if joins > pool.MaxJoins {
		t.Errorf("chain %s: %d joins", c.Name, joins)
	}
}
