package pool

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func testLayout() Layout {
	return Layout{Buffers: 64, BufferSize: 4096, Functions: 3, Chains: 2, Slots: 8}
}

func newPool(t testing.TB, l Layout) *Pool {
	t.Helper()
	p, err := Create("test", l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// attachCopy maps p a second time through a dup of its fd, as an instance would.
func attachCopy(t testing.TB, p *Pool) *Pool {
	t.Helper()
	fd, err := unix.Dup(p.Fd())
	if err != nil {
		t.Fatal(err)
	}
	q, err := Attach(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func TestLayoutRegions(t *testing.T) {
	t.Parallel()
	for _, l := range []Layout{
		testLayout(),
		{Buffers: 1024, BufferSize: 64 << 10, Functions: 10, Chains: 6, Slots: 40},
		{Buffers: 2, BufferSize: 1000, Functions: 1, Chains: 1, Slots: 1, Endpoints: 2, RingBytes: 4096},
	} {
		r := l.regions()
		offs := []uint64{r.route, r.stats, r.ring, r.hdr, r.arena, r.total}
		for i, o := range offs {
			if o%PageSize != 0 {
				t.Errorf("%+v: region %d at %d not page-aligned", l, i, o)
			}
			if i > 0 && o < offs[i-1] {
				t.Errorf("%+v: regions out of order: %v", l, offs)
			}
		}
		if r.stride < uint64(l.BufferSize) || r.stride%64 != 0 {
			t.Errorf("%+v: stride %d", l, r.stride)
		}
		if got := uint64(l.Size()); got != r.total {
			t.Errorf("Size() = %d, want %d", got, r.total)
		}
	}
}

func TestBadLayout(t *testing.T) {
	t.Parallel()
	for _, l := range []Layout{
		{Buffers: 1, BufferSize: 4096, Functions: 1, Chains: 1, Slots: 1},
		{Buffers: 8, BufferSize: 100, Functions: 1, Chains: 1, Slots: 1},
		{Buffers: 8, BufferSize: 4096, Functions: 0, Chains: 1, Slots: 1},
		{Buffers: 8, BufferSize: 4096, Functions: 1, Chains: 0, Slots: 1},
		{Buffers: 8, BufferSize: 4096, Functions: 1, Chains: 1, Slots: 0},
		{Buffers: 8, BufferSize: 4096, Functions: 1, Chains: 1, Slots: 1, RingBytes: 100, Endpoints: 1},
		{Buffers: 8, BufferSize: 4096, Functions: 1, Chains: 1, Slots: 1, RingBytes: 128},
	} {
		if _, err := Create("bad", l); err == nil {
			t.Errorf("Create(%+v) succeeded", l)
		}
	}
}

func TestAttachValidates(t *testing.T) {
	t.Parallel()
	p := newPool(t, testLayout())
	q := attachCopy(t, p)
	if q.Layout() != p.Layout() {
		t.Fatalf("attached layout %+v, want %+v", q.Layout(), p.Layout())
	}
	// A file that is not a pool is refused.
	fd, err := unix.MemfdCreate("junk", 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Ftruncate(fd, 3*PageSize)
	if _, err := Attach(fd); err == nil {
		t.Fatal("Attach of a zeroed memfd succeeded")
	}
	unix.Close(fd)
}

// The pool cannot be shrunk by anyone holding its fd: that would SIGBUS the
// daemon.
func TestSealed(t *testing.T) {
	t.Parallel()
	p := newPool(t, testLayout())
	if err := unix.Ftruncate(p.Fd(), PageSize); err == nil {
		t.Fatal("shrinking the pool succeeded")
	}
}

func TestAllocFree(t *testing.T) {
	t.Parallel()
	l := testLayout()
	p := newPool(t, l)
	seen := map[uint32]bool{}
	var got []uint32
	for range l.Buffers {
		i, ok := p.Alloc(7)
		if !ok {
			t.Fatalf("Alloc failed after %d buffers", len(got))
		}
		if seen[i] {
			t.Fatalf("buffer %d handed out twice", i)
		}
		if p.Header(i).Owner() != 7 {
			t.Fatalf("owner %d, want 7", p.Header(i).Owner())
		}
		seen[i] = true
		got = append(got, i)
	}
	if _, ok := p.Alloc(7); ok {
		t.Fatal("Alloc succeeded on an empty pool")
	}
	if p.FreeBuffers() != 0 || p.AllocFails() != 1 {
		t.Fatalf("free=%d fails=%d, want 0 and 1", p.FreeBuffers(), p.AllocFails())
	}
	g := p.Header(got[0]).Gen()
	if p.Free(got[0], 8) {
		t.Fatal("Free by a non-holder accepted")
	}
	if !p.Free(got[0], 7) {
		t.Fatal("Free failed")
	}
	if p.Free(got[0], 7) {
		t.Fatal("double Free accepted")
	}
	if p.Header(got[0]).Gen() == g {
		t.Fatal("Free did not bump the generation")
	}
	if p.Holds(got[0], g, 7) {
		t.Fatal("Holds accepted a stale generation")
	}
	for _, i := range got[1:] {
		p.Free(i, 7)
	}
	if p.FreeBuffers() != int(l.Buffers) {
		t.Fatalf("free=%d after freeing all, want %d", p.FreeBuffers(), l.Buffers)
	}
	if o := p.Orphans(func(uint16) bool { return false }); len(o) != 0 {
		t.Fatalf("orphans after freeing all: %v", o)
	}
}

func TestFreeOutOfRange(t *testing.T) {
	t.Parallel()
	p := newPool(t, testLayout())
	if p.Free(1<<30, 1) {
		t.Fatal("Free out of range accepted")
	}
	if p.Holds(1<<30, 1, 1) || p.Accept(1<<30, 1, 1, 2) {
		t.Fatal("Holds or Accept out of range accepted")
	}
}

// hammer allocates, marks, verifies and frees buffers for n rounds; a
// buffer handed to two holders at once shows up as a changed mark.
// It stops after n rounds or at until, whichever comes first.
func hammer(p *Pool, owner uint16, mark uint64, n int, held int, until time.Time) error {
	rng := rand.New(rand.NewPCG(mark, 1))
	var mine []uint32
	for r := 0; r < n; r++ {
		if r%1024 == 0 && time.Now().After(until) {
			break
		}
		if len(mine) < held && rng.IntN(2) == 0 {
			i, ok := p.Alloc(owner)
			if !ok {
				runtime.Gosched()
				continue
			}
			h := p.Header(i)
			h.SetReqID(mark<<32 | uint64(r))
			p.Buffer(i)[0] = byte(r)
			mine = append(mine, i)
			continue
		}
		if len(mine) == 0 {
			continue
		}
		k := rng.IntN(len(mine))
		i := mine[k]
		h := p.Header(i)
		if h.ReqID()>>32 != mark || h.Owner() != uint16(owner) {
			return fmt.Errorf("buffer %d: mark %#x owner %d, want mark %#x owner %d (held twice)",
				i, h.ReqID(), h.Owner(), mark, owner)
		}
		if !p.Free(i, uint16(owner)) {
			return fmt.Errorf("Free(%d) refused", i)
		}
		mine[k] = mine[len(mine)-1]
		mine = mine[:len(mine)-1]
	}
	for _, i := range mine {
		p.Free(i, uint16(owner))
	}
	return nil
}

func TestConcurrentGoroutines(t *testing.T) {
	t.Parallel()
	l := testLayout()
	p := newPool(t, l)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hammer(p, uint16(g+1), uint64(g+1), 20000, 10, time.Now().Add(10*time.Second)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p.FreeBuffers() != int(l.Buffers) {
		t.Fatalf("free=%d, want %d", p.FreeBuffers(), l.Buffers)
	}
	if o := p.Orphans(func(uint16) bool { return false }); len(o) != 0 {
		t.Fatalf("lost buffers: %v", o)
	}
}

// A child process maps the same memfd and hammers it while the parent does.
const childEnv = "SPRY_POOL_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

func childMain() int {
	p, err := Attach(3)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ms, _ := strconv.Atoi(os.Getenv(childEnv))
	until := time.Now().Add(time.Duration(ms) * time.Millisecond)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hammer(p, uint16(100+g), uint64(os.Getpid())<<8|uint64(g), 1<<30, 8, until); err != nil {
				fmt.Fprintln(os.Stderr, err)
				failed.Store(true)
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		return 1
	}
	return 0
}

func TestTwoProcesses(t *testing.T) {
	t.Parallel()
	l := testLayout()
	p := newPool(t, l)
	f := os.NewFile(uintptr(p.Fd()), "pool")
	var cmds []*exec.Cmd
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		// Each side runs for a fixed window, so the processes overlap
		// whatever the start-up time.
		cmd.Env = append(os.Environ(), childEnv+"=300")
		cmd.ExtraFiles = []*os.File{f}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	if err := hammer(p, 1, 1, 1<<30, 8, time.Now().Add(300*time.Millisecond)); err != nil {
		t.Error(err)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("child: %v", err)
		}
	}
	if p.FreeBuffers() != int(l.Buffers) {
		t.Fatalf("free=%d, want %d", p.FreeBuffers(), l.Buffers)
	}
	if o := p.Orphans(func(uint16) bool { return false }); len(o) != 0 {
		t.Fatalf("lost buffers: %v", o)
	}
}

func TestZeroAllocs(t *testing.T) {
	p := newPool(t, testLayout())
	p.SetFunction(0, 0, 4)
	p.StartSlot(1, 5, 1)
	p.SetSlotState(1, SlotReady)
	n := testing.AllocsPerRun(1000, func() {
		i, ok := p.Alloc(3)
		if !ok {
			panic("empty")
		}
		h := p.Header(i)
		if !p.Holds(i, h.Gen(), 3) {
			panic("check")
		}
		_ = p.Data(i)
		p.Free(i, 3)
		p.Pick(0, 0)
	})
	if n != 0 {
		t.Fatalf("Alloc/Check/Free/Pick allocate %v times, want 0", n)
	}
}

func TestRoutingReadOnlyInInstances(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's atomic store faults in C code, which SetPanicOnFault cannot turn into a panic")
	}
	p := newPool(t, testLayout())
	q := attachCopy(t, p)
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	faulted := func() (f bool) {
		defer func() { f = recover() != nil }()
		q.route.gateway.Store(99)
		return false
	}()
	if !faulted {
		t.Fatal("instance wrote the routing table")
	}
	p.SetGateway(42) // the daemon can
	if q.Gateway() != 42 {
		t.Fatalf("instance sees gateway %d, want 42", q.Gateway())
	}
}

func TestRoutingTable(t *testing.T) {
	t.Parallel()
	p := newPool(t, testLayout())
	if err := p.SetFunction(0, 0, 3); err != nil {
		t.Fatal(err)
	}
	if err := p.SetFunction(1, 3, 5); err != nil {
		t.Fatal(err)
	}
	if err := p.SetFunction(2, 7, 2); err == nil {
		t.Fatal("SetFunction past the last slot accepted")
	}
	if err := p.SetChain(1, []uint16{1, 0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetChain(0, []uint16{7}); err == nil {
		t.Fatal("SetChain with an unknown function accepted")
	}
	if p.Steps(1) != 3 {
		t.Fatalf("Steps = %d", p.Steps(1))
	}
	for hop, want := range []uint16{1, 0, 1} {
		if fn, ok := p.Step(1, hop); !ok || fn != want {
			t.Fatalf("Step(1,%d) = %d,%v want %d", hop, fn, ok, want)
		}
	}
	if _, ok := p.Step(1, 3); ok {
		t.Fatal("Step past the end ok")
	}
	if _, ok := p.Step(9, 0); ok {
		t.Fatal("Step of a bad chain ok")
	}
	if _, _, ok := p.Pick(1, 0); ok {
		t.Fatal("Pick found an instance before any started")
	}
	p.StartSlot(4, 11, 1)
	if _, _, ok := p.Pick(1, 0); ok {
		t.Fatal("Pick chose a starting (unannounced) instance")
	}
	p.SetSlotState(4, SlotReady)
	if s, id, ok := p.Pick(1, 0); !ok || s != 4 || id != 11 {
		t.Fatalf("Pick = %d,%d,%v want 4,11,true", s, id, ok)
	}
	p.SetSlotState(4, SlotDraining)
	if _, _, ok := p.Pick(1, 0); ok {
		t.Fatal("Pick chose a draining instance")
	}
}

// Pick (and PickExcept) must agree with a brute-force float reference on
// random loads.
func TestPickMatchesReference(t *testing.T) {
	t.Parallel()
	l := Layout{Buffers: 4, BufferSize: 1024, Functions: 1, Chains: 1, Slots: 16}
	p := newPool(t, l)
	p.SetFunction(0, 0, 16)
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 5000 {
		n := 1 + rng.IntN(16)
		for s := range uint32(16) {
			p.SetSlotState(s, SlotEmpty)
		}
		for s := range uint32(n) {
			p.StartSlot(s, uint16(s+1), uint32(1+rng.IntN(8)))
			if rng.IntN(4) != 0 {
				p.SetSlotState(s, SlotReady)
			}
			p.Stats(s).Queue.Store(int32(rng.IntN(20)))
			p.Stats(s).InFlight.Store(int32(rng.IntN(8)))
		}
		start := uint32(rng.IntN(n))
		// Half the time one instance is excluded (PickExcept: the
		// endpoint standing for other nodes' instances).
		except := uint16(0)
		if rng.IntN(2) == 0 {
			except = uint16(1 + rng.IntN(n))
		}
		hwm := p.fns[0].hwm.Load()
		best, bestR := -1, 0.0
		for k := uint32(0); k < hwm; k++ {
			s := (start + k) % hwm
			if p.SlotState(s) != SlotReady || p.SlotID(s) == except {
				continue
			}
			st := p.Stats(s)
			r := float64(st.Queue.Load()+st.InFlight.Load()+1) / float64(p.SlotCapacity(s))
			if best < 0 || r < bestR-1e-12 {
				best, bestR = int(s), r
			}
		}
		s, id, ok := p.PickExcept(0, start, except)
		if best < 0 {
			if ok {
				t.Fatalf("iter %d: Pick chose %d with no ready slot", iter, s)
			}
			continue
		}
		if !ok || int(s) != best || id != uint16(s+1) {
			t.Fatalf("iter %d: Pick = %d,%d,%v; reference %d", iter, s, id, ok, best)
		}
	}
}

func TestReclaimAndOrphans(t *testing.T) {
	t.Parallel()
	l := testLayout()
	p := newPool(t, l)
	var a, b []uint32
	for range 5 {
		i, _ := p.Alloc(9)
		a = append(a, i)
		j, _ := p.Alloc(10)
		b = append(b, j)
	}
	var got []uint32
	n := p.Reclaim(9, func(i uint32) {
		if p.Header(i).Owner() != OwnerDaemon {
			t.Errorf("reclaimed buffer %d owned by %d", i, p.Header(i).Owner())
		}
		got = append(got, i)
		p.Free(i, OwnerDaemon)
	})
	if n != 5 || len(got) != 5 || p.Reclaimed() != 5 {
		t.Fatalf("reclaimed %d (%v), want 5", n, got)
	}
	// Buffers of a live owner are not orphans; of a dead one they are.
	live := func(o uint16) bool { return o == 10 }
	if o := p.Orphans(live); len(o) != 0 {
		t.Fatalf("orphans with owner alive: %v", o)
	}
	if o := p.Orphans(func(uint16) bool { return false }); len(o) != 5 {
		t.Fatalf("orphans with owner dead: %v, want 5", o)
	}
	// A buffer popped but never owned (its taker died in between) is an orphan.
	i, _ := p.Alloc(10)
	p.bufs[i].own.Store(ownWord(Own{Gen: p.bufs[i].Gen()}))
	o := p.Orphans(live)
	if len(o) != 1 || o[0] != i {
		t.Fatalf("orphans = %v, want [%d]", o, i)
	}
	if !p.Release(i) {
		t.Fatal("Release failed")
	}
	for _, j := range b {
		p.Free(j, 10)
	}
	if p.FreeBuffers() != int(l.Buffers) {
		t.Fatalf("free=%d want %d", p.FreeBuffers(), l.Buffers)
	}
}

func TestMeta(t *testing.T) {
	p := newPool(t, testLayout())
	i, _ := p.Alloc(1)
	h := p.Header(i)
	m := h.WriteMeta()
	if !m.Request([]byte("POST"), []byte("/hello"), []byte("a=1&b=2")) {
		t.Fatal("Request did not fit")
	}
	if !m.Header([]byte("X-User"), []byte("ann")) || !m.Header([]byte("Traceparent"), []byte("00-abc")) {
		t.Fatal("Header did not fit")
	}
	meth, path, q := h.Request()
	if string(meth) != "POST" || string(path) != "/hello" || string(q) != "a=1&b=2" {
		t.Fatalf("Request() = %q %q %q", meth, path, q)
	}
	if h.NumHeaders() != 2 || string(h.Header("x-user")) != "ann" || string(h.Header("TRACEPARENT")) != "00-abc" {
		t.Fatalf("headers: n=%d x-user=%q", h.NumHeaders(), h.Header("x-user"))
	}
	if k, v := h.HeaderAt(1); string(k) != "Traceparent" || string(v) != "00-abc" {
		t.Fatalf("HeaderAt(1) = %q %q", k, v)
	}
	if k, _ := h.HeaderAt(2); k != nil {
		t.Fatal("HeaderAt past the end")
	}
	if h.Header("missing") != nil {
		t.Fatal("found a missing header")
	}
	// Too much metadata is refused, not truncated silently.
	m = h.WriteMeta()
	long := make([]byte, MaxMeta)
	if m.Request([]byte("GET"), long, nil) {
		t.Fatal("oversized path accepted")
	}
	// A fresh buffer carries the metadata over.
	m = h.WriteMeta()
	m.Request([]byte("GET"), []byte("/x"), nil)
	h.SetContentTypeString("text/plain")
	h.SetReqID(77)
	h.HopStart(0, 100)
	h.HopEnd(0, 150)
	j, _ := p.Alloc(1)
	h2 := p.Header(j)
	h2.CopyMeta(h)
	if _, path, _ := h2.Request(); string(path) != "/x" || h2.ReqID() != 77 || string(h2.ContentType()) != "text/plain" {
		t.Fatalf("CopyMeta lost data: %q %d %q", path, h2.ReqID(), h2.ContentType())
	}
	if s, e := h2.HopTimes(0); s != 100 || e != 150 || h2.Hops() != 1 {
		t.Fatalf("hop times %d %d hops %d", s, e, h2.Hops())
	}
	n := testing.AllocsPerRun(100, func() {
		h.Request()
		h.Header("x")
		h.ContentType()
	})
	if n != 0 {
		t.Fatalf("meta accessors allocate %v", n)
	}
}

func TestMetaAttrs(t *testing.T) {
	p := newPool(t, testLayout())
	i, _ := p.Alloc(1)
	h := p.Header(i)
	m := h.WriteMeta()
	m.Request([]byte("POST"), []byte("/e"), nil)
	if h.NumAttrs() != 0 || h.Attr("id") != nil {
		t.Fatal("attributes before any was written")
	}
	m.Header([]byte("X-A"), []byte("1"))
	if !m.AttrString("id", "e-1") || !m.Attr([]byte("spry.activation"), []byte("abc")) {
		t.Fatal("Attr did not fit")
	}
	if m.Header([]byte("X-B"), []byte("2")) {
		t.Fatal("a header after the attributes was accepted")
	}
	if h.NumHeaders() != 1 || string(h.Header("x-a")) != "1" {
		t.Fatal("attributes broke the headers")
	}
	if h.NumAttrs() != 2 || string(h.Attr("id")) != "e-1" || string(h.Attr("spry.activation")) != "abc" || h.Attr("ID") != nil {
		t.Fatalf("attrs: %d %q", h.NumAttrs(), h.Attr("id"))
	}
	if k, v := h.AttrAt(1); string(k) != "spry.activation" || string(v) != "abc" {
		t.Fatalf("AttrAt(1) = %q %q", k, v)
	}
	if k, _ := h.AttrAt(2); k != nil {
		t.Fatal("AttrAt past the end")
	}
	// Without headers, too.
	m = h.WriteMeta()
	m.Request([]byte("GET"), []byte("/"), nil)
	m.AttrString("type", "t")
	if h.NumHeaders() != 0 || string(h.Attr("type")) != "t" {
		t.Fatal("attributes without headers")
	}
	// Added later, to metadata another writer wrote.
	m = h.WriteMeta()
	m.Request([]byte("GET"), []byte("/"), nil)
	m.Header([]byte("X-A"), []byte("1"))
	if !h.AppendAttr([]byte("id"), []byte("1")) || !h.AppendAttr([]byte("source"), []byte("/s")) {
		t.Fatal("AppendAttr did not fit")
	}
	if h.NumHeaders() != 1 || h.NumAttrs() != 2 || string(h.Attr("source")) != "/s" || string(h.Attr("id")) != "1" {
		t.Fatalf("after AppendAttr: %d headers, %d attrs", h.NumHeaders(), h.NumAttrs())
	}
	if h.AppendAttr([]byte("big"), make([]byte, MaxMeta)) {
		t.Fatal("an attribute larger than the metadata fit")
	}
	if h.NumAttrs() != 2 {
		t.Fatal("a refused attribute changed the list")
	}
	if n := testing.AllocsPerRun(100, func() { h.Attr("type"); h.AttrAt(0) }); n != 0 {
		t.Fatalf("attribute readers allocate %v", n)
	}
}

// The metadata lives in memory that any instance of the app can write, so
// the readers must survive any bytes.
func FuzzMetaReader(f *testing.F) {
	f.Add([]byte{4, 'P', 'O', 'S', 'T', 1, 0, '/', 0, 0, 1, 1, 'a', 1, 0, 'b'}, uint16(16))
	f.Add([]byte{255, 255, 255}, uint16(0xffff))
	p, err := Create("fuzz", testLayout())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, meta []byte, n uint16) {
		h := p.Header(0)
		copy(h.meta[:], meta)
		h.metaLen = n
		h.Request()
		k := h.NumHeaders()
		for i := -1; i <= k; i++ {
			h.HeaderAt(i)
		}
		h.Header("a")
		k = h.NumAttrs()
		for i := -1; i <= k; i++ {
			h.AttrAt(i)
		}
		h.Attr("id")
		h.ctypeLen = uint8(n)
		h.ContentType()
		h.off, h.length = uint32(n)*1000, uint32(n)*77
		_ = p.Data(0)
	})
}

func BenchmarkAllocFree(b *testing.B) {
	p := newPool(b, Layout{Buffers: 1024, BufferSize: 64 << 10, Functions: 1, Chains: 1, Slots: 1})
	b.ReportAllocs()
	for b.Loop() {
		i, _ := p.Alloc(1)
		p.Free(i, 1)
	}
}

func BenchmarkAllocFreeParallel(b *testing.B) {
	p := newPool(b, Layout{Buffers: 1024, BufferSize: 64 << 10, Functions: 1, Chains: 1, Slots: 1})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i, ok := p.Alloc(1)
			if ok {
				p.Free(i, 1)
			}
		}
	})
}

func BenchmarkPick(b *testing.B) {
	p := newPool(b, Layout{Buffers: 4, BufferSize: 1024, Functions: 1, Chains: 1, Slots: 8})
	p.SetFunction(0, 0, 8)
	for s := range uint32(8) {
		p.StartSlot(s, uint16(s+1), 1)
		p.SetSlotState(s, SlotReady)
	}
	b.ReportAllocs()
	var k uint32
	for b.Loop() {
		p.Pick(0, k)
		k++
	}
}

// Route parameters and response headers travel as tagged sections after
// the request's metadata; setting a header replaces, adding appends,
// deleting compacts, and a full metadata area is an error, not an overrun.
func TestMetaSections(t *testing.T) {
	p := newPool(t, Layout{Buffers: 2, BufferSize: 1024, Functions: 1, Chains: 1, Slots: 1})
	h := p.Header(0)
	m := h.WriteMeta()
	if !m.Request([]byte("GET"), []byte("/users/42/files/a.txt"), []byte("q=1")) || !m.Header([]byte("X-A"), []byte("a")) {
		t.Fatal("request meta")
	}
	names := [8]string{"id", "*"}
	vals := [8][]byte{[]byte("42"), []byte("/a.txt")}
	if !m.Params(&names, &vals, 2) {
		t.Fatal("params")
	}
	if string(h.Param("id")) != "42" || string(h.Param("*")) != "/a.txt" || h.Param("nope") != nil {
		t.Fatalf("params: %q %q", h.Param("id"), h.Param("*"))
	}
	if string(h.Header("x-a")) != "a" || h.NumHeaders() != 1 {
		t.Fatal("forwarded header lost")
	}
	for _, kv := range [][2]string{{"Location", "/a"}, {"Set-Cookie", "a=1"}, {"Cache-Control", "no-store"}} {
		if err := h.AddRespHeader(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	h.AddRespHeader("Set-Cookie", "b=2")
	h.SetRespHeader("location", "/b") // replaces, case-insensitively
	var got []string
	for k, v, pos, ok := h.NextRespHeader(0); ok; k, v, pos, ok = h.NextRespHeader(pos) {
		got = append(got, string(k)+": "+string(v))
	}
	want := "Set-Cookie: a=1|Cache-Control: no-store|Set-Cookie: b=2|location: /b"
	if strings.Join(got, "|") != want {
		t.Fatalf("response headers %q, want %q", strings.Join(got, "|"), want)
	}
	if string(h.Param("id")) != "42" {
		t.Fatal("params lost after header edits")
	}
	// A copy carries everything over.
	p.Header(1).CopyMeta(h)
	if string(p.Header(1).Param("*")) != "/a.txt" {
		t.Fatal("CopyMeta lost the sections")
	}
	big := strings.Repeat("v", MaxMeta/2)
	if err := h.AddRespHeader("X-Big", big); err != nil {
		t.Fatal(err)
	}
	if err := h.AddRespHeader("X-Big2", big); !errors.Is(err, ErrMetaFull) {
		t.Fatalf("over MaxMeta: %v", err)
	}
}
