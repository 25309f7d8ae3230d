// Package wasm runs a node's wasm functions: the sandbox host, one process
// per app, holds the app's wasm instances, each a wazero module instance
// with a linear memory of its own, and runs their steps as calls.
//
// An Engine compiles modules (cached on disk by content) and loads
// Functions; a Function makes Instances; an Instance runs one step at a
// time on a buffer of the app's pool:
//
//	e, err := wasm.NewEngine(ctx, wasm.EngineConfig{CacheDir: dir})
//	f, err := e.Load(ctx, wasm.FunctionConfig{Name: "resize", Module: bin, Window: p.BufferSize()})
//	in, err := f.New(ctx)              // microseconds: a clone of f's snapshot
//	out, stop, err := in.Step(p, id, buf, hop)
//	in.Interrupt()                     // from any goroutine: the running step traps
//	in.Close()
//
// Loading a function prepares its module (wasmbin.Prepare: an interrupt
// check at every function entry and loop header, data made passive),
// compiles it, and initialises one template instance: the module's start
// function, its _initialize, then spry_init, which runs the guest's main.
// The template's memory and globals after that are the function's
// snapshot; every instance is a copy-on-write clone of it, so starting one
// costs a mapping and wazero's instantiation, not the guest's
// initialisation (milliseconds for a Go guest).
package wasm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/spry-dev/spry/internal/runtime/wasm/abi"
	"github.com/spry-dev/spry/internal/runtime/wasm/wasmbin"
)

// Errors of loading and running functions.
var (
	ErrNotSupported = errors.New("wasm: not supported on this platform")
	// ErrModule: the module is not a function spry can run.
	ErrModule = errors.New("wasm: not a spry function")
)

// EngineConfig configures an Engine.
type EngineConfig struct {
	// CacheDir keeps compiled modules, by content, across runs ("" keeps
	// them in memory only).
	CacheDir string
}

// Engine compiles and runs the wasm functions of one sandbox host.
type Engine struct {
	rt    wazero.Runtime
	cache wazero.CompilationCache

	mu       sync.Mutex
	compiled map[[32]byte]*compiled // by the prepared module's hash
}

// compiled is a compiled module shared by the functions of one content
// (several functions often run one module with different settings):
// compiled once, closed with its last function.
type compiled struct {
	ready chan struct{}
	cm    wazero.CompiledModule
	err   error
	refs  int
}

// compile returns the compiled module for bin, compiling it once however
// many functions ask at the same time.
func (e *Engine) compile(ctx context.Context, bin []byte) (wazero.CompiledModule, [32]byte, error) {
	key := sha256.Sum256(bin)
	e.mu.Lock()
	c := e.compiled[key]
	if c == nil {
		c = &compiled{ready: make(chan struct{})}
		e.compiled[key] = c
		e.mu.Unlock()
		c.cm, c.err = e.rt.CompileModule(ctx, bin)
		close(c.ready)
		e.mu.Lock()
		if c.err != nil {
			delete(e.compiled, key)
		}
	}
	c.refs++
	e.mu.Unlock()
	<-c.ready
	if c.err != nil {
		e.release(key)
		return nil, key, c.err
	}
	return c.cm, key, nil
}

// release drops a function's reference to its compiled module.
func (e *Engine) release(key [32]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.compiled[key]
	if c == nil {
		return
	}
	if c.refs--; c.refs <= 0 {
		delete(e.compiled, key)
		if c.cm != nil {
			c.cm.Close(context.Background())
		}
	}
}

// NewEngine makes an Engine with WASI available to its functions.
func NewEngine(ctx context.Context, c EngineConfig) (*Engine, error) {
	if !supported {
		return nil, ErrNotSupported
	}
	rc := wazero.NewRuntimeConfigCompiler()
	e := &Engine{compiled: map[[32]byte]*compiled{}}
	if c.CacheDir != "" {
		cache, err := wazero.NewCompilationCacheWithDir(c.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm: compilation cache %s: %w", c.CacheDir, err)
		}
		e.cache = cache
		rc = rc.WithCompilationCache(cache)
	}
	e.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, e.rt); err != nil {
		e.rt.Close(ctx)
		return nil, fmt.Errorf("wasm: WASI: %w", err)
	}
	return e, nil
}

