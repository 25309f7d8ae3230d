package wasm

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/runtime/wasm/abi"
)

var le = binary.LittleEndian

func (cryptoRand) Read(b []byte) (int, error) { return rand.Read(b) }

// Errors of a step. After any of them the instance is dead: close it and
// make another.
var (
	// ErrInterrupted: the step ran past its deadline and was stopped.
	ErrInterrupted = errors.New("wasm: interrupted at its deadline")
	// ErrTrap: the guest trapped (out-of-bounds access, unreachable,
	// stack overflow, ...), exited, or broke the frame's contract.
	ErrTrap = errors.New("wasm: the function failed")
)

// Instance is one instance of a function. Its methods other than
// Interrupt must not be called concurrently.
type Instance struct {
	f      *Function
	mod    api.Module
	mem    *linearMemory
	irq    api.MutableGlobal
	fuel   api.MutableGlobal
	handle api.Function
	frame  []byte // views into mem: its reservation never moves
	in     []byte
	out    []byte
	stack  [1]uint64

	interrupted atomic.Bool
	dead        bool
	mapped      mapping // the buffer pages mapped into the input window during a step
}

// bind points the instance at its function's frame and windows.
func (in *Instance) bind(f *Function) {
	w := uint32(f.cfg.Window)
	in.frame = in.mem.mem[f.frame : f.frame+abi.FrameSize : f.frame+abi.FrameSize]
	in.in = in.mem.mem[f.in : f.in+w : f.in+w]
	in.out = in.mem.mem[f.out : f.out+w : f.out+w]
	in.handle = in.mod.ExportedFunction(abi.ExportHandle)
}

// Interrupt makes the instance's running step trap at its next function
// call or loop iteration (ErrInterrupted); an instance interrupted between
// steps refuses the next one. It may be called from any goroutine.
//
// A guest also passes a safe point every wasmbin.SafePointEvery checks:
// compiled wasm cannot be preempted by the Go runtime, so without them a
// guest that never calls out would hold up every garbage collection of the
// host — and with it the goroutine that would interrupt it.
func (in *Instance) Interrupt() {
	in.interrupted.Store(true)
	in.irq.Set(1)
	in.fuel.Set(0) // the next check is a safe point, which sees the flag
}

// Interrupted reports whether Interrupt was called.
func (in *Instance) Interrupted() bool { return in.interrupted.Load() }

// Dead reports whether a step failed: the instance must be replaced.
func (in *Instance) Dead() bool { return in.dead }

// Close releases the instance.
func (in *Instance) Close() { in.close() }

func (in *Instance) close() {
	if in.mod != nil {
		in.mod.Close(context.Background())
		in.mod = nil
		in.f.live.Add(-1)
	}
}

// MemorySize returns the size of the instance's linear memory.
func (in *Instance) MemorySize() uint64 { return in.mem.size }

// errRefused means a step was handed to an instance already interrupted
// (between steps): nothing was run, the buffer is untouched.
var errRefused = fmt.Errorf("%w (before it ran)", ErrInterrupted)

// Step runs the handler on buffer buf of p, which endpoint self holds, as
// step hop, like the Go SDK's step in a process: the payload is copied into
// the guest's input window (the copy a sandbox costs; the output comes back
// the same way), and the output is left in buf (in place) or in a fresh
// buffer that replaces it. It returns the buffer to pass on and whether the
// chain ends here.
//
// On an error the instance is dead and buf is left as it was (still held
// by self) for the caller to answer.
func (in *Instance) Step(ctx context.Context, p *pool.Pool, self uint16, buf uint32, hop int) (out uint32, stop bool, err error) {
	if in.interrupted.Load() {
		in.dead = true
		return buf, true, errRefused
	}
	h := p.Header(buf)
	whole := p.Buffer(buf)
	data := p.Data(buf)
	off := min(int(h.Off()), len(whole))
	if len(whole) != len(in.in) {
		in.dead = true
		return buf, true, fmt.Errorf("%w: its window is %d bytes, the pool's buffers %d", ErrTrap, len(in.in), len(whole))
	}
	in.mapped = mapping{}
	if m := in.f.mapMin; m > 0 && len(data) >= m && canMap(p) {
		if mp, err := mapIn(p, buf, in.in, off, len(data)); err == nil {
			in.mapped = mp
		}
	}
	if in.mapped.end == 0 {
		copy(in.in[off:], data)
	}
	in.request(p, h, off, len(data), hop)

	in.stack[0] = 0
	err = in.handle.CallWithStack(ctx, in.stack[:])
	if err == nil {
		out, stop, err = in.response(p, self, buf, h)
	} else {
		in.dead = true
		out, stop, err = buf, true, describe(err, in)
	}
	if in.mapped.end != 0 {
		if merr := mapOut(in.in, in.mapped); merr != nil {
			// The window still shows the buffer: never run this instance
			// again.
			in.dead = true
		}
		in.mapped = mapping{}
	}
	return out, stop, err
}

