package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/pool"
	rt "github.com/spry-dev/spry/internal/runtime"
	"github.com/spry-dev/spry/internal/transport"
	"github.com/spry-dev/spry/sdk"
)

// instance is one slot of a function: the process running in it now, and
// the ones before it. Its supervisor goroutine starts the process, waits
// for it to announce itself, and restarts it when it dies.
type instance struct {
	f    *function
	slot uint32

	mu       sync.Mutex
	id       uint16
	pid      int
	state    string // starting, ready, restarting, draining, stopped
	restarts int
	lastExit string
	started  time.Duration      // how long the last process took from start to ready
	ready    chan struct{}      // closed when the current process announced itself
	kill     chan string        // asks the supervisor to kill the process (why)
	group    *instanceGroup     // the slot's cgroup, when the function has limits
	halt     context.CancelFunc // drains and stops the supervisor; nil when none runs
	done     chan struct{}      // closed when the last supervisor returned
}

// run starts a supervisor for the slot unless one runs. It waits for a
// draining predecessor to finish first. The outcome of its first start goes
// to first, when not nil. The function's mutex is held.
func (in *instance) run(first chan<- error) {
	if in.halt != nil {
		if first != nil {
			first <- nil
		}
		return
	}
	n := in.f.a.n
	ctx, cancel := context.WithCancel(n.supCtx)
	in.halt = cancel
	prev, done := in.done, make(chan struct{})
	in.done = done
	var pre *hosted
	if in.f.cfg.Kind == config.Wasm && closed(prev) {
		pre = in.claimHosted()
	}
	n.sup.Add(1)
	go func() {
		defer n.sup.Done()
		defer close(done)
		if prev != nil {
			<-prev
		}
		in.supervise(ctx, first, pre)
	}()
}

// stop drains the slot's instance and stops its supervisor, in the
// background. The function's mutex is held.
func (in *instance) stop() {
	if in.halt != nil {
		in.halt()
		in.halt = nil
	}
}

// InstanceStatus is an instance as /v1/status shows it.
type InstanceStatus struct {
	ID           uint16 `json:"id"`
	Slot         uint32 `json:"slot"`
	PID          int    `json:"pid"`
	State        string `json:"state"`
	Inflight     int32  `json:"inflight"`
	Queue        int32  `json:"queue"`
	Served       uint64 `json:"served"`
	Errors       uint64 `json:"errors"`       // server errors: the function failed (an error, a panic, a 5xx)
	ClientErrors uint64 `json:"clientErrors"` // the function answered 4xx: the request's fault
	Stale        uint64 `json:"stale"`
	Restarts     int    `json:"restarts"`
	LastExit     string `json:"lastExit,omitempty"`
	// StartMillis is how long the current (or last) process took from its
	// start to its ready message: the cold start.
	StartMillis float64 `json:"startMillis"`
	// MemoryBytes is the memory the instance uses now, and CPUThrottled
	// how often (and ThrottledMillis how long) the kernel held it back for
	// its CPU limit: read from its cgroup, for functions with limits.
	MemoryBytes     uint64  `json:"memoryBytes,omitempty"`
	CPUThrottled    uint64  `json:"cpuThrottled,omitempty"`
	ThrottledMillis float64 `json:"throttledMillis,omitempty"`
	// Kernel are the eBPF program's counters of the instance's endpoint
	// (skmsg only): descriptors sent, received, and refused by the app
	// boundary or for naming no instance.
	Kernel *KernelCounters `json:"kernel,omitempty"`
}

// KernelCounters are the eBPF data path's per-endpoint counters.
type KernelCounters struct {
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Dropped  uint64 `json:"dropped"`
}

func (in *instance) status() InstanceStatus {
	in.mu.Lock()
	s := InstanceStatus{ID: in.id, Slot: in.slot, PID: in.pid, State: in.state, Restarts: in.restarts, LastExit: in.lastExit,
		StartMillis: float64(in.started.Microseconds()) / 1000}
	g := in.group
	in.mu.Unlock()
	if g != nil {
		var ns uint64
		s.MemoryBytes, s.CPUThrottled, ns = g.usage()
		if s.PID == 0 {
			s.MemoryBytes = 0
		}
		s.ThrottledMillis = float64(ns) / 1e6
	}
	st := in.f.a.pool.Stats(in.slot)
	s.Inflight, s.Queue = st.InFlight.Load(), max(st.Queue.Load(), 0)
	if sm := in.f.a.n.bpf; sm != nil && s.ID != 0 && in.f.a.transport == config.TransportSKMsg {
		if c, err := sm.Counters(s.ID); err == nil {
			s.Kernel = &KernelCounters{Sent: c.Sent, Received: c.Received, Dropped: c.Dropped}
		}
	}
	s.Served, s.Errors, s.ClientErrors, s.Stale = st.Served.Load(), st.Errors.Load(), st.ClientErrors.Load(), st.Stale.Load()
	return s
}