// Close releases everything the engine compiled and runs.
func (e *Engine) Close(ctx context.Context) error {
	err := e.rt.Close(ctx)
	if e.cache != nil {
		e.cache.Close(ctx)
	}
	return err
}

// Grants are the capabilities a function gets beyond its own memory and
// the payload it is handed. The zero value grants nothing.
type Grants struct {
	Clock  bool     // the host's real clocks and sleep (else a clock frozen at start that only counts calls)
	Random bool     // the host's random source (else a deterministic one)
	Env    []string // KEY=value: the guest's environment
}

// FunctionConfig is how to run one function.
type FunctionConfig struct {
	Name   string
	Module []byte // the .wasm file
	// Memory is the most linear memory one instance may have, in bytes
	// (rounded up to 64 KiB; default DefaultMemory).
	Memory uint64
	// Window is the size of the app's pool buffers: a guest gets an input
	// and an output window of this size.
	Window uint32
	Grants Grants
	// Output receives the guests' standard output and error (nil
	// discards them).
	Output io.Writer
	// InitTimeout bounds the guest's own initialisation (its main up to
	// sdk.Serve); default 30 s.
	InitTimeout time.Duration
	// MapMin is the smallest payload whose pages are mapped into the
	// guest instead of copied (see mapping_linux.go); 0 means
	// DefaultMapMin, negative never.
	MapMin int
}

// DefaultMapMin is the payload size from which mapping the buffer's pages
// into a guest costs less than copying the payload in and the output out
// (BenchmarkStepLarge on the machine in BENCHMARKS.md: copying wins up to
// 512 KiB, 40 µs against 80; mapping from 1 MiB, 110 µs against 150-380).
const DefaultMapMin = 1 << 20

// DefaultMemory is an instance's memory limit when its config names none.
const DefaultMemory = 128 << 20

// Function is a loaded function: its compiled module and its snapshot.
type Function struct {
	e    *Engine
	cfg  FunctionConfig
	prep *wasmbin.Prepared
	cm   wazero.CompiledModule
	key  [32]byte // of the compiled module (Engine.compile)
	mc   wazero.ModuleConfig

	limit   uint64
	mapMin  int      // see FunctionConfig.MapMin; 0: never
	img     *image   // nil when every instance initialises itself
	globals []uint64 // snapshot values of prep.Globals
	frame   uint32   // the frame's address in the snapshot
	in, out uint32   // the windows' addresses

	// Stats of the load.
	Compile, Init time.Duration

	live atomic.Int64 // instances made and not closed
}

// clockBase counts the fake clock of functions without the clock grant:
// process-wide, so it never goes back between an instance and the
// snapshot it was cloned from.
var fakeClock atomic.Int64

func fakeNanotime() int64 { return fakeClock.Add(1000) }

