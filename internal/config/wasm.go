package config

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The wasm: kind: a WebAssembly module that the app's sandbox host runs
// (internal/runtime/wasm), given nothing but its own memory and the
// payload it is handed unless grants: says otherwise.

// Grants a wasm: function may be given.
const (
	GrantClock  = "clock"  // the host's real clocks and sleep
	GrantRandom = "random" // the host's random source
)

var grantNames = []string{GrantClock, GrantRandom}

// DefaultWasmMemory is a wasm: instance's memory limit when limits.memory
// names none.
const DefaultWasmMemory = 128 << 20

// wasmKeys are the function keys of this file.
var wasmKeys = []string{"wasm", "grants"}

type wasmSpec struct {
	wasm   value[string]
	grants value[[]item]
}

// wasmField decodes key into w, reporting whether it is one of wasmKeys.
func (d *decoder) wasmField(w *wasmSpec, key, path string, kn, v *yaml.Node) bool {
	switch key {
	case "wasm":
		w.wasm = d.str(v, path)
	case "grants":
		w.grants = d.strs(kn, v, path)
	default:
		return false
	}
	return true
}

// validate fills f from wasm:: a .wasm file, or a Go package (a directory
// or an import path) that spry builds for WASI.
func (w *wasmSpec) validate(f *Function, dir, path string, ps *problems) {
	f.Kind = Wasm
	v := w.wasm.v
	if strings.HasSuffix(v, ".wasm") {
		p, err := resolve(v, dir)
		if err == nil {
			err = isFile(p)
		}
		if err != nil {
			ps.add(w.wasm.line, path+".wasm", "%s: %s", p, reason(err))
		}
		f.Wasm = p
		return
	}
	f.Wasm = goPackage(v, dir, w.wasm.line, path+".wasm", ps)
	f.WasmBuild = true
}

// check reports grants: on another kind, and what a wasm: function cannot
// do with its other settings.
func (w *wasmSpec) check(f *Function, sp *fnSpec, path string, ps *problems) {
	if w.grants.line != 0 && f.Kind != 0 && f.Kind != Wasm {
		ps.add(w.grants.line, path+".grants", "only for wasm: functions (this one is %s:)", f.Kind)
	}
	if f.Kind != Wasm {
		return
	}
	for _, g := range w.grants.v {
		switch {
		case !slices.Contains(grantNames, g.v):
			ps.add(g.line, g.path, "unknown grant %q (known: %s; the environment is granted by env:)", g.v, strings.Join(grantNames, ", "))
		case slices.Contains(f.Grants, g.v):
			ps.add(g.line, g.path, "%q granted twice", g.v)
		default:
			f.Grants = append(f.Grants, g.v)
		}
	}
	if f.Concurrency > 1 {
		ps.add(sp.concurrency.line, path+".concurrency", "a wasm instance runs one step at a time: want 1, got %d (scale with instances: or scale:)", f.Concurrency)
	}
	if sp.cpu.ok() {
		ps.add(sp.cpu.line, path+".limits.cpu", "not for wasm: functions (their instances share the app's sandbox host; a step is stopped at its timeout:)")
	}
	if f.Limits.Memory == 0 {
		f.Limits.Memory = DefaultWasmMemory
	}
}

// HasGrant reports whether the wasm: function f was granted g.
func (f *Function) HasGrant(g string) bool { return slices.Contains(f.Grants, g) }