func (s InstanceStatus) startDuration() time.Duration {
	return time.Duration(s.StartMillis * float64(time.Millisecond))
}

func (in *instance) setState(s string) {
	in.mu.Lock()
	in.state = s
	in.mu.Unlock()
}

// announce is called when endpoint id said it is ready.
func (in *instance) announce(id uint16) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.id == id && in.ready != nil {
		select {
		case <-in.ready:
		default:
			close(in.ready)
		}
	}
}

// killHung asks the supervisor to kill a process stuck in a handler.
func (in *instance) killHung(timeout time.Duration) {
	select {
	case in.kill <- fmt.Sprintf("a handler ran longer than the function's timeout (%s)", timeout):
	default:
	}
}

// supervise runs the slot until ctx ends. The outcome of the first start
// (nil once ready) goes to first.
func (in *instance) supervise(ctx context.Context, first chan<- error, pre *hosted) {
	if in.kill == nil {
		in.kill = make(chan string, 1)
	}
	log := in.f.a.n.log.With("app", in.f.a.cfg.Name, "function", in.f.cfg.Name, "slot", in.slot)
	backoff := time.Duration(0)
	for {
		began := time.Now()
		err := in.runOnce(ctx, pre, func() {
			if first != nil {
				first <- nil
				first = nil
			}
		}, log)
		// The first run took the claimed start, if any.
		pre = nil
		if first != nil { // the slot's first process never became ready
			first <- fmt.Errorf("%s:%d: function %s: %w", in.f.a.cfg.File, in.f.cfg.Line, in.f.cfg.Name, err)
			in.setState("stopped")
			return
		}
		if ctx.Err() != nil {
			in.setState("stopped")
			return
		}
		// Restart at once after a long healthy run, with growing delays
		// while it keeps failing.
		if time.Since(began) > 10*time.Second {
			backoff = 0
		} else {
			backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
		}
		in.mu.Lock()
		in.restarts++
		in.state = "restarting"
		in.mu.Unlock()
		log.Warn("instance exited; restarting", "why", err, "in", backoff)
		select {
		case <-ctx.Done():
			in.setState("stopped")
			return
		case <-time.After(backoff):
		}
	}
}

var errNotReady = errors.New("instance did not announce itself in time")

