package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// Environment variables of the Go SDK the host reads too (sdk imports this
// package's abi only, so the names are repeated here).
const (
	envPoolFD = "SPRY_POOL_FD"
)

// ServeHost runs a sandbox host as the node starts it (`spry wasm-host`):
// it maps the app's pool, opens its endpoint, and takes commands on the
// control socket until the node closes it or sends SIGTERM.
func ServeHost(env func(string) string, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if env(EnvControlFD) == "" {
		return errors.New("not started by spry: the node runs the sandbox host for an app's wasm: functions")
	}
	fd, err := strconv.Atoi(env(envPoolFD))
	if err != nil || fd < 0 {
		return fmt.Errorf("%s=%q is not an fd", envPoolFD, env(envPoolFD))
	}
	p, err := pool.Attach(fd)
	if err != nil {
		return err
	}
	defer p.Close()
	c, err := transport.Attach(env, p)
	if err != nil {
		return err
	}
	cfd, err := strconv.Atoi(env(EnvControlFD))
	if err != nil || cfd < 0 {
		return fmt.Errorf("%s=%q is not an fd", EnvControlFD, env(EnvControlFD))
	}
	ctl, err := net.FileConn(os.NewFile(uintptr(cfd), "control"))
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer ctl.Close()
	wire := NewWire(ctl)

	ctx := context.Background()
	e, err := NewEngine(ctx, EngineConfig{CacheDir: env(EnvCacheDir)})
	if err != nil {
		return err
	}
	defer e.Close(ctx)
	// The receiving thread keeps its processor while it sleeps in the
	// kernel; the steps it hands on get their own.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.NumCPU() + 1)
	}
	h := NewHost(HostConfig{Engine: e, Pool: p, Conn: c, Log: log.With("app", env(EnvApp)), Output: stderr,
		Events: func(ev Event) { wire.Send(ev) }})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		h.Close()
	}()
	go h.control(ctx, wire)
	if err := wire.Send(Event{Ev: EvUp, PID: os.Getpid()}); err != nil {
		return err
	}
	h.Run()
	return nil
}

// control runs the node's commands until the control socket closes, which
// means the node is gone: the host stops then.
func (h *Host) control(ctx context.Context, w *Wire) {
	defer h.Close()
	for {
		var c Command
		if err := w.Recv(&c); err != nil {
			if !errors.Is(err, io.EOF) {
				h.log.Error("sandbox host: control", "err", err)
			}
			return
		}
		switch c.Op {
		case OpLoad:
			go func() {
				began := time.Now()
				ev := Event{Ev: EvLoaded, Fn: c.Fn}
				if err := h.Load(ctx, c); err != nil {
					ev.Err = err.Error()
				} else {
					ev.Micros = float64(time.Since(began).Microseconds())
					f := h.fn(c.Fn).f
					if ok, size, stored, _ := f.Snapshot(); ok {
						ev.Snapshot, ev.Stored = size, stored
					}
					ev.CompileMicros, ev.InitMicros = float64(f.Compile.Microseconds()), float64(f.Init.Microseconds())
				}
				w.Send(ev)
				// Compiling and initialising leave tens of MiB of garbage
				// the host would otherwise hold while it idles.
				debug.FreeOSMemory()
			}()
		case OpStart:
			// Commands run beside each other (a start waits for its
			// function's load, a stop for the instance's steps), but a
			// stop does not overtake the start of its instance: the node
			// may stop an instance whose start it gave up on.
			done := make(chan struct{})
			h.ctlMu.Lock()
			h.starting[c.ID] = done
			h.ctlMu.Unlock()
			go func() {
				defer func() {
					h.ctlMu.Lock()
					if h.starting[c.ID] == done {
						delete(h.starting, c.ID)
					}
					h.ctlMu.Unlock()
					close(done)
				}()
				began := time.Now()
				ev := Event{Ev: EvReady, Fn: c.Fn, ID: c.ID}
				if err := h.Start(ctx, c.Fn, c.Slot, c.ID); err != nil {
					ev.Err = err.Error()
				}
				ev.Micros = float64(time.Since(began).Nanoseconds()) / 1000
				w.Send(ev)
			}()
		case OpStop:
			h.ctlMu.Lock()
			started := h.starting[c.ID]
			h.ctlMu.Unlock()
			go func() {
				if started != nil {
					<-started
				}
				ev := Event{Ev: EvStopped, ID: c.ID}
				if err := h.Stop(c.ID); err != nil {
					ev.Err = err.Error()
				}
				w.Send(ev)
			}()
		default:
			h.log.Error("sandbox host: unknown command", "op", c.Op)
		}
	}
}
