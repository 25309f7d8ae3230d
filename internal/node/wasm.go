package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/pool"
	rt "github.com/spry-dev/spry/internal/runtime"
	"github.com/spry-dev/spry/internal/runtime/wasm"
)

// An app's wasm: functions run in its sandbox host: one process, under the
// app's uid like its other instances, holding every wasm instance of the
// app (internal/runtime/wasm). Each wasm instance still has a slot, an id
// and a supervisor here, like a process instance; its supervisor asks the
// host to start and stop it instead of starting a process. The host has a
// descriptor endpoint of its own, which receives for all its instances
// (pool.StartHosted).
//
// The host starts with the app's first wasm instance and loads every wasm
// function of the app. When it dies, every instance in it dies with it:
// their supervisors clean up (their requests are answered, their buffers
// taken back) and start them again, which starts a new host.

// spares is how many ready clones the host keeps per function, so that a
// start (a cold start from zero, or a scale-up) takes one instead of
// making one.
const spares = 1

// compileTime is what loading a host's functions may take beyond the
// node's ready timeout (which bounds each guest's own initialisation):
// compiling a large module the first time, on a busy machine.
const compileTime = 10 * time.Minute

// sandbox is an app's sandbox host supervisor.
type sandbox struct {
	a   *app
	mu  sync.Mutex
	cur *hostProc
}

// hostProc is one run of the sandbox host process.
type hostProc struct {
	s    *sandbox
	id   uint16
	pid  int
	cmd  *exec.Cmd
	wire *wasm.Wire
	out  *lineWriter
	up   chan struct{} // closed when the host is up and its functions loaded, or it failed
	err  error         // why it did not come up (set before up closes)
	gone chan struct{} // closed when the process exited
	why  string        // how it exited (set before gone closes)

	mu     sync.Mutex
	waits  map[uint16]chan wasm.Event // an instance's next ready or stopped
	loaded map[int]wasm.Event
	onRes  map[uint16]func(wasm.Event) // restarts, by instance id
}

