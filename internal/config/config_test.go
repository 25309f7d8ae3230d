package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// yml strips the tabs that indent a YAML text inside Go source, and its
// first newline. YAML itself indents with spaces, after the tabs.
func yml(s string) string {
	s = strings.TrimPrefix(s, "\n")
	lines := strings.Split(s, "\n")
	indent := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, "\t"))
		if indent < 0 || n < indent {
			indent = n
		}
	}
	for i, l := range lines {
		if len(l) >= indent {
			lines[i] = l[max(indent, 0):]
		}
	}
	return strings.Join(lines, "\n")
}

var builtins = Options{
	Builtins:     func(name string) bool { return slices.Contains([]string{"echo", "lower", "upper"}, name) },
	BuiltinNames: []string{"echo", "lower", "upper"},
}

// testDir makes a directory with a Go package directory fn/, an executable
// bin/fn, a plain file notexec and returns it.
func testDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "fn"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "bin", "fn"), []byte("#!/bin/sh\ncat\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "notexec"), []byte("x"), 0o644))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestParseBad(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	tests := []struct {
		name string
		yaml string
		want []string // the lines of the error; $DIR is dir
	}{
		{"empty", ``, []string{
			"spry.yaml:1: the file is empty; want a mapping with app:, functions: and chains:"}},
		{"comments only", "# nothing\n\n", []string{
			"spry.yaml:1: the file is empty; want a mapping with app:, functions: and chains:"}},
		{"list", "- a\n- b\n", []string{
			"spry.yaml:1: want a mapping with app:, functions: and chains:, got a list"}},
		{"scalar", "\n\nhello\n", []string{
			`spry.yaml:3: want a mapping with app:, functions: and chains:, got "hello"`}},
		{"null", "~\n", []string{
			"spry.yaml:1: want a mapping with app:, functions: and chains:, got ~"}},
		{"unclosed flow list", yml(`
			app: a
			functions:
			  f: {builtin: upper}
			chains:
			  c: {route: /c, steps: [f}
			`), []string{
			"spry.yaml:5: yaml: did not find expected ',' or ']'"}},
		{"bad indentation", yml(`
			app: a
			functions:
			  f:
			    builtin: upper
			   instances: 2
			`), []string{
			"spry.yaml:3: yaml: did not find expected key"}},
		{"mapping in scalar", "app: a: b\n", []string{
			"spry.yaml:1: yaml: mapping values are not allowed in this context"}},
		{"tab", "app: a\n\tfunctions: x\n", []string{
			"spry.yaml:2: yaml: found a tab character that violates indentation"}},
		{"tab on line 1", "\tapp: a\n", []string{
			"spry.yaml:1: yaml: found character that cannot start any token"}},
		{"unknown anchor", "app: a\n\nfunctions: *fns\n", []string{
			"spry.yaml:3: yaml: unknown anchor 'fns' referenced"}},
		{"control character", "app: a\nfunctions: \x01\n", []string{
			"spry.yaml:2: yaml: control characters are not allowed"}},
		{"invalid utf-8", "app: a\n\nchains: \xff\n", []string{
			"spry.yaml:3: yaml: invalid leading UTF-8 octet"}},
		{"two documents", yml(`
			app: a
			functions: {f: {builtin: upper}}
			chains: {c: {route: /c, steps: [f]}}
			---
			app: b
			`), []string{
			"spry.yaml:4: a second YAML document: one file describes one app"}},
		{"nothing set", "transport: uds\n", []string{
			"spry.yaml:1: app: missing; want the app's name, e.g. app: hello",
			"spry.yaml:1: functions: missing; want at least one function",
			"spry.yaml:1: chains: missing; want at least one chain"}},
		{"nothing set after a comment", "# shop\n\ntransport: uds\n", []string{
			"spry.yaml:3: app: missing; want the app's name, e.g. app: hello",
			"spry.yaml:3: functions: missing; want at least one function",
			"spry.yaml:3: chains: missing; want at least one chain"}},
		{"tls without a key, a missing certificate", yml(`
			app: a
			tls:
			  cert: nope.pem
			functions: {f: {builtin: upper}}
			chains: {c: {route: /c, steps: [f]}}
			`), []string{
			"spry.yaml:2: tls.key: missing; want the private key file (PEM) beside tls.cert",
			"spry.yaml:3: tls.cert: nope.pem: no such file or directory"}},
		{"unknown top-level field", yml(`
			app: a
			function: {f: {builtin: upper}}
			functions: {f: {builtin: upper}}
			chains: {c: {route: /c, steps: [f]}}
			`), []string{
			"spry.yaml:2: function: unknown field (known: app, transport, pool, limits, tls, secrets, functions, chains, activations, triggers)"}},
		{"the example", yml(`
			app: hello
			transport: auto
			pool:
			  buffers: 1024
			functions:
			  upper:
			    builtin: upper
			  reverse:
			    builtin: echo
			  wrap:
			    builtin: lower
			chains:
			  hello:
			    route: /hello
			    steps:
			      - upper
			      - reverse
			      - cnt
			`), []string{
			`spry.yaml:18: chains.hello.steps[2]: unknown function "cnt" (functions: upper, reverse, wrap)`}},
		{"many problems at once", yml(`
			app: Hello
			transport: tcp
			pool:
			  buffers: many
			  bufferSize: 64 kb
			  buffer: 1
			limits: {inflight: 0}
			functions:
			  upper:
			    builtin: upper
			    instnces: 2
			  upper: {builtin: lower}
			  up: {builtin: UPPER}
			chains:
			  hello:
			    route: hello
			    steps: [upper, up, cnt]
			  hello2: {route: /x}
			`), []string{
			`spry.yaml:1: app: "Hello" is not a valid app name: want lower-case letters, digits and '-' (not at either end), at most 32 characters`,
			`spry.yaml:2: transport: unknown transport "tcp" (known: auto, skmsg, uds, poll, adaptive)`,
			`spry.yaml:4: pool.buffers: want an integer, got "many"`,
			`spry.yaml:5: pool.bufferSize: want a size like 64KiB, got "64 kb"`,
			`spry.yaml:6: pool.buffer: unknown field (known: memory, buffers, bufferSize)`,
			`spry.yaml:7: limits.inflight: want 1..1024 (at most pool.buffers), got 0`,
			`spry.yaml:11: functions.upper.instnces: unknown field (known: builtin, go, exec, python, http, lambda, virtualenv, requirements, port, health, event, handler, wasm, grants, instances, concurrency, timeout, env, envFrom, workDir, limits, scale)`,
			`spry.yaml:12: functions.upper: duplicate key (first at line 9)`,
			`spry.yaml:13: functions.up.builtin: unknown builtin "UPPER" (known: echo, lower, upper)`,
			`spry.yaml:16: chains.hello.route: "hello" is not a valid route: want a path that starts with '/'`,
			`spry.yaml:17: chains.hello.steps[2]: unknown function "cnt" (functions: upper, up)`,
			`spry.yaml:18: chains.hello2.steps: missing; want the functions to run, e.g. steps: [upper, up]`}},
		{"wrong types", yml(`
			app: [a]
			transport: {x: 1}
			pool: 5
			limits: {inflight: 1.5}
			functions:
			  f: {builtin: upper, instances: "2", concurrency: true, timeout: soon, env: [A]}
			  g: upper
			  h:
			chains: [c]
			`), []string{
			`spry.yaml:1: app: want a string, got a list`,
			`spry.yaml:2: transport: want a string, got a mapping`,
			`spry.yaml:3: pool: want a mapping, got 5`,
			`spry.yaml:4: limits.inflight: want an integer, got 1.5`,
			`spry.yaml:6: functions.f.instances: want an integer, got "2"`,
			`spry.yaml:6: functions.f.concurrency: want an integer, got true`,
			`spry.yaml:6: functions.f.timeout: want a duration like "30s", got "soon"`,
			`spry.yaml:6: functions.f.env: want a mapping, got a list`,
			`spry.yaml:7: functions.g: want a mapping with one of builtin:, go:, exec:, python:, http:, lambda: or wasm:, got "upper"`,
			`spry.yaml:8: functions.h: want a mapping with one of builtin:, go:, exec:, python:, http:, lambda: or wasm:, got nothing`,
			`spry.yaml:9: chains: want a mapping, got a list`}},
		{"duplicate keys", yml(`
			app: a
			app: b
			functions:
			  f: {builtin: upper, builtin: lower}
			chains:
			  c: {route: /c, steps: [f]}
			  c: {route: /d, steps: [f]}
			`), []string{
			`spry.yaml:2: app: duplicate key (first at line 1)`,
			`spry.yaml:4: functions.f.builtin: duplicate key (first at line 4)`,
			`spry.yaml:7: chains.c: duplicate key (first at line 6)`}},
		{"odd keys", yml(`
			app: a
			functions:
			  "a b": {builtin: upper}
			  [x]: {builtin: upper}
			  base: &base {builtin: upper}
			  g:
			    <<: *base
			chains:
			  c: {route: /c, steps: [a b, g]}
			`), []string{
			`spry.yaml:3: functions["a b"]: "a b" is not a valid function name: want lower-case letters, digits, '-' and '_' (not '-' or '_' at either end), at most 64 characters`,
			`spry.yaml:4: functions: want a name as key, got a list`,
			`spry.yaml:6: functions.g: want one of builtin:, go:, exec:, python:, http:, lambda: or wasm:`,
			`spry.yaml:7: functions.g: merge keys (<<) are not supported`}},
		{"scale", yml(`
			app: a
			functions:
			  a: {builtin: upper, scale: {min: 3, max: 2, slo: 0s, policy: fast, sloWindow: 2h}}
			  b: {builtin: upper, scale: {min: -1, max: 300, sloo: 1s}}
			  c: {builtin: upper, instances: 5, scale: {min: 1, max: 4, attainment: 1}}
			  d: {builtin: upper, instances: 0}
			  e: {builtin: upper, scale: [1, 2]}
			  f: {builtin: upper, scale: {attainment: 99.9%}}
			chains:
			  c: {route: /c, steps: [a]}
			`), []string{
			`spry.yaml:3: functions.a.scale.policy: unknown policy "fast" (known: mu, kpa, fixed)`,
			`spry.yaml:3: functions.a.scale.max: 2 is below min (3)`,
			`spry.yaml:3: functions.a.scale.slo: want more than 0s and at most 1h, got 0s`,
			`spry.yaml:3: functions.a.scale.sloWindow: want more than 0s and at most 1h, got 2h0m0s`,
			`spry.yaml:4: functions.b.scale.sloo: unknown field (known: min, max, slo, sloWindow, attainment, policy, window, idle)`,
			`spry.yaml:4: functions.b.scale.min: want 0..256, got -1`,
			`spry.yaml:4: functions.b.scale.max: want 1..256, got 300`,
			`spry.yaml:5: functions.c.scale.attainment: want a share of windows in [0.5, 1) (0.999: 999 windows in 1000), got 1`,
			`spry.yaml:5: functions.c.scale: instances (5) is outside min..max (1..4)`,
			`spry.yaml:6: functions.d.instances: want 1..256, got 0`,
			`spry.yaml:7: functions.e.scale: want a mapping with min:, max:, slo: and policy:, got a list`,
			`spry.yaml:8: functions.f.scale.attainment: want a number, got "99.9%"`}},
		{"functions", yml(`
			app: a
			functions:
			  none: {instances: 1}
			  both: {builtin: upper, exec: ./bin/fn}
			  all: {builtin: upper, go: ./fn, exec: ./bin/fn}
			  a: {builtin: upper, instances: 0, concurrency: 1025, timeout: 0s}
			  b: {builtin: upper, instances: 257, concurrency: 0, timeout: 61m}
			  c: {builtin: upper, timeout: 10}
			  d: {builtin: upper, env: {SPRY_APP: x, 1X: y, "A-B": z, OK: "a\0b", GOOD: 1}}
			  -x: {builtin: upper}
			  x_: {builtin: upper}
			chains:
			  c: {route: /c, steps: [a]}
			`), []string{
			`spry.yaml:3: functions.none: want one of builtin:, go:, exec:, python:, http:, lambda: or wasm:`,
			`spry.yaml:4: functions.both: want only one of builtin:, go:, exec:, python:, http:, lambda: or wasm:, got builtin: and exec:`,
			`spry.yaml:5: functions.all: want only one of builtin:, go:, exec:, python:, http:, lambda: or wasm:, got builtin: and go: and exec:`,
			`spry.yaml:6: functions.a.instances: want 1..256, got 0`,
			`spry.yaml:6: functions.a.concurrency: want 1..1024, got 1025`,
			`spry.yaml:6: functions.a.timeout: want more than 0s and at most 1h, got 0s`,
			`spry.yaml:7: functions.b.instances: want 1..256, got 257`,
			`spry.yaml:7: functions.b.concurrency: want 1..1024, got 0`,
			`spry.yaml:7: functions.b.timeout: want more than 0s and at most 1h, got 1h1m0s`,
			`spry.yaml:8: functions.c.timeout: want a duration like "30s", got 10 (write 10s for seconds)`,
			`spry.yaml:9: functions.d.env.SPRY_APP: SPRY_ variables are reserved for spry`,
			`spry.yaml:9: functions.d.env.1X: not a valid variable name: want letters, digits and '_', not a digit first`,
			`spry.yaml:9: functions.d.env.A-B: not a valid variable name: want letters, digits and '_', not a digit first`,
			`spry.yaml:9: functions.d.env.OK: the value contains a NUL byte`,
			`spry.yaml:10: functions.-x: "-x" is not a valid function name: want lower-case letters, digits, '-' and '_' (not '-' or '_' at either end), at most 64 characters`,
			`spry.yaml:11: functions.x_: "x_" is not a valid function name: want lower-case letters, digits, '-' and '_' (not '-' or '_' at either end), at most 64 characters`}},
		{"paths", yml(`
			app: a
			functions:
			  a: {go: ./nope}
			  b: {go: ./notexec}
			  c: {go: "not a path"}
			  d: {go: example.com//x}
			  d2: {go: -x}
			  e: {exec: ./bin/nope}
			  f: {exec: ./notexec}
			  g: {exec: ./fn}
			  h: {exec: []}
			  i: {exec: spry-no-such-program}
			  j: {exec: "bin/fn --pretty"}
			  k: {exec: "cat -n"}
			  l: {exec: [./bin/fn, {a: 1}]}
			chains:
			  c: {route: /c, steps: [a]}
			`), []string{
			`spry.yaml:3: functions.a.go: $DIR/nope: no such file or directory`,
			`spry.yaml:4: functions.b.go: $DIR/notexec: not a directory`,
			`spry.yaml:5: functions.c.go: "not a path" is neither a directory (./dir) nor an import path`,
			`spry.yaml:6: functions.d.go: "example.com//x" is neither a directory (./dir) nor an import path`,
			`spry.yaml:7: functions.d2.go: "-x" is neither a directory (./dir) nor an import path`,
			`spry.yaml:8: functions.e.exec: $DIR/bin/nope: no such file or directory`,
			`spry.yaml:9: functions.f.exec: $DIR/notexec: not executable`,
			`spry.yaml:10: functions.g.exec: $DIR/fn: is a directory`,
			`spry.yaml:11: functions.h.exec: want a program and its arguments, e.g. exec: [./bin/fn, --flag]`,
			`spry.yaml:12: functions.i.exec: program "spry-no-such-program" not found in $PATH (write ./spry-no-such-program for a file beside the config)`,
			`spry.yaml:13: functions.j.exec: $DIR/bin/fn --pretty: no such file or directory (to pass arguments, write a list: exec: [program, arg])`,
			`spry.yaml:14: functions.k.exec: program "cat -n" not found in $PATH (to pass arguments, write a list: exec: [program, arg])`,
			`spry.yaml:15: functions.l.exec[1]: want a string, got a mapping`}},
		{"chains", yml(`
			app: a
			functions: {f: {builtin: upper}}
			chains:
			  a: {steps: [f]}
			  b: {route: "/b?x=1", steps: f}
			  c: {route: "/c d", steps: [f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f]}
			  d: {route: /d/../e, steps: []}
			  e: {route: /e#x, steps: [f], timeout: 2h, methods: [GET, get, "B AD"]}
			  f: {route: /f/., steps: [f], methods: []}
			  g: {route: /g, steps: [f], headers: [X-A, x-a, "X B", a, b, c, d, e, f, g, h, i, j, k, l, m, n]}
			  h: {route: /g, steps: [f]}
			  i: {route: "/i\x01", steps: [f]}
			  j: 1
			`), []string{
			`spry.yaml:4: chains.a.route: missing; want an HTTP path, e.g. route: /a`,
			`spry.yaml:5: chains.b.route: "/b?x=1" is not a valid route: want a path without '?' or '#'`,
			`spry.yaml:6: chains.c.route: "/c d" is not a valid route: want a path without spaces or control characters`,
			`spry.yaml:6: chains.c.steps: want 1..32 steps, got 33`,
			`spry.yaml:7: chains.d.route: "/d/../e" is not a valid route: want a path without . or .. segments`,
			`spry.yaml:7: chains.d.steps: want 1..32 steps, got 0`,
			`spry.yaml:8: chains.e.route: "/e#x" is not a valid route: want a path without '?' or '#'`,
			`spry.yaml:8: chains.e.timeout: want more than 0s and at most 1h, got 2h0m0s`,
			`spry.yaml:8: chains.e.methods[1]: duplicate method GET`,
			`spry.yaml:8: chains.e.methods[2]: "B AD" is not an HTTP method`,
			`spry.yaml:9: chains.f.route: "/f/." is not a valid route: want a path without . or .. segments`,
			`spry.yaml:9: chains.f.methods: want at least one method`,
			`spry.yaml:10: chains.g.headers: want at most 16 headers, got 17`,
			`spry.yaml:10: chains.g.headers[1]: duplicate header X-A`,
			`spry.yaml:10: chains.g.headers[2]: "X B" is not an HTTP header name`,
			`spry.yaml:11: chains.h.route: /g is already served by chain "g" (line 10)`,
			`spry.yaml:12: chains.i.route: "/i\x01" is not a valid route: want a path without spaces or control characters`,
			`spry.yaml:13: chains.j: want a mapping with route: and steps:, got 1`}},
		{"long route", "app: a\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /" + strings.Repeat("x", 256) + ", steps: [f]}}\n", []string{
			`spry.yaml:3: chains.c.route: "/` + strings.Repeat("x", 256) + `" is not a valid route: longer than 256 bytes`}},
		{"long names", "app: " + strings.Repeat("a", 33) + "\nfunctions: {" + strings.Repeat("f", 65) + ": {builtin: upper}}\nchains: {c: {route: /c, steps: [" + strings.Repeat("f", 65) + "]}}\n", []string{
			`spry.yaml:1: app: "` + strings.Repeat("a", 33) + `" is not a valid app name: want lower-case letters, digits and '-' (not at either end), at most 32 characters`,
			`spry.yaml:2: functions.` + strings.Repeat("f", 65) + `: "` + strings.Repeat("f", 65) + `" is not a valid function name: want lower-case letters, digits, '-' and '_' (not '-' or '_' at either end), at most 64 characters`}},
		{"empty sections", "app: a\nfunctions: {}\nchains:\n", []string{
			`spry.yaml:2: functions: want at least one function`,
			`spry.yaml:3: chains: want at least one chain`}},
		{"limits against buffers", "app: a\npool: {buffers: 8}\nlimits: {inflight: 9}\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n", []string{
			`spry.yaml:3: limits.inflight: want 1..8 (at most pool.buffers), got 9`}},
		{"buffers out of range", "app: a\npool: {buffers: 1, bufferSize: 65MiB}\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n", []string{
			`spry.yaml:2: pool.buffers: want 2..1048576, got 1`,
			`spry.yaml:2: pool.bufferSize: want 1KiB..64MiB, got 65MiB`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := Parse("spry.yaml", []byte(tt.yaml), dir, builtins)
			if err == nil {
				t.Fatalf("no error; app %+v", a)
			}
			if a != nil {
				t.Errorf("an app with the error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false")
			}
			want := strings.ReplaceAll(strings.Join(tt.want, "\n"), "$DIR", dir)
			if got := err.Error(); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestSizes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want uint32 // 0: an error
		msg  string
	}{
		{"65536", 64 << 10, ""},
		{"64KiB", 64 << 10, ""},
		{"1KiB", 1 << 10, ""},
		{"64MiB", 64 << 20, ""},
		{"2048B", 2048, ""},
		{"100KB", 100_000, ""},
		{"2MB", 2_000_000, ""},
		{`"4096"`, 4096, ""},
		{"64 kb", 0, `want a size like 64KiB, got "64 kb"`},
		{"64 KiB", 0, `want a size like 64KiB, got "64 KiB"`},
		{"64kib", 0, `want a size like 64KiB, got "64kib"`},
		{"64Kib", 0, `want a size like 64KiB, got "64Kib"`},
		{"1.5MiB", 0, `want a size like 64KiB, got "1.5MiB"`},
		{"KiB", 0, `want a size like 64KiB, got "KiB"`},
		{"0x1000", 0, `want a size like 64KiB, got 0x1000`},
		{"-1024", 0, `a size cannot be negative, got -1024`},
		{"-1KiB", 0, `a size cannot be negative, got -1KiB`},
		{"99999999999999999999", 0, `99999999999999999999 is too large`},
		{"99999999999GiB", 0, `99999999999GiB is too large`},
		{"1GB", 0, `want 1KiB..64MiB, got 1000000000B`},
		{"1GiB", 0, `want 1KiB..64MiB, got 1GiB`},
		{"1023", 0, `want 1KiB..64MiB, got 1023B`},
		{"0", 0, `want 1KiB..64MiB, got 0B`},
		{"true", 0, `want a size like 64KiB, got true`},
		{"", 0, `want a size like 64KiB, got nothing`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			y := "app: a\npool: {bufferSize: " + tt.in + "}\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n"
			a, err := Parse("spry.yaml", []byte(y), "", Options{})
			if tt.want != 0 {
				if err != nil {
					t.Fatal(err)
				}
				if a.Pool.BufferSize != tt.want {
					t.Errorf("BufferSize = %d, want %d", a.Pool.BufferSize, tt.want)
				}
				return
			}
			if want := "spry.yaml:2: pool.bufferSize: " + tt.msg; err == nil || err.Error() != want {
				t.Errorf("got %v, want %s", err, want)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	y := yml(`
		app: min
		functions:
		  f: {builtin: upper}
		chains:
		  c: {route: /c, steps: [f]}
		`)
	a, err := Parse("spry.yaml", []byte(y), "/x", builtins)
	if err != nil {
		t.Fatal(err)
	}
	want := &App{
		Name: "min", File: "spry.yaml", Dir: "/x", Line: 1,
		Transport:   TransportAuto,
		Pool:        Pool{Buffers: 1024, BufferSize: 64 << 10, Memory: 1 << 30},
		Limits:      Limits{Inflight: 512, Async: 256, MaxBody: 32 << 20},
		Activations: Activations{Retention: Retention{Age: DefaultRetentionAge, Count: DefaultRetentionCount}, Result: DefaultResult},
		Functions: []*Function{{Name: "f", Index: 0, File: "spry.yaml", Line: 3,
			Kind: Builtin, Builtin: "upper", Instances: 1, Scale: Scale{Policy: PolicyFixed, Min: 1, Max: 1}, Concurrency: 1, Timeout: 30 * time.Second, WorkDir: "/x"}},
		Chains: []*Chain{{Name: "c", Index: 0, File: "spry.yaml", Line: 5,
			Route: "/c", Steps: []int{0}, Graph: []Step{{Name: "f", Fn: 0, Line: 5, JoinAt: -1}},
			Timeout: 30 * time.Second, Methods: []string{"GET", "POST"}, routeLine: 5,
			Record: RecordFailures, Async: Async{Attempts: DefaultAttempts, MaxAge: DefaultMaxAge, Backoff: DefaultBackoff, Queue: DefaultQueue}}},
		fnIndex: map[string]int{"f": 0},
	}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("got\n%s\nwant\n%s", dump(a), dump(want))
	}

	// Inflight defaults to half the buffers, at least 1.
	for buffers, inflight := range map[int]int{2: 1, 3: 1, 8: 4, 1 << 20: 1 << 19} {
		y := "app: a\npool: {buffers: " + strconv.Itoa(buffers) + "}\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n"
		a, err := Parse("spry.yaml", []byte(y), "", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if a.Limits.Inflight != inflight {
			t.Errorf("buffers %d: Inflight = %d, want %d", buffers, a.Limits.Inflight, inflight)
		}
	}
}

// dump shows an app in a failure message.
func dump(a *App) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%+v", *a)
	for _, f := range a.Functions {
		fmt.Fprintf(&b, "\n  function %+v", *f)
	}
	for _, c := range a.Chains {
		fmt.Fprintf(&b, "\n  chain %+v", *c)
	}
	return b.String()
}

func TestParseFull(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	y := yml(`
		app: shop-1
		transport: uds
		pool:
		  buffers: 64
		  bufferSize: 1MiB
		limits:
		  inflight: 64
		functions:
		  upper:
		    builtin: upper
		    instances: 2
		    concurrency: 8
		    timeout: 10s
		    env: {KEY: value, N: 1, B: true, E: ""}
		  reverse:
		    go: ./fn
		  remote:
		    go: example.com/fns/reverse
		  wrap:
		    exec: [./bin/fn, --pretty]
		  plain:
		    exec: bin/fn
		  shell:
		    exec: sh
		chains:
		  hello:
		    route: /hello
		    steps: [upper, reverse, wrap]
		    timeout: 1m
		    methods: [get, Post, HEAD]
		    headers: [x-user-id, Content-Type]
		  solo:
		    route: /solo/x.y
		    steps: wrap
		`)
	a, err := Parse("spry.yaml", []byte(y), dir, builtins)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "shop-1" || a.Transport != "uds" || a.Pool != (Pool{64, 1 << 20, 1 << 30}) || a.Limits.MaxBody != 32<<20 || a.Limits.Inflight != 64 {
		t.Errorf("app: %s", dump(a))
	}
	var names []string
	for i, f := range a.Functions {
		names = append(names, f.Name)
		if f.Index != i {
			t.Errorf("%s: Index %d, want %d", f.Name, f.Index, i)
		}
	}
	if want := []string{"upper", "reverse", "remote", "wrap", "plain", "shell"}; !slices.Equal(names, want) {
		t.Errorf("functions %v, want file order %v", names, want)
	}
	up := a.Function("upper")
	if up.Kind != Builtin || up.Instances != 2 || up.Concurrency != 8 || up.Timeout != 10*time.Second ||
		!slices.Equal(up.Env, []string{"KEY=value", "N=1", "B=true", "E="}) || up.Line != 9 {
		t.Errorf("upper: %s", fmt.Sprintf("%+v", *up))
	}
	if f := a.Function("reverse"); f.Kind != Go || f.Go != filepath.Join(dir, "fn") {
		t.Errorf("reverse: %s", fmt.Sprintf("%+v", *f))
	}
	if f := a.Function("remote"); f.Kind != Go || f.Go != "example.com/fns/reverse" {
		t.Errorf("remote: %s", fmt.Sprintf("%+v", *f))
	}
	if f := a.Function("wrap"); f.Kind != Exec || !slices.Equal(f.Exec, []string{filepath.Join(dir, "bin", "fn"), "--pretty"}) {
		t.Errorf("wrap: %s", fmt.Sprintf("%+v", *f))
	}
	if f := a.Function("plain"); !slices.Equal(f.Exec, []string{filepath.Join(dir, "bin", "fn")}) {
		t.Errorf("plain: %s", fmt.Sprintf("%+v", *f))
	}
	if f := a.Function("shell"); len(f.Exec) != 1 || !filepath.IsAbs(f.Exec[0]) || filepath.Base(f.Exec[0]) != "sh" {
		t.Errorf("shell: %s", fmt.Sprintf("%+v", *f))
	}
	if i, ok := a.FunctionIndex("wrap"); !ok || i != 3 {
		t.Errorf("FunctionIndex(wrap) = %d, %v", i, ok)
	}
	if _, ok := a.FunctionIndex("nope"); ok || a.Function("nope") != nil || a.Chain("nope") != nil {
		t.Errorf("found a function or chain that is not there")
	}
	h := a.Chain("hello")
	if h.Index != 0 || h.Route != "/hello" || !slices.Equal(h.Steps, []int{0, 1, 3}) || h.Timeout != time.Minute ||
		!slices.Equal(h.Methods, []string{"GET", "POST", "HEAD"}) || !slices.Equal(h.Headers, []string{"X-User-Id", "Content-Type"}) {
		t.Errorf("hello: %s", fmt.Sprintf("%+v", *h))
	}
	if s := a.Chain("solo"); s.Index != 1 || !slices.Equal(s.Steps, []int{3}) || s.Line != 32 || s.routeLine != 33 {
		t.Errorf("solo: %s", fmt.Sprintf("%+v", *s))
	}
}

// TestLoadPaths checks that relative paths resolve against the directory of
// the file, not the working directory.
func TestLoadPaths(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	y := "app: a\nfunctions:\n  g: {go: ./fn}\n  u: {go: ../up}\n  e: {exec: [./bin/fn, -x]}\nchains: {c: {route: /c, steps: [g, e]}}\n"
	must(t, os.MkdirAll(filepath.Join(dir, "up"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	must(t, os.Symlink(filepath.Join(dir, "fn"), filepath.Join(dir, "sub", "fn")))
	must(t, os.MkdirAll(filepath.Join(dir, "sub", "bin"), 0o755))
	must(t, os.Symlink(filepath.Join(dir, "bin", "fn"), filepath.Join(dir, "sub", "bin", "fn")))
	path := filepath.Join(dir, "sub", "spry.yaml")
	must(t, os.WriteFile(path, []byte(y), 0o644))

	a, err := Load(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Dir != filepath.Join(dir, "sub") || a.File != path {
		t.Errorf("Dir %q File %q", a.Dir, a.File)
	}
	if got := a.Function("g").Go; got != filepath.Join(dir, "sub", "fn") {
		t.Errorf("go: ./fn resolved to %s", got)
	}
	if got := a.Function("u").Go; got != filepath.Join(dir, "up") {
		t.Errorf("go: ../up resolved to %s", got)
	}
	if got := a.Function("e").Exec; !slices.Equal(got, []string{filepath.Join(dir, "sub", "bin", "fn"), "-x"}) {
		t.Errorf("exec resolved to %v", got)
	}
}

func TestLoadAll(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, y string) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(y), 0o644))
		return p
	}
	a := write("a.yaml", yml(`
		app: a
		functions:
		  f: {builtin: upper}
		chains:
		  one:
		    steps: [f]
		    route: /hello
		  two: {route: /two, steps: [f]}
		`))
	b := write("b.yaml", yml(`
		app: b
		functions:
		  f: {builtin: upper}
		chains:
		  y: {route: /y, steps: [f]}
		  x: {route: /hello, steps: [f]}
		  z: {route: /two, steps: [f]}
		`))
	c := write("c.yaml", "app: a\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n")
	d := write("d.yaml", "app: d\nfunctions: {f: {builtin: nope}}\nchains: {c: {route: /y, steps: [f]}}\n")
	e := write("e.yaml", "app: e\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /e, steps: [f]}}\n")

	apps, err := LoadAll([]string{e, a}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(apps) != 2 || apps[0].Name != "e" || apps[1].Name != "a" {
		t.Fatalf("apps %v", apps)
	}

	_, err = LoadAll([]string{a, b, c, filepath.Join(dir, "none.yaml"), d}, builtins)
	want := strings.ReplaceAll(strings.Join([]string{
		`$DIR/b.yaml:6: chains.x.route: /hello is already served by app "a" ($DIR/a.yaml:7)`,
		`$DIR/b.yaml:7: chains.z.route: /two is already served by app "a" ($DIR/a.yaml:8)`,
		`$DIR/c.yaml:1: app: "a" is already defined by $DIR/a.yaml:1`,
		`$DIR/none.yaml: no such file or directory`,
		`$DIR/d.yaml:2: functions.f.builtin: unknown builtin "nope" (known: echo, lower, upper)`,
		`$DIR/d.yaml:3: chains.c.route: /y is already served by app "b" ($DIR/b.yaml:5)`,
	}, "\n"), "$DIR", dir)
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is: ErrInvalid %v, ErrNotExist %v", errors.Is(err, ErrInvalid), errors.Is(err, fs.ErrNotExist))
	}
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 6 || ce.Problems[0].Path != "chains.x.route" || ce.Problems[0].Line != 6 {
		t.Errorf("problems %+v", ce)
	}
}

func TestConflicts(t *testing.T) {
	t.Parallel()
	parse := func(name, y string) *App {
		a, err := Parse(name, []byte(y), "", Options{})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := parse("a.yaml", "app: a\nfunctions: {f: {builtin: x}}\nchains: {c: {route: /c, steps: [f]}}\n")
	b := parse("b.yaml", "app: b\nfunctions: {f: {builtin: x}}\nchains: {c: {route: /d, steps: [f]}}\n")
	c := parse("c.yaml", "app: c\nfunctions: {f: {builtin: x}}\nchains:\n  d: {route: /d, steps: [f]}\n")
	if err := Conflicts([]*App{a, b}); err != nil {
		t.Errorf("a, b: %v", err)
	}
	err := Conflicts([]*App{a, b, c})
	if want := `c.yaml:4: chains.d.route: /d is already served by app "b" (b.yaml:3)`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestProblemString(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		p    Problem
		want string
	}{
		{Problem{File: "f", Line: 3, Path: "a.b", Msg: "m"}, "f:3: a.b: m"},
		{Problem{File: "f", Path: "a", Msg: "m"}, "f: a: m"},
		{Problem{File: "f", Line: 1, Msg: "m"}, "f:1: m"},
		{Problem{Msg: "m"}, "m"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestScale(t *testing.T) {
	t.Parallel()
	y := yml(`
		app: s
		functions:
		  fixed: {builtin: upper, instances: 3}
		  zero: {builtin: upper, scale: {min: 0, slo: 50ms, window: 5s, idle: 2s, sloWindow: 100ms, attainment: 0.999}}
		  kpa: {builtin: upper, instances: 2, scale: {policy: kpa, max: 4}}
		  bare: {builtin: upper, scale: {}}
		  big: {builtin: upper, scale: {min: 12}}
		chains:
		  c: {route: /c, steps: [fixed, zero, kpa, bare, big]}
		`)
	a, err := Parse("spry.yaml", []byte(y), "/x", builtins)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]struct {
		instances int
		scale     Scale
	}{
		"fixed": {3, Scale{Policy: PolicyFixed, Min: 3, Max: 3}},
		"zero":  {1, Scale{Policy: PolicyMu, Min: 0, Max: DefaultMaxInstances, SLO: 50 * time.Millisecond, Window: 5 * time.Second, Idle: 2 * time.Second, SLOWindow: 100 * time.Millisecond, Attainment: 0.999}},
		"kpa":   {2, Scale{Policy: PolicyKPA, Min: 1, Max: 4, SLO: DefaultSLO}},
		"bare":  {1, Scale{Policy: PolicyMu, Min: 1, Max: DefaultMaxInstances, SLO: DefaultSLO}},
		"big":   {12, Scale{Policy: PolicyMu, Min: 12, Max: 12, SLO: DefaultSLO}},
	} {
		f := a.Function(name)
		if f.Instances != want.instances || f.Scale != want.scale {
			t.Errorf("%s: instances %d scale %+v, want %d %+v", name, f.Instances, f.Scale, want.instances, want.scale)
		}
	}
}