// Load prepares, compiles and initialises a function. Errors name what is
// wrong with the module (ErrModule, wasmbin.ErrFormat) or what its
// initialisation did.
func (e *Engine) Load(ctx context.Context, c FunctionConfig) (*Function, error) {
	if c.Window == 0 {
		return nil, fmt.Errorf("wasm: function %s: no window size", c.Name)
	}
	if c.Memory == 0 {
		c.Memory = DefaultMemory
	}
	limit := (c.Memory + wasmPage - 1) &^ (wasmPage - 1)
	prep, err := wasmbin.Prepare(c.Module)
	if err != nil {
		return nil, err
	}
	for _, imp := range prep.Imports {
		if !strings.HasPrefix(imp, wasi_snapshot_preview1.ModuleName+".") {
			return nil, fmt.Errorf("%w: it imports %s; a wasm function gets WASI (%s) and nothing else",
				ErrModule, imp, wasi_snapshot_preview1.ModuleName)
		}
	}
	has := map[string]bool{}
	for _, x := range prep.Exports {
		has[x] = true
	}
	for _, x := range []string{abi.ExportInit, abi.ExportHandle} {
		if !has[x] {
			return nil, fmt.Errorf("%w: it does not export %s (build a Go function with the spry SDK, GOOS=wasip1 -buildmode=c-shared)", ErrModule, x)
		}
	}
	if uint64(prep.Memory.Min)*wasmPage > limit {
		return nil, fmt.Errorf("%w: it needs %d KiB of memory to start; its limit is %d KiB", ErrModule, uint64(prep.Memory.Min)*64, limit>>10)
	}
	f := &Function{e: e, cfg: c, prep: prep, limit: limit, mapMin: c.MapMin}
	if f.mapMin == 0 {
		f.mapMin = DefaultMapMin
	}
	if f.mapMin < 0 {
		f.mapMin = 0
	}
	began := time.Now()
	if f.cm, f.key, err = e.compile(ctx, prep.Binary); err != nil {
		return nil, fmt.Errorf("%w: compile: %v", ErrModule, err)
	}
	f.Compile = time.Since(began)
	f.mc = f.moduleConfig()

	began = time.Now()
	tpl, err := f.initialise(ctx)
	if err != nil {
		e.release(f.key)
		return nil, err
	}
	f.Init = time.Since(began)
	if prep.NoSnapshot != "" {
		tpl.close()
		return f, nil
	}
	// The snapshot: the template's memory and mutable globals.
	for _, g := range prep.Globals {
		f.globals = append(f.globals, tpl.mod.ExportedGlobal(g.Export).Get())
	}
	if f.img, err = newImage(c.Name, tpl.mem.bytes()); err != nil {
		tpl.close()
		e.release(f.key)
		return nil, err
	}
	tpl.close()
	return f, nil
}

func (f *Function) moduleConfig() wazero.ModuleConfig {
	c := f.cfg
	mc := wazero.NewModuleConfig().WithName("").WithStartFunctions().WithArgs(c.Name)
	if c.Output != nil {
		mc = mc.WithStdout(c.Output).WithStderr(c.Output)
	}
	for _, kv := range c.Grants.Env {
		k, v, _ := strings.Cut(kv, "=")
		mc = mc.WithEnv(k, v)
	}
	if c.Grants.Clock {
		mc = mc.WithSysWalltime().WithSysNanotime().WithSysNanosleep()
	} else {
		mc = mc.WithNanotime(fakeNanotime, 1000).WithNanosleep(func(ns int64) { fakeClock.Add(ns) })
	}
	if c.Grants.Random {
		mc = mc.WithRandSource(cryptoRand{})
	}
	return mc
}

// Close releases the function's compiled module and snapshot. Its
// instances must be closed first.
func (f *Function) Close(ctx context.Context) error {
	f.img.close()
	f.e.release(f.key)
	return nil
}

// Name returns the function's name.
func (f *Function) Name() string { return f.cfg.Name }

// Snapshot reports whether instances are clones of a snapshot, with the
// snapshot's size and the bytes it stores, or why not.
func (f *Function) Snapshot() (ok bool, size, stored uint64, why string) {
	if f.img == nil {
		return false, 0, 0, f.prep.NoSnapshot
	}
	return true, f.img.size, f.img.data, ""
}

// initialise instantiates the module with fresh memory and runs its
// initialisation: data segments, start function, _initialize, spry_init.
func (f *Function) initialise(ctx context.Context) (*Instance, error) {
	in, err := f.instantiate(ctx, nil)
	if err != nil {
		return nil, err
	}
	limit := f.cfg.InitTimeout
	if limit <= 0 {
		limit = 30 * time.Second
	}
	timer := time.AfterFunc(limit, in.Interrupt)
	defer timer.Stop()
	mem := in.mem.bytes()
	for _, s := range f.prep.Data {
		if uint64(s.Offset)+uint64(len(s.Bytes)) > uint64(len(mem)) {
			in.close()
			return nil, fmt.Errorf("%w: a data segment lies outside its memory", ErrModule)
		}
		copy(mem[s.Offset:], s.Bytes)
	}
	for _, name := range []string{wasmbin.StartExport, "_initialize"} {
		if fn := in.mod.ExportedFunction(name); fn != nil && (name != wasmbin.StartExport || f.prep.Start) {
			if _, err := fn.Call(ctx); err != nil {
				in.close()
				return nil, fmt.Errorf("wasm: function %s: its initialisation (%s) failed: %w", f.cfg.Name, name, initError(err, in, limit))
			}
		}
	}
	res, err := in.mod.ExportedFunction(abi.ExportInit).Call(ctx, uint64(f.cfg.Window))
	if err != nil {
		in.close()
		return nil, fmt.Errorf("wasm: function %s: %s (its main, up to sdk.Serve) failed: %w", f.cfg.Name, abi.ExportInit, initError(err, in, limit))
	}
	if err := f.frameAt(uint32(res[0]), in.mem.bytes()); err != nil {
		in.close()
		return nil, err
	}
	in.bind(f)
	return in, nil
}