// runOnce runs one process in the slot, from start to exit, and cleans up
// after it: its buffers are taken back and their requests salvaged. It
// calls onReady when the process announced itself and is in the routing
// table.
func (in *instance) runOnce(ctx context.Context, pre *hosted, onReady func(), log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) error {
	if in.f.cfg.Kind == config.Wasm {
		return in.runHosted(ctx, pre, onReady, log)
	}
	a := in.f.a
	n := a.n
	began := time.Now()
	select {
	case <-in.kill: // meant for a process that is gone
	default:
	}
	id, err := n.ids.alloc()
	if err != nil {
		return err
	}
	ho, err := a.fab.Add(id)
	if err != nil {
		n.ids.free(id)
		return err
	}
	defer ho.Close()
	a.pool.StartSlot(in.slot, id, in.f.startCapacity())
	in.mu.Lock()
	in.id, in.pid, in.state, in.ready = id, 0, "starting", make(chan struct{})
	ready := in.ready
	in.mu.Unlock()
	a.register(id, in)

	cmd, out := in.command(id, ho)
	if err := in.limit(cmd); err != nil {
		in.cleanup(id, err.Error())
		return err
	}
	forked := time.Now()
	err = n.spawn.run(cmd.Start)
	if f, ok := cmd.SysProcAttr.CgroupFD, cmd.SysProcAttr.UseCgroupFD; ok {
		syscall.Close(f)
	}
	if err != nil {
		in.cleanup(id, "could not start: "+err.Error())
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	ho.Close() // the child holds its endpoint now
	spawned := time.Now()
	in.mu.Lock()
	in.pid = cmd.Process.Pid
	in.mu.Unlock()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if in.group != nil {
		if err := in.group.started(cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			<-exited
			in.cleanup(id, err.Error())
			return err
		}
	}

	timer := time.NewTimer(n.cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		a.pool.SetSlotState(in.slot, pool.SlotReady)
		a.syncRemote()       // a ready instance here: the function's requests stay here
		a.gw.InstanceReady() // requests waiting for one go now
		took := time.Since(spawned)
		in.mu.Lock()
		in.state, in.started = "ready", took
		in.mu.Unlock()
		// The phases of a start: the node's preparation (endpoint,
		// command), the fork and exec (cmd.Start returns once the
		// program is exec'd), and the program's own start to its ready
		// message.
		log.Info("instance ready", "id", id, "pid", cmd.Process.Pid, "start", took.Round(10*time.Microsecond),
			"prepare", forked.Sub(began).Round(10*time.Microsecond), "exec", spawned.Sub(forked).Round(10*time.Microsecond))
	case err := <-exited:
		why := in.exitReason(err)
		in.cleanup(id, why)
		return fmt.Errorf("instance exited before it was ready (%s)%s", why, out.lastWords())
	case <-timer.C:
		cmd.Process.Kill()
		in.cleanup(id, exitReason(<-exited))
		return fmt.Errorf("%w (%s)%s", errNotReady, n.cfg.ReadyTimeout, out.lastWords())
	case <-ctx.Done():
		cmd.Process.Kill()
		in.cleanup(id, exitReason(<-exited))
		return ctx.Err()
	}
	onReady()
	var why string
	select {
	case err := <-exited:
		why = in.exitReason(err)
	case reason := <-in.kill:
		log.Warn("killing instance", "id", id, "pid", cmd.Process.Pid, "why", reason)
		cmd.Process.Kill()
		why = reason + "; killed"
		<-exited
	case <-ctx.Done():
		// Drain: no new requests; finish what was sent to it and what
		// runs; then stop it.
		in.setState("draining")
		a.pool.SetSlotState(in.slot, pool.SlotDraining)
		a.syncRemote()
		st := a.pool.Stats(in.slot)
		limit := time.Now().Add(in.f.cfg.Timeout + n.cfg.StopGrace)
		// Done means nothing sent to it waits, nothing runs, and it holds
		// no buffer and has none in transit (a finished step's output
		// on its way to the next step): the ownership words say so. The
		// queue and in-flight counters say it sooner (a sender counts a
		// descriptor before it marks the buffer in transit), but they
		// are hints: a sender that died between counting a descriptor
		// and sending it leaves a count nobody takes back, and the
		// instance writes them itself. So with nothing held or in
		// transit for staleHints, the drain is over whatever they say.
		var clear time.Time
	drain:
		for now := time.Now(); now.Before(limit); now = time.Now() {
			// An instance that keeps state (Keeps > 0) holds its
			// buffers on purpose: they go with it, not before it.
			if a.pool.Holding(id) > 0 && !in.f.kept(st) {
				clear = time.Time{}
			} else if st.Queue.Load() <= 0 && st.InFlight.Load() <= 0 {
				break
			} else if clear.IsZero() {
				clear = now
			} else if now.Sub(clear) > staleHints {
				break
			}
			select {
			case err := <-exited:
				why = exitReason(err) + " while draining"
				break drain
			case <-time.After(2 * time.Millisecond):
			}
		}
		if why == "" {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				why = "stopped (" + exitReason(err) + ")"
			case <-time.After(n.cfg.StopGrace):
				cmd.Process.Kill()
				why = "did not stop in time; killed"
				<-exited
			}
		}
	}
	in.cleanup(id, why)
	return errors.New(why)
}

// staleHints is how long a draining instance's queue and in-flight
// counters may disagree with the ownership words before the drain trusts
// the words (see runOnce).
const staleHints = 200 * time.Millisecond