// request writes the request block of the frame.
func (in *Instance) request(p *pool.Pool, h *pool.BufHeader, off, n, hop int) {
	f := in.frame
	le.PutUint32(f[abi.OffPayloadOff:], uint32(off))
	le.PutUint32(f[abi.OffPayloadLen:], uint32(n))
	le.PutUint16(f[abi.OffHop:], uint16(hop))
	le.PutUint16(f[abi.OffSteps:], uint16(p.Steps(h.Chain())))
	le.PutUint16(f[abi.OffStatus:], h.Status())
	var flags byte
	if h.Flags()&pool.FlagStop != 0 {
		flags |= abi.FlagStop
	}
	f[abi.OffFlags] = flags
	ct := h.ContentType()
	f[abi.OffCtypeLen] = byte(copy(f[abi.OffCtype:abi.OffCtype+abi.MaxContentType], ct))
	le.PutUint64(f[abi.OffReqID:], h.ReqID())
	rem := int64(math.MaxInt64)
	if dl := h.Deadline(); dl != 0 {
		rem = dl - mono.Now()
	}
	le.PutUint64(f[abi.OffRemaining:], uint64(rem))
	ingress := h.Ingress()
	hops := min(hop+1, abi.MaxHops)
	for i := range hops {
		s, e := h.HopTimes(i)
		o := abi.OffHopTimes + 16*i
		le.PutUint64(f[o:], uint64(rel(s, ingress)))
		le.PutUint64(f[o+8:], uint64(rel(e, ingress)))
	}
	// Clear the rest: a previous request's hops must not show through.
	clear(f[abi.OffHopTimes+16*hops : abi.OffHopTimes+16*abi.MaxHops])
	m := h.RawMeta()
	n = copy(f[abi.OffMeta:abi.OffMeta+abi.MaxMeta], m)
	le.PutUint16(f[abi.OffMetaLen:], uint16(n))
	le.PutUint32(f[abi.OffResult:], 0)
	f[abi.OffOutCtypeLen] = abi.NoContentType
}

func rel(t, base int64) int64 {
	if t == 0 {
		return 0
	}
	return t - base
}

var (
	errBadOutput = fmt.Errorf("%w: its response lies outside its window", ErrTrap)
	errBadCtype  = fmt.Errorf("%w: its content type is too long", ErrTrap)
	msgExhausted = "sdk: pool exhausted"
)

// response reads the guest's response block and settles the output, as
// the Go SDK's Response.finish does.
func (in *Instance) response(p *pool.Pool, self uint16, buf uint32, h *pool.BufHeader) (out uint32, stop bool, err error) {
	f := in.frame
	res := le.Uint32(f[abi.OffResult:])
	off, n := uint64(le.Uint32(f[abi.OffOutOff:])), uint64(le.Uint32(f[abi.OffOutLen:]))
	status := le.Uint16(f[abi.OffOutStatus:])
	ctLen := f[abi.OffOutCtypeLen]
	if ctLen != abi.NoContentType && ctLen > abi.MaxContentType {
		in.dead = true
		return buf, true, errBadCtype
	}
	out = buf
	if res&abi.ResFresh != 0 && res&abi.ResError == 0 {
		if n > uint64(len(in.out)) {
			in.dead = true
			return buf, true, errBadOutput
		}
		nb, ok := p.Alloc(self)
		if !ok {
			// As the SDK does: the chain ends with 503, the message in
			// the input buffer.
			m := copy(p.Buffer(buf), msgExhausted)
			h.SetData(0, uint32(m))
			h.SetContentTypeString("text/plain; charset=utf-8")
			h.SetStatus(503)
			h.SetFlags(h.Flags() | pool.FlagStop)
			return buf, true, nil
		}
		oh := p.Header(nb)
		oh.CopyMeta(h)
		copy(p.Buffer(nb), in.out[:n])
		oh.SetData(0, uint32(n))
		p.Free(buf, self)
		out, h = nb, oh
	} else {
		if off+n > uint64(len(in.in)) {
			in.dead = true
			return buf, true, errBadOutput
		}
		in.copyBack(p.Buffer(buf), int(off), int(off+n))
		h.SetData(uint32(off), uint32(n))
	}
	if ctLen != abi.NoContentType {
		h.SetContentType(f[abi.OffOutCtype : abi.OffOutCtype+int(ctLen)])
	}
	if status != 0 {
		if status < 100 || status > 999 {
			status = 502
		}
		h.SetStatus(status)
	}
	if res&abi.ResError != 0 && h.Status() < 400 {
		h.SetStatus(502)
	}
	if res&(abi.ResStop|abi.ResError) != 0 || status >= 400 {
		h.SetFlags(h.Flags() | pool.FlagStop)
	}
	return out, h.Flags()&pool.FlagStop != 0, nil
}

// copyBack copies the in-place output [from, to) of the input window into
// the buffer b, except what lies in the pages mapped from b itself.
func (in *Instance) copyBack(b []byte, from, to int) {
	m := in.mapped
	if m.end == 0 || to <= m.start || from >= m.end {
		copy(b[from:to], in.in[from:to])
		return
	}
	if from < m.start {
		copy(b[from:m.start], in.in[from:m.start])
	}
	if to > m.end {
		copy(b[m.end:to], in.in[m.end:to])
	}
}

// describe turns what a failed call returned into ErrInterrupted or
// ErrTrap with the guest's reason in one line.
func describe(err error, in *Instance) error {
	if in.interrupted.Load() {
		return ErrInterrupted
	}
	if in.mem.refused.Load() {
		return fmt.Errorf("%w: it ran out of its memory limit (%d MiB)", ErrTrap, in.mem.limit>>20)
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		return fmt.Errorf("%w: it exited with status %d", ErrTrap, exit.ExitCode())
	}
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i] // wazero adds the guest's stack
	}
	msg = strings.TrimPrefix(msg, "wasm error: ")
	return fmt.Errorf("%w: %s", ErrTrap, msg)
}
