package wasm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// BenchmarkNew is the start of an instance: a clone of the function's
// snapshot, ready to run.
func BenchmarkNew(b *testing.B) {
	r := newRig(&testing.T{}, FunctionConfig{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		in, err := r.f.New(ctx)
		if err != nil {
			b.Fatal(err)
		}
		in.Close()
	}
}

// BenchmarkStep is one step on a payload of each size: copy in, call, copy
// out. With two instances in turn it is a wasm-to-wasm hop in the host.
func BenchmarkStep(b *testing.B) {
	t := &testing.T{}
	r := newRig(t, FunctionConfig{})
	ctx := context.Background()
	a, c := r.instance(), r.instance()
	for _, size := range []int{64, 1 << 10, 16 << 10, 64 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			buf := r.request("POST", "/", string(make([]byte, size)))
			defer r.p.Free(buf, self)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				in := a
				if i++; i%2 == 0 {
					in = c
				}
				if _, _, err := in.Step(ctx, r.p, self, buf, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// hopRig is a host with two instances of the suite guest in a chain of
// MaxSteps steps, not receiving: steps are driven by hand.
type hopRig struct {
	h  *Host
	p  *pool.Pool
	hi *hostInst
	d  desc.Desc
}

func newHopRig(tb testing.TB) *hopRig {
	ctx := context.Background()
	mod := filepath.Join(tb.TempDir(), "suite.wasm")
	if err := os.WriteFile(mod, guest(tb, "suite"), 0o644); err != nil {
		tb.Fatal(err)
	}
	p, err := pool.Create("hopbench", pool.Layout{Buffers: 8, BufferSize: testWindow, Functions: 1, Chains: 1, Slots: 2})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	f, err := transport.New("uds", transport.Options{App: "hopbench", Dir: tb.TempDir(), UID: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	hc, err := f.Open(hostID)
	if err != nil {
		tb.Fatal(err)
	}
	p.SetFunction(0, 0, 2)
	p.SetChain(0, make([]uint16, pool.MaxSteps)) // function 0, MaxSteps times
	e, err := NewEngine(ctx, EngineConfig{CacheDir: filepath.Join(os.TempDir(), "spry-wasm-test-cache")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close(ctx) })
	h := NewHost(HostConfig{Engine: e, Pool: p, Conn: hc, Output: io.Discard})
	if err := h.Load(ctx, Command{Fn: 0, Name: "suite", Module: mod, Timeout: time.Minute}); err != nil {
		tb.Fatal(err)
	}
	for slot := range uint32(2) {
		if err := h.Start(ctx, 0, slot, uint16(10+slot)); err != nil {
			tb.Fatal(err)
		}
		p.StartHosted(slot, uint16(10+slot), hostID, 1)
		p.SetSlotState(slot, pool.SlotReady)
	}
	hi := h.inst(10)
	buf, _ := p.Alloc(hi.id)
	hdr := p.Header(buf)
	m := hdr.WriteMeta()
	m.Request([]byte("POST"), []byte("/"), nil)
	hdr.SetData(0, 64)
	d := desc.Desc{Buf: buf}
	tb.Cleanup(func() {
		for _, id := range []uint16{10, 11} {
			h.Stop(id)
		}
	})
	return &hopRig{h: h, p: p, hi: hi, d: d}
}

// hop runs one step and its in-memory hand-over.
func (r *hopRig) hop(tb testing.TB) {
	r.hi.st.Queue.Add(1) // as a sender would have
	next, nd := r.h.step(nil, r.hi, r.d)
	if next == nil {
		tb.Fatal("the step did not hand over in memory")
	}
	// Stay below the last step (whose output goes to the gateway).
	if nd.Hop == pool.MaxSteps-1 {
		nd.Hop = 0
	}
	r.hi, r.d = next, nd
	next.st.Queue.Add(-1) // step counts it again
}

// BenchmarkHop is one step and one in-memory hop of a wasm chain in the
// host: the step (payload copied in and out, the guest's call), then the
// hand-over to the next wasm instance — picking it, moving the buffer to
// it, its counters — with no descriptor sent. Compare Step/64: the
// difference is the hop.
func BenchmarkHop(b *testing.B) {
	r := newHopRig(b)
	b.ReportAllocs()
	for b.Loop() {
		r.hop(b)
	}
}

// The host's per-request path allocates nothing: a step, and a hop between
// two wasm instances.
func TestHopZeroAllocs(t *testing.T) {
	r := newHopRig(t)
	r.hop(t) // warm: the guests' first calls grow their heaps
	if n := testing.AllocsPerRun(200, func() { r.hop(t) }); n != 0 {
		t.Errorf("%v allocations per step and hop, want 0", n)
	}
}

// BenchmarkStepLarge compares the two ways a payload enters a guest: copied
// into its window and back, or the buffer's pages mapped into it.
func BenchmarkStepLarge(b *testing.B) {
	ctx := context.Background()
	for _, how := range []struct {
		name string
		min  int
	}{{"copy", -1}, {"map", 1}} {
		t := &testing.T{}
		r := newRig(t, FunctionConfig{Window: 1 << 20, MapMin: how.min})
		in := r.instance()
		for _, size := range []int{4 << 10, 16 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/%d", how.name, size), func(b *testing.B) {
				// A handler that does not touch the payload: what is
				// measured is getting it in and out.
				buf := r.request("POST", "/?do=stop", string(make([]byte, size)))
				defer r.p.Free(buf, self)
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, _, err := in.Step(ctx, r.p, self, buf, 0); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDensity reports what one more warm instance of a Go guest costs
// the host: the growth of the process's proportional set size (its own
// pages, plus its share of the snapshot's) over b.N instances that each
// served a request, per instance; and how many such instances fit in 1 GiB.
func BenchmarkDensity(b *testing.B) {
	ctx := context.Background()
	r := newRig(&testing.T{}, FunctionConfig{})
	warm := func(in *Instance) {
		buf := r.request("POST", "/", "warm me up")
		out, _, err := in.Step(ctx, r.p, self, buf, 0)
		if err != nil {
			b.Fatal(err)
		}
		r.p.Free(out, self)
	}
	// The first instance pays for what every instance shares.
	first, _ := r.f.New(ctx)
	warm(first)
	defer first.Close()
	runtime.GC()
	before := pss(b)
	ins := make([]*Instance, 0, b.N)
	b.ResetTimer()
	for range b.N {
		in, err := r.f.New(ctx)
		if err != nil {
			b.Fatal(err)
		}
		warm(in)
		ins = append(ins, in)
	}
	b.StopTimer()
	runtime.GC()
	per := float64(pss(b)-before) / float64(b.N)
	b.ReportMetric(per, "B/instance")
	b.ReportMetric(float64(1<<30)/per, "instances/GiB")
	for _, in := range ins {
		in.Close()
	}
}

// pss returns the process's proportional set size in bytes.
func pss(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		tb.Skip("no /proc/self/smaps_rollup")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no Pss in smaps_rollup")
	return 0
}
