package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestKinds(t *testing.T) {
	dir := testDir(t)
	must(t, os.WriteFile(filepath.Join(dir, "fn", "handler.py"), []byte("def handler(req, res): pass\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "requirements.txt"), []byte("\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "venv", "bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "venv", "bin", "python"), []byte("#!/bin/sh\n"), 0o755))
	a, err := Parse("spry.yaml", []byte(yml(`
		app: k
		functions:
		  py: {python: ./fn/handler.py, requirements: ./requirements.txt, concurrency: 4}
		  pyv: {python: ./fn/handler.py, virtualenv: ./venv}
		  web: {http: [./bin/fn, --flag], port: 8080, health: /_/health}
		  web2: {http: ./bin/fn}
		  lam: {lambda: ./bin/fn, event: http, handler: index.handler}
		  lam2: {lambda: [./bin/fn]}
		chains:
		  c: {route: /c, steps: [py, pyv, web, web2, lam, lam2]}
		`)), dir, builtins)
	must(t, err)
	fn := func(name string) *Function { return a.Function(name) }
	if f := fn("py"); f.Kind != Python || f.Python != filepath.Join(dir, "fn", "handler.py") || f.Requirements != filepath.Join(dir, "requirements.txt") || f.WorkDir != filepath.Join(dir, "fn") {
		t.Errorf("py: %+v", f)
	}
	if f := fn("pyv"); f.Virtualenv != filepath.Join(dir, "venv") {
		t.Errorf("pyv: %+v", f)
	}
	if f := fn("web"); f.Kind != HTTP || !slices.Equal(f.HTTP, []string{filepath.Join(dir, "bin", "fn"), "--flag"}) || f.Port != 8080 || f.Health != "/_/health" {
		t.Errorf("web: %+v", f)
	}
	if f := fn("web2"); f.Port != 0 || f.Health != "" {
		t.Errorf("web2: %+v", f)
	}
	if f := fn("lam"); f.Kind != Lambda || f.Event != EventHTTP || f.Handler != "index.handler" {
		t.Errorf("lam: %+v", f)
	}
	if f := fn("lam2"); f.Event != EventPayload {
		t.Errorf("lam2: event %q, want payload", f.Event)
	}
	if err := fn("py").CheckTransport(TransportPoll); err == nil || !strings.Contains(err.Error(), "runs on skmsg or uds, not poll") {
		t.Errorf("python on poll: %v", err)
	}
	if err := fn("web").CheckTransport(TransportPoll); err != nil {
		t.Errorf("http on poll: %v", err)
	}
}

func TestKindsBad(t *testing.T) {
	dir := testDir(t)
	must(t, os.WriteFile(filepath.Join(dir, "fn", "handler.py"), []byte("def handler(req, res): pass\n"), 0o644))
	_, err := Parse("spry.yaml", []byte(yml(`
		app: k
		transport: adaptive
		functions:
		  a: {python: ./fn/missing.py}
		  b: {python: ./notexec}
		  c: {python: ./fn/handler.py, virtualenv: ./fn, port: 80}
		  d: {http: ./bin/fn, port: 70000, health: "no slash"}
		  e: {http: ./bin/fn, port: 8080, instances: 2}
		  f: {lambda: ./bin/fn, event: sqs, concurrency: 2}
		  g: {builtin: echo, event: http}
		  h: {python: ./fn/handler.py, http: ./bin/fn}
		chains:
		  c: {route: /c, steps: [a]}
		`)), dir, builtins)
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range []string{
		`spry.yaml:2: transport: function c is a python: function, which runs on skmsg or uds, not adaptive (functions.c at line 6)`,
		`spry.yaml:4: functions.a.python: ` + filepath.Join(dir, "fn", "missing.py") + `: no such file or directory`,
		`spry.yaml:5: functions.b.python: ` + filepath.Join(dir, "notexec") + `: want a Python file (.py) that defines handler(req, res)`,
		`spry.yaml:6: functions.c.virtualenv: ` + filepath.Join(dir, "fn") + ` is not a virtualenv: bin/python: no such file or directory`,
		`spry.yaml:6: functions.c.port: only for http: functions (this one is python:)`,
		`spry.yaml:7: functions.d.port: want 1..65535, got 70000`,
		`spry.yaml:7: functions.d.health: "no slash" is not a path: want a path that starts with '/'`,
		`spry.yaml:8: functions.e.port: a fixed port allows one instance, and this function may run 2; leave port: out and listen on $PORT`,
		`spry.yaml:9: functions.f.event: unknown event shape "sqs" (known: payload, http)`,
		`spry.yaml:9: functions.f.concurrency: a Lambda runtime takes one invocation at a time: want 1, got 2 (scale with instances: or scale:)`,
		`spry.yaml:10: functions.g.event: only for lambda: functions (this one is builtin:)`,
		`spry.yaml:11: functions.h: want only one of builtin:, go:, exec:, python:, http:, lambda: or wasm:, got python: and http:`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing:\n%s\nin:\n%s", want, got)
		}
	}
}
