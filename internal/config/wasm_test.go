package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWasmKind(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	must(t, os.WriteFile(filepath.Join(dir, "resize.wasm"), []byte("\x00asm\x01\x00\x00\x00"), 0o644))
	y := yml(`
		app: a
		functions:
		  file: {wasm: ./resize.wasm}
		  pkg:
		    wasm: ./fn
		    grants: [clock, random]
		    limits: {memory: 32MiB}
		    env: {GREETING: hi}
		  imp: {wasm: example.com/fn}
		chains:
		  c: {route: /c, steps: [file, pkg, imp]}
		`)
	a, err := Parse("spry.yaml", []byte(y), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, p, i := a.Function("file"), a.Function("pkg"), a.Function("imp")
	if f.Kind != Wasm || f.Wasm != filepath.Join(dir, "resize.wasm") || f.WasmBuild || f.Limits.Memory != DefaultWasmMemory || len(f.Grants) != 0 {
		t.Errorf("file: %+v", f)
	}
	if p.Kind != Wasm || p.Wasm != filepath.Join(dir, "fn") || !p.WasmBuild || p.Limits.Memory != 32<<20 ||
		!slices.Equal(p.Grants, []string{GrantClock, GrantRandom}) || !p.HasGrant(GrantClock) || !slices.Equal(p.Env, []string{"GREETING=hi"}) {
		t.Errorf("pkg: %+v", p)
	}
	if i.Kind != Wasm || i.Wasm != "example.com/fn" || !i.WasmBuild {
		t.Errorf("imp: %+v", i)
	}
	if f.Kind.String() != "wasm" {
		t.Errorf("kind %q", f.Kind)
	}
}

func TestWasmKindBad(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	y := yml(`
		app: a
		functions:
		  missing: {wasm: ./nope.wasm}
		  grant: {wasm: ./fn, grants: [network, clock, clock]}
		  conc: {wasm: ./fn, concurrency: 4}
		  cpu: {wasm: ./fn, limits: {cpu: 0.5}}
		  proc: {builtin: upper, grants: [clock]}
		  both: {wasm: ./fn, go: ./fn}
		chains:
		  c: {route: /c, steps: [missing]}
		`)
	_, err := Parse("spry.yaml", []byte(y), dir, Options{})
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range []string{
		"spry.yaml:3: functions.missing.wasm: " + filepath.Join(dir, "nope.wasm") + ": no such file",
		`spry.yaml:4: functions.grant.grants[0]: unknown grant "network" (known: clock, random; the environment is granted by env:)`,
		`spry.yaml:4: functions.grant.grants[2]: "clock" granted twice`,
		"spry.yaml:5: functions.conc.concurrency: a wasm instance runs one step at a time: want 1, got 4",
		"spry.yaml:6: functions.cpu.limits.cpu: not for wasm: functions",
		"spry.yaml:7: functions.proc.grants: only for wasm: functions (this one is builtin:)",
		"spry.yaml:8: functions.both: want only one of builtin:, go:, exec:, python:, http:, lambda: or wasm:, got go: and wasm:",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

// A wasm: function runs in a line of steps: a graph with a fan-out, a join
// or a choice that has one at a step is refused there.
func TestWasmInGraph(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	must(t, os.WriteFile(filepath.Join(dir, "w.wasm"), []byte("\x00asm\x01\x00\x00\x00"), 0o644))
	y := yml(`
		app: a
		functions:
		  w: {wasm: ./w.wasm}
		  u: {builtin: upper}
		chains:
		  line: {route: /l, steps: {u: w, w: }}
		  fan:
		    route: /f
		    steps:
		      u: [w, x]
		      w: j
		      x: {function: u, next: j}
		      j: {function: u, join: all}
		`)
	_, err := Parse("spry.yaml", []byte(y), dir, Options{})
	if err == nil {
		t.Fatal("no error")
	}
	want := "spry.yaml:11: chains.fan.steps.w: function w is wasm:, which runs in a line of steps only (no fan-out, join or choose: in its chain)"
	if got := err.Error(); !strings.Contains(got, want) || strings.Contains(got, "chains.line") {
		t.Errorf("got:\n%s\nwant %q", got, want)
	}
}