// host returns the running host, starting one if none runs; it waits until
// the host is up and has loaded the app's wasm functions.
func (s *sandbox) host(ctx context.Context) (*hostProc, error) {
	s.mu.Lock()
	h := s.cur
	if h != nil {
		select {
		case <-h.gone:
			h = nil
		default:
		}
	}
	if h == nil {
		var err error
		if h, err = s.start(); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.cur = h
	}
	s.mu.Unlock()
	select {
	case <-h.up:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if h.err != nil {
		return nil, h.err
	}
	return h, nil
}

// start starts a host process. The sandbox's mutex is held.
func (s *sandbox) start() (*hostProc, error) {
	a := s.a
	n := a.n
	id, err := n.ids.alloc()
	if err != nil {
		return nil, err
	}
	ho, err := a.fab.Add(id)
	if err != nil {
		n.ids.free(id)
		return nil, err
	}
	defer ho.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		a.fab.Remove(id)
		n.ids.free(id)
		return nil, fmt.Errorf("sandbox host: control socket: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "wasm-control")
	theirs := os.NewFile(uintptr(fds[1]), "wasm-control")
	defer theirs.Close()
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		a.fab.Remove(id)
		n.ids.free(id)
		return nil, fmt.Errorf("sandbox host: control socket: %w", err)
	}
	h := &hostProc{s: s, id: id, wire: wasm.NewWire(conn), up: make(chan struct{}), gone: make(chan struct{}),
		waits: map[uint16]chan wasm.Event{}, loaded: map[int]wasm.Event{}, onRes: map[uint16]func(wasm.Event){}}

	cmd := exec.Command(n.wasmExe, "wasm-host")
	cmd.Dir = "/"
	cmd.ExtraFiles = append([]*os.File{a.poolFile}, ho.Files...)
	cmd.ExtraFiles = append(cmd.ExtraFiles, theirs)
	env := append(rt.BaseEnv(), rt.Instance{App: a.cfg.Name, Function: "wasm-host", ID: id, Concurrency: 1, Files: len(ho.Files)}.Env()...)
	env = append(env,
		wasm.EnvControlFD+"="+strconv.Itoa(rt.PoolFD+1+len(ho.Files)),
		wasm.EnvCacheDir+"="+a.wasmCache,
		wasm.EnvApp+"="+a.cfg.Name,
	)
	cmd.Env = append(env, ho.Env...)
	h.out = n.output(a.cfg.Name, "wasm-host", id)
	cmd.Stdout, cmd.Stderr = h.out, h.out
	cmd.SysProcAttr = procAttr(a.uid, a.gid)
	a.register(id, &instance{f: &function{a: a, cfg: &config.Function{Name: "wasm-host"}}, id: id})
	if err := n.spawn.run(cmd.Start); err != nil {
		conn.Close()
		a.unregister(id)
		a.fab.Remove(id)
		n.ids.free(id)
		return nil, fmt.Errorf("sandbox host: start: %w", err)
	}
	h.cmd, h.pid = cmd, cmd.Process.Pid
	go h.wait(conn)
	go h.read()
	go h.load()
	return h, nil
}

// load waits for the host to be up, then loads every wasm function of the
// app and waits for each; the outcome closes h.up.
func (h *hostProc) load() {
	a := h.s.a
	n := a.n
	timer := time.NewTimer(n.cfg.ReadyTimeout + compileTime)
	defer timer.Stop()
	fail := func(err error) {
		h.err = err
		close(h.up)
		h.cmd.Process.Kill()
	}
	if err := h.await(0, timer.C); err != nil {
		fail(err)
		return
	}
	var fns []*function
	for _, f := range a.fns {
		if f.cfg.Kind != config.Wasm {
			continue
		}
		fns = append(fns, f)
		c := wasm.Command{Op: wasm.OpLoad, Fn: f.cfg.Index, Name: f.cfg.Name, Module: f.wasm,
			Memory: f.cfg.Limits.Memory, Timeout: f.cfg.Timeout, Spares: spares, InitTimeout: n.cfg.ReadyTimeout,
			Grants: wasm.Grants{Clock: f.cfg.HasGrant(config.GrantClock), Random: f.cfg.HasGrant(config.GrantRandom), Env: f.cfg.Env}}
		if err := h.wire.Send(c); err != nil {
			fail(fmt.Errorf("sandbox host: %w", err))
			return
		}
	}
	for _, f := range fns {
		for {
			h.mu.Lock()
			ev, ok := h.loaded[f.cfg.Index]
			h.mu.Unlock()
			if ok {
				if ev.Err != "" {
					fail(fmt.Errorf("%s:%d: functions.%s: %s", a.cfg.File, f.cfg.Line, f.cfg.Name, ev.Err))
					return
				}
				n.log.Info("wasm function loaded", "app", a.cfg.Name, "function", f.cfg.Name,
					"took", time.Duration(ev.Micros*1e3).Round(time.Millisecond), "compile", time.Duration(ev.CompileMicros*1e3).Round(time.Millisecond),
					"init", time.Duration(ev.InitMicros*1e3).Round(time.Millisecond), "snapshot_kib", ev.Snapshot>>10, "stored_kib", ev.Stored>>10)
				break
			}
			if err := h.await(1, timer.C); err != nil {
				fail(err)
				return
			}
		}
	}
	close(h.up)
}

// await waits for the next event of kind (0: up, 1: any load), for the
// host's death, or for the timer.
func (h *hostProc) await(kind int, timeout <-chan time.Time) error {
	h.mu.Lock()
	ch := h.waits[0]
	if ch == nil {
		ch = make(chan wasm.Event, 16)
		h.waits[0] = ch
	}
	h.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-h.gone:
		return fmt.Errorf("sandbox host exited (%s)%s", h.why, h.out.lastWords())
	case <-timeout:
		return fmt.Errorf("sandbox host: not up in %s%s", h.s.a.n.cfg.ReadyTimeout+compileTime, h.out.lastWords())
	}
}