// frameAt checks the frame the guest's spry_init returned and records it.
func (f *Function) frameAt(addr uint32, mem []byte) error {
	if addr == 0 {
		return fmt.Errorf("%w: %s registered no handler (does main call sdk.Serve?)", ErrModule, abi.ExportInit)
	}
	bad := func(what string) error {
		return fmt.Errorf("%w: %s returned a bad frame: %s", ErrModule, abi.ExportInit, what)
	}
	end := uint64(addr) + abi.FrameSize
	if addr%abi.PageSize != 0 || end > uint64(len(mem)) {
		return bad("not a page inside its memory")
	}
	fr := mem[addr:end]
	if le.Uint32(fr[abi.OffMagic:]) != abi.Magic || le.Uint32(fr[abi.OffFrameSize:]) != abi.FrameSize {
		return bad("wrong magic or size (an SDK of another version?)")
	}
	win := uint64(le.Uint32(fr[abi.OffWindow:]))
	in, out := le.Uint32(fr[abi.OffIn:]), le.Uint32(fr[abi.OffOut:])
	if win != uint64(f.cfg.Window) {
		return bad("windows of the wrong size")
	}
	for _, w := range []uint32{in, out} {
		if w%abi.PageSize != 0 || uint64(w)+win > uint64(len(mem)) {
			return bad("a window outside its memory")
		}
		if overlap(uint64(w), win, uint64(addr), abi.FrameSize) {
			return bad("a window over the frame")
		}
	}
	if overlap(uint64(in), win, uint64(out), win) {
		return bad("overlapping windows")
	}
	f.frame, f.in, f.out = addr, in, out
	return nil
}

func overlap(a, an, b, bn uint64) bool { return a < b+bn && b < a+an }

// instantiate makes a module instance with memory cloned from img (fresh
// when nil).
func (f *Function) instantiate(ctx context.Context, img *image) (*Instance, error) {
	mem, err := newLinearMemory(f.limit, img)
	if err != nil {
		return nil, err
	}
	actx := experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(func(cap, max uint64) experimental.LinearMemory {
		return mem
	}))
	mod, err := f.e.rt.InstantiateModule(actx, f.cm, f.mc)
	if err != nil {
		mem.Free()
		return nil, fmt.Errorf("wasm: function %s: instantiate: %w", f.cfg.Name, err)
	}
	f.live.Add(1)
	in := &Instance{f: f, mod: mod, mem: mem}
	in.irq = mod.ExportedGlobal(wasmbin.InterruptExport).(api.MutableGlobal)
	in.fuel = mod.ExportedGlobal(wasmbin.FuelExport).(api.MutableGlobal)
	return in, nil
}

// New makes an instance: a clone of the snapshot, or, for a function
// without one, a fresh instance that runs its own initialisation.
func (f *Function) New(ctx context.Context) (*Instance, error) {
	if f.img == nil {
		return f.initialise(ctx)
	}
	in, err := f.instantiate(ctx, f.img)
	if err != nil {
		return nil, err
	}
	for i, g := range f.prep.Globals {
		in.mod.ExportedGlobal(g.Export).(api.MutableGlobal).Set(f.globals[i])
	}
	in.bind(f)
	return in, nil
}

// initError describes a failed initialisation.
func initError(err error, in *Instance, limit time.Duration) error {
	if in.Interrupted() {
		return fmt.Errorf("%w: it did not finish in %s", ErrInterrupted, limit)
	}
	return describe(err, in)
}

// cryptoRand is the host's random source for the random grant.
type cryptoRand struct{}

// wasmPage is the unit of a linear memory's size.
const wasmPage = 64 << 10
