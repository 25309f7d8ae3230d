package sdk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
	"golang.org/x/sys/unix"
)

// rig is a node in miniature: one app pool, a uds fabric, a gateway
// endpoint driven by the test, and instances running the SDK loop in
// goroutines.
type rig struct {
	t     testing.TB
	p     *pool.Pool
	f     transport.Fabric
	gw    transport.Conn
	next  uint16
	insts []*instance
}

const gwID = 1

// newRig makes an app whose chain 0 runs the given handlers in order, one
// instance each.
func newRig(t testing.TB, conc int, hs ...Handler) *rig { return newRigChunks(t, 0, conc, hs...) }

// newRigChunks is newRig with a large-extent region of chunks chunks.
func newRigChunks(t testing.TB, chunks uint32, conc int, hs ...Handler) *rig {
	n := uint32(len(hs))
	p, err := pool.Create("sdktest", pool.Layout{Buffers: 32, BufferSize: 4096, Functions: n, Chains: 1, Slots: n, Chunks: chunks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	dir := t.TempDir()
	f, err := transport.New("uds", transport.Options{App: "sdktest", Dir: dir, UID: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	gw, err := f.Open(gwID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	p.SetGateway(gwID)
	steps := make([]uint16, n)
	for i := range steps {
		steps[i] = uint16(i)
		p.SetFunction(uint32(i), uint32(i), 1)
	}
	p.SetChain(0, steps)
	r := &rig{t: t, p: p, f: f, gw: gw, next: 10}
	for i, h := range hs {
		r.start(uint32(i), conc, h)
	}
	return r
}

// start runs an instance of slot s in a goroutine, as the daemon would in
// a process, and waits for its ready message.
func (r *rig) start(s uint32, conc int, h Handler) *instance {
	t := r.t
	id := r.next
	r.next++
	ho, err := r.f.Add(id)
	if err != nil {
		t.Fatal(err)
	}
	pfd, err := unix.Dup(r.p.Fd())
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		transport.EnvTransport: "uds",
		transport.EnvUDSDir:    ho.Env[1][len(transport.EnvUDSDir)+1:],
		transport.EnvID:        strconv.Itoa(int(id)),
		transport.EnvFDs:       strconv.Itoa(int(ho.Files[0].Fd())),
		EnvPoolFD:              strconv.Itoa(pfd),
		EnvSlot:                strconv.Itoa(int(s)),
		EnvConcurrency:         strconv.Itoa(conc),
		EnvFunction:            "f" + strconv.Itoa(int(s)),
	}
	r.p.StartSlot(s, id, uint32(conc))
	in, err := attach(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- in.serve(h) }()
	t.Cleanup(func() {
		in.shutdown()
		if err := <-done; err != nil {
			t.Errorf("instance %d: %v", id, err)
		}
		in.p.Close()
		r.f.Remove(id)
	})
	d := r.recv()
	if !d.Is(desc.FlagControl) || d.Buf != desc.CtlReady || d.Src != id {
		t.Fatalf("first message from instance %d: %v, want ready", id, d)
	}
	r.p.SetSlotState(s, pool.SlotReady)
	r.insts = append(r.insts, in)
	return in
}

func (r *rig) recv() desc.Desc {
	r.t.Helper()
	type res struct {
		d   desc.Desc
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		var ds [1]desc.Desc
		_, err := r.gw.Recv(ds[:])
		ch <- res{ds[0], err}
	}()
	select {
	case x := <-ch:
		if x.err != nil {
			r.t.Fatal(x.err)
		}
		return x.d
	case <-time.After(10 * time.Second):
		r.t.Fatal("no descriptor for the gateway")
	}
	return desc.Desc{}
}

// invoke sends body through the chain as the gateway does and returns the
// reply's buffer header and payload (copied), freeing the buffer.
func (r *rig) invoke(body string) (*pool.BufHeader, string) {
	r.t.Helper()
	buf, ok := r.p.Alloc(gwID)
	if !ok {
		r.t.Fatal("pool empty")
	}
	h := r.p.Header(buf)
	m := h.WriteMeta()
	m.Request([]byte("POST"), []byte("/t"), []byte("q=1"))
	h.SetData(0, uint32(copy(r.p.Buffer(buf), body)))
	h.SetReqID(uint64(buf) + 1000)
	h.SetTimes(mono.Now(), mono.Now()+int64(10*time.Second))
	r.send(0, buf)
	d := r.recv()
	if !d.Is(desc.FlagReply) || !r.p.Accept(d.Buf, d.Gen, d.Src, gwID) {
		r.t.Fatalf("reply %v is not a current reply owned by the gateway", d)
	}
	oh := r.p.Header(d.Buf)
	if oh.ReqID() != uint64(buf)+1000 {
		r.t.Fatalf("reply carries request id %d, want %d", oh.ReqID(), uint64(buf)+1000)
	}
	out := string(r.p.Data(d.Buf))
	r.p.Free(d.Buf, gwID)
	return oh, out
}

func upperInPlace(req *Request, res *Response) error {
	p := req.Payload()
	for i, c := range p {
		if 'a' <= c && c <= 'z' {
			p[i] = c - 'a' + 'A'
		}
	}
	return nil
}

// done takes a reply as the gateway does, and frees its buffer.
func (r *rig) done(d desc.Desc) {
	if !r.p.Accept(d.Buf, d.Gen, d.Src, gwID) || !r.p.Free(d.Buf, gwID) {
		panic("reply buffer not in transit to the gateway")
	}
}

// send hands buf to instance slot s as the gateway does.
func (r *rig) send(s uint32, buf uint32) {
	r.t.Helper()
	id := r.p.SlotID(s)
	r.p.Stats(s).Queue.Add(1)
	if err := transport.Pass(r.p, r.gw, desc.Desc{Dst: id, Buf: buf}); err != nil {
		panic(err)
	}
}

func TestChainInPlaceAndFresh(t *testing.T) {
	rev := func(req *Request, res *Response) error {
		b := res.Buffer()
		n := len(req.Payload())
		for i := 0; i < n/2; i++ {
			b[i], b[n-1-i] = b[n-1-i], b[i]
		}
		res.SetLen(n)
		return nil
	}
	wrap := func(req *Request, res *Response) error {
		res.SetContentType("application/json")
		fmt.Fprintf(res, `{"in":%q,"hop":%d,"steps":%d,"m":%q,"q":%q}`, req.Payload(), req.Hop(), req.Steps(), req.Method(), req.Query())
		return nil
	}
	r := newRig(t, 1, upperInPlace, rev, wrap)
	h, out := r.invoke("spry")
	want := `{"in":"YRPS","hop":2,"steps":3,"m":"POST","q":"q=1"}`
	if out != want || string(h.ContentType()) != "application/json" {
		t.Fatalf("got %q (%s), want %q", out, h.ContentType(), want)
	}
	if h.Hops() != 3 {
		t.Fatalf("hops with timings %d, want 3", h.Hops())
	}
	for hop := range 3 {
		if s, e := h.HopTimes(hop); s == 0 || e < s {
			t.Fatalf("hop %d timing %d..%d", hop, s, e)
		}
	}
	if free := r.p.FreeBuffers(); free != 32 {
		t.Fatalf("free buffers %d, want 32 (the fresh buffer's input must be freed)", free)
	}
	for s := range uint32(3) {
		if st := r.p.Stats(s); st.Served.Load() != 1 || st.Queue.Load() != 0 || st.InFlight.Load() != 0 {
			t.Fatalf("slot %d: served %d queue %d inflight %d", s, st.Served.Load(), st.Queue.Load(), st.InFlight.Load())
		}
	}
}

func TestStopsAndErrors(t *testing.T) {
	never := func(req *Request, res *Response) error {
		return errors.New("second step must not run")
	}
	for _, tc := range []struct {
		name   string
		h      Handler
		status uint16
		body   string
	}{
		{"error", func(*Request, *Response) error { return errors.New("boom") }, 502, "boom"},
		{"status error", func(*Request, *Response) error { return Errorf(404, "no such thing") }, 404, "no such thing"},
		{"set status", func(_ *Request, w *Response) error { w.SetStatus(409); w.WriteString("conflict"); return nil }, 409, "conflict"},
		{"stop", func(_ *Request, w *Response) error { w.Stop(); w.WriteString("early"); return nil }, 0, "early"},
		{"panic", func(*Request, *Response) error { panic("oops") }, 502, "function panicked: oops"},
		{"too large", func(_ *Request, w *Response) error { _, err := w.Write(make([]byte, 5000)); return err }, 502, "sdk: output larger than a pool buffer (4096 bytes)"},
		{"too large ignored", func(_ *Request, w *Response) error { w.Write(make([]byte, 5000)); return nil }, 502, "sdk: output larger than a pool buffer (4096 bytes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 1, tc.h, never)
			h, out := r.invoke("x")
			if h.Status() != tc.status || out != tc.body {
				t.Fatalf("status %d body %q, want %d %q", h.Status(), out, tc.status, tc.body)
			}
			if r.p.Stats(1).Served.Load() != 0 {
				t.Fatal("the chain went on after the step stopped it")
			}
			if free := r.p.FreeBuffers(); free != 32 {
				t.Fatalf("free buffers %d, want 32", free)
			}
		})
	}
}

// A stale descriptor (its buffer was freed since) is dropped and counted,
// never handed to the handler.
func TestStaleDropped(t *testing.T) {
	ran := make(chan bool, 4)
	r := newRig(t, 1, func(req *Request, res *Response) error { ran <- true; return nil })
	buf, _ := r.p.Alloc(gwID)
	h := r.p.Header(buf)
	gen, _ := r.p.Transfer(buf, gwID, r.p.SlotID(0))
	id := r.p.SlotID(0)
	r.p.Cancel(buf, gen, gwID, id)
	r.p.Free(buf, gwID) // the buffer moves on; the descriptor below is now stale
	buf2, _ := r.p.Alloc(gwID)
	if buf2 != buf || h.Gen() == gen {
		t.Fatalf("realloc: %d gen %d", buf2, h.Gen())
	}
	r.p.Transfer(buf, gwID, id)
	if err := r.gw.Send(desc.Desc{Dst: id, Src: gwID, Buf: buf, Gen: gen}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.p.Stats(0).Stale.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if r.p.Stats(0).Stale.Load() != 1 {
		t.Fatal("stale descriptor not counted")
	}
	select {
	case <-ran:
		t.Fatal("handler ran on a stale descriptor")
	default:
	}
	// And the instance still works.
	if _, out := r.invoke("ok"); out != "ok" {
		t.Fatalf("after stale: %q", out)
	}
}

// With concurrency 4, four handlers run at once.
func TestConcurrency(t *testing.T) {
	gate := make(chan struct{})
	running := make(chan bool, 8)
	h := func(req *Request, res *Response) error {
		running <- true
		<-gate
		return nil
	}
	r := newRig(t, 4, h)
	for i := range 4 {
		buf, _ := r.p.Alloc(gwID)
		r.p.Header(buf).SetReqID(uint64(i))
		r.send(0, buf)
	}
	for i := range 4 {
		select {
		case <-running:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d handlers ran at once, want 4", i)
		}
	}
	if n := r.p.Stats(0).InFlight.Load(); n != 4 {
		t.Fatalf("in flight %d, want 4", n)
	}
	close(gate)
	for range 4 {
		d := r.recv()
		r.done(d)
	}
}

// The whole per-request path — gateway send, instance receive, handler,
// direct routing to the next instance, reply — allocates nothing.
func TestRoundTripZeroAllocs(t *testing.T) {
	noop := func(*Request, *Response) error { return nil }
	r := newRig(t, 1, upperInPlace, noop)
	r.invoke("warm")
	// Drive the gateway side on this goroutine, locked, without helpers
	// that allocate.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var ds [1]desc.Desc
	n := testing.AllocsPerRun(200, func() {
		buf, _ := r.p.Alloc(gwID)
		r.p.Header(buf).SetData(0, 4)
		r.send(0, buf)
		if _, err := r.gw.Recv(ds[:]); err != nil {
			panic(err)
		}
		r.done(ds[0])
	})
	if n != 0 {
		t.Fatalf("a two-step round trip allocates %v times, want 0", n)
	}
}

// Serve refuses to run outside spry, with a message saying why.
func TestNotUnderSpry(t *testing.T) {
	os.Unsetenv(transport.EnvTransport)
	err := Run(func(*Request, *Response) error { return nil })
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("not started by spry")) {
		t.Fatalf("Run outside spry: %v", err)
	}
}

func BenchmarkChain(b *testing.B) {
	noop := func(*Request, *Response) error { return nil }
	for _, steps := range []int{1, 3} {
		b.Run(strconv.Itoa(steps)+"steps", func(b *testing.B) {
			hs := make([]Handler, steps)
			for i := range hs {
				hs[i] = noop
			}
			r := newRig(b, 1, hs...)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var ds [1]desc.Desc
			b.ReportAllocs()
			for b.Loop() {
				buf, _ := r.p.Alloc(gwID)
				r.send(0, buf)
				r.gw.Recv(ds[:])
				r.done(ds[0])
			}
		})
	}
}

// BenchmarkChainPayload runs a 3-step chain (each step bumps the payload's
// first byte, in place) on payloads from 64 B to 64 MiB, the large ones in
// one extent: a hop passes a descriptor whatever the size, so ns/op and the
// hop metric (a step's end to the next one's start, from the buffer's hop
// stamps) stay flat. The gateway's part (Alloc, Reserve, Free) is in ns/op.
func BenchmarkChainPayload(b *testing.B) {
	bump := func(req *Request, res *Response) error {
		req.Payload()[0]++
		return nil
	}
	for _, size := range []int{64, 64 << 10, 1 << 20, 64 << 20} {
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			r := newRigChunks(b, uint32(size/pool.ChunkSize+1), 1, bump, bump, bump)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			// Commit the payload's pages once, as a gateway that wrote
			// bodies there before has.
			buf, _ := r.p.Alloc(gwID)
			if err := r.p.Reserve(buf, uint64(size), false); err != nil {
				b.Fatal(err)
			}
			clear(r.p.Data(buf))
			r.p.Free(buf, gwID)
			var ds [1]desc.Desc
			var hops, hopNs int64
			b.ReportAllocs()
			for b.Loop() {
				buf, _ := r.p.Alloc(gwID)
				if err := r.p.Reserve(buf, uint64(size), false); err != nil {
					b.Fatal(err)
				}
				r.send(0, buf)
				r.gw.Recv(ds[:])
				h := r.p.Header(ds[0].Buf)
				for i := 1; i < h.Hops(); i++ {
					_, end := h.HopTimes(i - 1)
					start, _ := h.HopTimes(i)
					hops++
					hopNs += start - end
				}
				r.done(ds[0])
			}
			if hops > 0 {
				b.ReportMetric(float64(hopNs)/float64(hops), "hop-ns")
			}
		})
	}
}