// read dispatches the host's events until its control socket closes.
func (h *hostProc) read() {
	for {
		var ev wasm.Event
		if err := h.wire.Recv(&ev); err != nil {
			return
		}
		h.mu.Lock()
		switch ev.Ev {
		case wasm.EvUp, wasm.EvLoaded:
			if ev.Ev == wasm.EvLoaded {
				h.loaded[ev.Fn] = ev
			}
			if ch := h.waits[0]; ch != nil {
				select {
				case ch <- ev:
				default:
				}
			}
		case wasm.EvReady, wasm.EvStopped:
			if ch := h.waits[ev.ID]; ch != nil {
				select {
				case ch <- ev:
				default:
				}
			}
		case wasm.EvRestarted:
			if f := h.onRes[ev.ID]; f != nil {
				f(ev)
			}
		}
		h.mu.Unlock()
	}
}

// wait reaps the process; then the host is gone, with its endpoint.
func (h *hostProc) wait(conn net.Conn) {
	err := h.cmd.Wait()
	conn.Close()
	a := h.s.a
	h.why = exitReason(err)
	msg := fmt.Sprintf("spry: app %s: the sandbox host failed while running the request (%s)", a.cfg.Name, h.why)
	// Buffers the host itself held (a reply or a forward under way).
	a.reclaim(h.id, msg)
	a.fab.Remove(h.id)
	a.unregister(h.id)
	a.n.ids.free(h.id)
	close(h.gone)
	a.n.log.Info("sandbox host exited", "app", a.cfg.Name, "pid", h.pid, "why", h.why)
}

// stop asks the host to stop and waits for it.
func (s *sandbox) stop(grace time.Duration) {
	s.mu.Lock()
	h := s.cur
	s.cur = nil
	s.mu.Unlock()
	if h == nil {
		return
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.gone:
	case <-time.After(grace):
		h.cmd.Process.Kill()
		<-h.gone
	}
}

// pid returns the running host's process id (0: none).
func (s *sandbox) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return 0
	}
	select {
	case <-s.cur.gone:
		return 0
	default:
		return s.cur.pid
	}
}