// cleanup releases endpoint id after its process is gone: the slot leaves
// the routing table, every buffer the process held is taken back and its
// request salvaged (see app.salvage), and the endpoint is removed.
func (in *instance) cleanup(id uint16, why string) {
	a := in.f.a
	// The process is gone: the slot is not ready from here on, though
	// its supervisor marks the restart (or the stop) only once this
	// returns. Said before its requests are answered, so no one told of
	// its death can still see it ready (it read "ready" with pid 0 and no
	// restart counted yet).
	in.mu.Lock()
	if in.state == "ready" {
		in.state = "restarting"
	}
	in.mu.Unlock()
	a.pool.SetSlotState(in.slot, pool.SlotDead)
	msg := fmt.Sprintf("spry: function %s: instance %d failed while running the request (%s)", in.f.cfg.Name, id, why)
	k := a.reclaim(id, msg)
	if k > 0 {
		a.n.log.Warn("took back the requests of a gone instance", "app", a.cfg.Name, "function", in.f.cfg.Name, "id", id, "requests", k)
	}
	a.syncRemote()
	a.fab.Remove(id)
	a.unregister(id)
	a.pool.SetSlotState(in.slot, pool.SlotEmpty)
	a.n.ids.free(id)
	in.mu.Lock()
	in.pid, in.lastExit = 0, why
	in.mu.Unlock()
	a.lookSoon() // its scaling and what it held: sooner than a settled tick
}

// command prepares the process for endpoint id: its program (see
// internal/runtime), a clean environment (the function's env plus the
// contract's SPRY_* variables), the pool and the endpoint's files, its
// uid, and its output going to the node's and to the function's log.
func (in *instance) command(id uint16, ho transport.Handoff) (*exec.Cmd, *lineWriter) {
	a := in.f.a
	f := in.f
	cmd := exec.Command(f.cmd.Argv[0], f.cmd.Argv[1:]...)
	cmd.Dir = cmp.Or(f.workDir, f.cmd.Dir, "/")
	env := append(rt.BaseEnv(), f.cmd.Env...)
	env = append(env, f.cfg.Env...)
	// fd 3 is the pool; the endpoint's files follow.
	cmd.ExtraFiles = append([]*os.File{a.poolFile}, ho.Files...)
	env = append(env, rt.Instance{
		App: a.cfg.Name, Function: f.cfg.Name, Slot: in.slot, ID: id,
		Concurrency: f.cfg.Concurrency, Timeout: f.cfg.Timeout, Files: len(ho.Files),
	}.Env()...)
	if a.secrets != "" {
		env = append(env, sdk.EnvSecrets+"="+a.secrets)
	}
	if k := f.cfg.Kind; (k == config.HTTP || k == config.Lambda) && a.n.cfg.ReadyTimeout > 0 {
		env = append(env, rt.EnvReadyBy+"="+rt.ReadyBy(a.n.cfg.ReadyTimeout))
	}
	cmd.Env = append(env, ho.Env...)
	out := a.n.output(a.cfg.Name, f.cfg.Name, id)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = procAttr(a.uid, a.gid)
	return cmd, out
}

// exitReason describes how the slot's process ended, naming the memory
// limit when the kernel killed it for going over.
func (in *instance) exitReason(err error) string {
	if g := in.group; g != nil && g.limits.Memory > 0 && g.oomKilled() {
		g.ooms = g.oomKills()
		return fmt.Sprintf("out of memory: it went over its limit of %s (limits.memory) and the kernel killed it", config.FormatSize(g.limits.Memory))
	}
	return exitReason(err)
}

// limit puts the slot's process under its function's limits (a cgroup
// per slot), when it has any.
func (in *instance) limit(cmd *exec.Cmd) error {
	l := in.f.cfg.Limits
	if l == (config.FnLimits{}) {
		return nil
	}
	if in.group == nil {
		cg, err := in.f.a.n.cgroups()
		if err != nil {
			return fmt.Errorf("%s:%d: functions.%s.limits: %w", in.f.a.cfg.File, in.f.cfg.Line, in.f.cfg.Name, err)
		}
		name := fmt.Sprintf("%s.%d-%s-%d", in.f.a.cfg.Name, in.f.a.appID, in.f.cfg.Name, in.slot)
		g, err := cg.group(name, l)
		if err != nil {
			return fmt.Errorf("%s:%d: functions.%s.limits: %w", in.f.a.cfg.File, in.f.cfg.Line, in.f.cfg.Name, err)
		}
		in.mu.Lock()
		in.group = g
		in.mu.Unlock()
	}
	fd, err := in.group.intoFD()
	if err != nil {
		return fmt.Errorf("functions.%s.limits: %w", in.f.cfg.Name, err)
	}
	if fd != nil {
		nfd, err := syscall.Dup(int(fd.Fd()))
		fd.Close()
		if err != nil {
			return err
		}
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, nfd
	}
	return nil
}

// exitReason describes how a process ended.
func exitReason(err error) string {
	if err == nil {
		return "exited with status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return describeExit(ee)
	}
	return err.Error()
}