// runHosted is runOnce for a wasm: instance: its host starts it in the
// slot, and it runs until it is drained, killed, or its host dies.
func (in *instance) runHosted(ctx context.Context, pre *hosted, onReady func(), log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) error {
	a := in.f.a
	n := a.n
	select {
	case <-in.kill:
	default:
	}
	began := time.Now()
	var h *hostProc
	var id uint16
	if pre != nil {
		h, id, began = pre.h, pre.id, pre.at
	} else {
		hctx, cancel := context.WithTimeout(ctx, n.cfg.ReadyTimeout+compileTime)
		var err error
		h, err = a.sandbox.host(hctx)
		cancel()
		if err != nil {
			return err
		}
		if id, err = n.ids.alloc(); err != nil {
			return err
		}
		began = time.Now()
		in.startHosted(h, id, in.f.startCapacity())
	}
	evs := make(chan wasm.Event, 4)
	h.mu.Lock()
	h.waits[id] = evs
	h.onRes[id] = func(ev wasm.Event) {
		in.mu.Lock()
		in.restarts++
		in.lastExit = ev.Why + "; replaced"
		in.mu.Unlock()
		log.Warn("wasm instance failed; the host replaced it", "id", id, "why", ev.Why)
	}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waits, id)
		delete(h.onRes, id)
		h.mu.Unlock()
	}()
	if err := h.wire.Send(wasm.Command{Op: wasm.OpStart, Fn: in.f.cfg.Index, Slot: in.slot, ID: id}); err != nil {
		in.cleanup(id, "sandbox host gone")
		return err
	}
	timer := time.NewTimer(n.cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case ev := <-evs:
		if ev.Err != "" {
			in.cleanup(id, ev.Err)
			return errors.New(ev.Err)
		}
		took := time.Since(began)
		in.mu.Lock()
		in.state, in.started = "ready", took
		in.mu.Unlock()
		log.Info("instance ready", "id", id, "host", h.pid, "start", took.Round(time.Microsecond),
			"in_host", time.Duration(ev.Micros*1e3).Round(time.Microsecond))
	case <-h.gone:
		in.cleanup(id, "sandbox host exited ("+h.why+")")
		return fmt.Errorf("sandbox host exited (%s)", h.why)
	case <-timer.C:
		in.stopUnconfirmed(h, id, evs)
		in.cleanup(id, "not started in time")
		return fmt.Errorf("%w (%s)", errNotReady, n.cfg.ReadyTimeout)
	case <-ctx.Done():
		in.stopUnconfirmed(h, id, evs)
		in.cleanup(id, "stopped before it was ready")
		return ctx.Err()
	}
	onReady()
	var why string
	select {
	case <-h.gone:
		why = "sandbox host exited (" + h.why + ")"
	case reason := <-in.kill:
		// The host stops steps at their deadline itself; one that does
		// not means the host is stuck: restart it, and every instance in
		// it with it.
		log.Warn("killing the sandbox host", "id", id, "pid", h.pid, "why", reason)
		h.cmd.Process.Kill()
		<-h.gone
		why = reason + "; sandbox host killed"
	case <-ctx.Done():
		in.setState("draining")
		a.pool.SetSlotState(in.slot, pool.SlotDraining)
		st := a.pool.Stats(in.slot)
		limit := time.Now().Add(in.f.cfg.Timeout + n.cfg.StopGrace)
	drain:
		for (st.Queue.Load() > 0 || st.InFlight.Load() > 0 || a.pool.Holding(id) > 0) && time.Now().Before(limit) {
			select {
			case <-h.gone:
				why = "sandbox host exited while draining (" + h.why + ")"
				break drain
			case <-time.After(2 * time.Millisecond):
			}
		}
		if why == "" {
			why = "stopped"
			if err := h.wire.Send(wasm.Command{Op: wasm.OpStop, ID: id}); err == nil {
				select {
				case <-evs:
				case <-h.gone:
				case <-time.After(n.cfg.StopGrace):
					why = "did not stop in time"
				}
			}
		}
	}
	in.cleanup(id, why)
	return errors.New(why)
}

// stopUnconfirmed stops instance id, whose start the host has not
// confirmed, at the host: the slot leaves the routing table, and the host
// stops the instance once its start (under way, or done at its first
// descriptor) is through, finishing what it queued; without this the host
// would keep an instance the node no longer knows. It waits for the host's
// answer at most the node's stop grace.
func (in *instance) stopUnconfirmed(h *hostProc, id uint16, evs <-chan wasm.Event) {
	a := in.f.a
	a.pool.SetSlotState(in.slot, pool.SlotDraining)
	if err := h.wire.Send(wasm.Command{Op: wasm.OpStop, ID: id}); err != nil {
		return
	}
	limit := time.NewTimer(a.n.cfg.StopGrace)
	defer limit.Stop()
	for {
		select {
		case ev := <-evs:
			if ev.Ev == wasm.EvStopped {
				return
			}
		case <-h.gone:
			return
		case <-limit.C:
			return
		}
	}
}

// hosted is a wasm instance's id and host, given before its supervisor
// runs (instance.claimHosted), and when it was claimed (its start began).
type hosted struct {
	h  *hostProc
	id uint16
	at time.Time
}

// claimHosted starts a wasm instance in the slot at once, when the app's
// sandbox host is up: the supervisor about to start takes it over. So a
// request waiting for the function (a cold start from zero) can go out as
// soon as the gateway's call to the node returns, without waiting for the
// supervisor goroutine to be scheduled. The function's mutex is held.
func (in *instance) claimHosted() *hosted {
	a := in.f.a
	h := a.sandbox.running()
	if h == nil {
		return nil
	}
	id, err := a.n.ids.alloc()
	if err != nil {
		return nil
	}
	at := time.Now()
	in.startHosted(h, id, in.f.startCapacityLocked())
	return &hosted{h: h, id: id, at: at}
}

// startHosted gives the slot to wasm instance id of host h and makes it
// ready at once: the host starts the instance at its first descriptor
// (Host.adopt) if that comes before the start command, so a request
// waiting for it goes out now, without a round trip to the host and back.
// The host's answer to the start command only confirms it (or says why it
// could not start it: the requests sent meanwhile are answered and taken
// back then).
func (in *instance) startHosted(h *hostProc, id uint16, capacity uint32) {
	a := in.f.a
	a.pool.StartHosted(in.slot, id, h.id, capacity)
	in.mu.Lock()
	in.id, in.pid, in.state, in.ready = id, h.pid, "starting", nil
	in.mu.Unlock()
	a.register(id, in)
	a.pool.SetSlotState(in.slot, pool.SlotReady)
	a.gw.InstanceReady()
}

// running returns the app's sandbox host if it is up, without waiting or
// starting one (nil otherwise).
func (s *sandbox) running() *hostProc {
	s.mu.Lock()
	h := s.cur
	s.mu.Unlock()
	if h == nil || !closed(h.up) || h.err != nil || closed(h.gone) {
		return nil
	}
	return h
}

// closed reports whether ch is closed (a nil channel is).
func closed(ch <-chan struct{}) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// makeWasmCache makes the directory the app's sandbox host keeps compiled
// modules in: one per uid (compiled code is trusted as it is loaded, so no
// app may write another's), kept across runs.
func (a *app) makeWasmCache() error {
	if !a.hasWasm() {
		return nil
	}
	owner := "self"
	if a.uid >= 0 {
		owner = strconv.Itoa(a.uid)
	}
	a.wasmCache = filepath.Join(a.n.cfg.CacheDir, "wasm", owner)
	if err := os.MkdirAll(a.wasmCache, 0o700); err != nil {
		return fmt.Errorf("wasm cache: %w", err)
	}
	os.Chmod(filepath.Dir(a.wasmCache), 0o755)
	if a.uid >= 0 {
		if err := os.Chown(a.wasmCache, a.uid, a.gid); err != nil {
			return fmt.Errorf("wasm cache: %w", err)
		}
		if !reachable(a.wasmCache, a.uid, a.gid) {
			a.n.log.Warn("the wasm cache is closed to the app's uid: its sandbox host compiles every module at each start (make the cache directory reachable)",
				"app", a.cfg.Name, "dir", a.wasmCache, "uid", a.uid)
			a.wasmCache = ""
		}
	}
	return nil
}

// hasWasm reports whether the app has wasm: functions.
func (a *app) hasWasm() bool {
	for _, f := range a.cfg.Functions {
		if f.Kind == config.Wasm {
			return true
		}
	}
	return false
}

// wasmModule resolves a wasm: function's module: the file it names, or the
// Go package built for WASI (cached by content).
func (n *Node) wasmModule(ctx context.Context, a *config.App, f *config.Function) (string, error) {
	if !f.WasmBuild {
		return f.Wasm, nil
	}
	began := time.Now()
	mod, err := buildGoFor(ctx, filepath.Join(n.cfg.CacheDir, "build"), f.Wasm, a.Dir, wasmTarget)
	if err != nil {
		return "", fmt.Errorf("%s:%d: functions.%s: %w", a.File, f.Line, f.Name, err)
	}
	n.log.Info("function built", "app", a.Name, "function", f.Name, "package", f.Wasm, "target", "wasip1/wasm", "took", time.Since(began).Round(time.Millisecond))
	return mod, nil
}

// wasmTarget builds a Go package into a wasm: function's module.
var wasmTarget = buildTarget{env: wasm.GoBuildEnv, flags: wasm.GoBuildFlags, suffix: ".wasm"}
