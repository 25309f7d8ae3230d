package transport

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/bpf"
	"github.com/spry-dev/spry/internal/bpf/bpftest"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
)

// fabricMaker makes a fresh Fabric for one app of a test, with its pool,
// with room for eps endpoints (0: a default; uds ignores it).
type fabricMaker func(tb testing.TB, app string, eps uint32) (Fabric, *pool.Pool)

type maker struct {
	name string
	mk   fabricMaker
}

// makers lists every transport the conformance suite runs against.
func makers() []maker {
	return []maker{
		{"uds", makeUDS},
		{"skmsg", makeSkmsg},
		{"poll", makeRing("poll", 0)},
		{"adaptive", makeRing("adaptive", 0)},
	}
}

const defaultEndpoints = 16

// testPool makes a small pool laid out for transport name.
func testPool(tb testing.TB, name string, eps uint32) *pool.Pool {
	tb.Helper()
	if eps == 0 {
		eps = defaultEndpoints
	}
	e, rb := PoolLayout(name, eps)
	p, err := pool.Create("test-"+name, pool.Layout{
		Buffers: 2, BufferSize: pool.MinBufferSize, Functions: 1, Chains: 1, Slots: 1,
		Endpoints: e, RingBytes: rb,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func newFabric(tb testing.TB, name string, o Options) Fabric {
	tb.Helper()
	f, err := New(name, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f
}

func makeUDS(tb testing.TB, app string, eps uint32) (Fabric, *pool.Pool) {
	p := testPool(tb, "uds", eps)
	dir, err := os.MkdirTemp("", "spry-uds-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return newFabric(tb, "uds", Options{App: app, Dir: dir, UID: -1, Pool: p}), p
}

var _ Sockmap = (*bpf.Sockmap)(nil)

// The tests of one process share one sockmap, as the apps of a node do.
var shared struct {
	once sync.Once
	sm   *bpf.Sockmap
	err  error
	apps atomic.Uint32
}

func sharedSockmap(tb testing.TB) *bpf.Sockmap {
	tb.Helper()
	shared.once.Do(func() { shared.sm, shared.err = bpf.New() })
	if shared.err != nil {
		bpftest.Unavailable(tb, shared.err)
	}
	return shared.sm
}

func makeSkmsg(tb testing.TB, app string, eps uint32) (Fabric, *pool.Pool) {
	sm := sharedSockmap(tb)
	p := testPool(tb, "skmsg", eps)
	return newFabric(tb, "skmsg", Options{App: app, Pool: p, BPF: sm, AppID: shared.apps.Add(1)}), p
}

func makeRing(name string, spin time.Duration) fabricMaker {
	return func(tb testing.TB, app string, eps uint32) (Fabric, *pool.Pool) {
		p := testPool(tb, name, eps)
		return newFabric(tb, name, Options{App: app, Pool: p, Spin: spin}), p
	}
}

func fabric(tb testing.TB, mk fabricMaker, app string) Fabric {
	f, _ := mk(tb, app, 0)
	return f
}

func open(tb testing.TB, f Fabric, id uint16) Conn {
	tb.Helper()
	c, err := f.Open(id)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// receiver drains c on a locked thread into a channel until closed.
func receiver(c Conn) <-chan desc.Desc {
	out := make(chan desc.Desc, 1<<16)
	go func() {
		runtime.LockOSThread()
		defer close(out)
		var ds [MaxBatch]desc.Desc
		for {
			n, err := c.Recv(ds[:])
			if err != nil {
				return
			}
			for _, d := range ds[:n] {
				out <- d
			}
		}
	}()
	return out
}

// recvWithin calls c.Recv, closing c if it blocks longer than 5 s (Close
// wakes it), so a lost descriptor fails the test instead of hanging it.
func recvWithin(tb testing.TB, c Conn, ds []desc.Desc) int {
	tb.Helper()
	tm := time.AfterFunc(5*time.Second, func() { c.Close() })
	n, err := c.Recv(ds)
	if !tm.Stop() {
		tb.Fatal("Recv blocked for 5s: descriptor lost?")
	}
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// sendRetry sends, waiting briefly while the destination is full.
func sendRetry(c Conn, d desc.Desc) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := c.Send(d)
		if !errors.Is(err, ErrFull) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// Child processes: the test binary re-executes itself as an instance.
const childEnv = "SPRY_TRANSPORT_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(checkLeaks(m.Run, func() {
		if shared.sm != nil {
			shared.sm.Close()
		}
	}))
}

func TestConformance(t *testing.T) {
	for _, m := range makers() {
		mk := m.mk
		t.Run(m.name, func(t *testing.T) {
			t.Run("Delivery", func(t *testing.T) { testDelivery(t, mk) })
			t.Run("Batch", func(t *testing.T) { testBatch(t, mk) })
			t.Run("ManyProducers", func(t *testing.T) { testManyProducers(t, mk) })
			t.Run("NoCrossApp", func(t *testing.T) { testNoCrossApp(t, mk) })
			t.Run("Restart", func(t *testing.T) { testRestart(t, mk) })
			t.Run("RestartReusesEndpoint", func(t *testing.T) { testRestartReuse(t, mk) })
			t.Run("Gone", func(t *testing.T) { testGone(t, mk) })
			t.Run("Full", func(t *testing.T) { testFull(t, mk) })
			t.Run("CloseWakesRecv", func(t *testing.T) { testCloseWakes(t, mk) })
			t.Run("CloseWakesPoller", func(t *testing.T) { testCloseWakesPoller(t, mk) })
			t.Run("ZeroAllocs", func(t *testing.T) { testZeroAllocs(t, mk) })
			t.Run("CrossProcess", func(t *testing.T) { testCrossProcess(t, mk) })
		})
	}
}

func testDelivery(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	a, b := open(t, f, 1), open(t, f, 2)
	got := receiver(b)
	want := desc.Desc{Dst: 2, Src: 1, Buf: 7, Gen: 9, Chain: 3, Hop: 1, Flags: desc.FlagReply}
	if err := a.Send(want); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d != want {
			t.Fatalf("received %v, want %v", d, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("descriptor not delivered")
	}
	// An endpoint may send to itself (CtlStop does).
	self := desc.Desc{Dst: 2, Src: 2, Buf: desc.CtlStop, Flags: desc.FlagControl}
	if err := b.Send(self); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d != self {
			t.Fatalf("received %v, want %v", d, self)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("descriptor to self not delivered")
	}
	if a.ID() != 1 || b.ID() != 2 {
		t.Fatalf("ids %d %d", a.ID(), b.ID())
	}
}

// Descriptors queued before a Recv come out together, in order, at most
// len(ds) at a time.
func testBatch(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	a, b := open(t, f, 1), open(t, f, 2)
	for i := range 8 {
		if err := a.Send(desc.Desc{Dst: 2, Src: 1, Buf: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond) // skmsg and uds deliver in the kernel; let it finish
	next := uint32(0)
	for _, want := range []int{3, 3, 2} {
		var ds [3]desc.Desc
		n := recvWithin(t, b, ds[:])
		if n != want {
			t.Fatalf("Recv took %d of the queued descriptors, want %d", n, want)
		}
		for _, d := range ds[:n] {
			if d.Buf != next {
				t.Fatalf("got %d, want %d", d.Buf, next)
			}
			next++
		}
	}
}

// Several producers send numbered descriptors into one consumer: every one
// arrives exactly once, and each producer's arrive in order.
func testManyProducers(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	const producers, each = 4, 5000
	sink := open(t, f, 100)
	got := receiver(sink)
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		c := open(t, f, uint16(p+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := sendRetry(c, desc.Desc{Dst: 100, Src: uint16(p + 1), Buf: uint32(i)}); err != nil {
					errs <- fmt.Errorf("producer %d send %d: %w", p, i, err)
					return
				}
			}
		}()
	}
	next := make([]uint32, producers+1)
	timeout := time.After(30 * time.Second)
	for n := 0; n < producers*each; n++ {
		select {
		case d := <-got:
			if d.Src < 1 || d.Src > producers {
				t.Fatalf("descriptor from unknown producer %d", d.Src)
			}
			if d.Buf != next[d.Src] {
				t.Fatalf("producer %d: got %d, want %d (lost, duplicated or reordered)", d.Src, d.Buf, next[d.Src])
			}
			next[d.Src]++
		case err := <-errs:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("received %d of %d", n, producers*each)
		}
	}
	wg.Wait()
	select {
	case d := <-got:
		t.Fatalf("extra descriptor %v", d)
	case <-time.After(50 * time.Millisecond):
	}
}

// An endpoint of one app cannot reach an endpoint of another app, even
// when it names the other's id.
func testNoCrossApp(t *testing.T, mk fabricMaker) {
	fa, fb := fabric(t, mk, "a"), fabric(t, mk, "b")
	a := open(t, fa, 1)
	b := open(t, fb, 2)
	got := receiver(b)
	if err := a.Send(desc.Desc{Dst: 2, Src: 1}); err == nil {
		// Some transports drop silently; either way b must not see it.
		t.Log("cross-app send reported no error")
	}
	select {
	case d := <-got:
		t.Fatalf("app b received %v from app a", d)
	case <-time.After(100 * time.Millisecond):
	}
}

// A restarted instance (removed, then added under a new id) gets new
// traffic and none of the descriptors queued for its predecessor.
func testRestart(t *testing.T, mk fabricMaker) {
	testRestartIn(t, fabric(t, mk, "a"))
}

// The same with no spare endpoint: the successor must reuse the entry
// (ring, counter) of its predecessor, which still has descriptors in it.
func testRestartReuse(t *testing.T, mk fabricMaker) {
	f, _ := mk(t, "a", 2)
	testRestartIn(t, f)
}

func testRestartIn(t *testing.T, f Fabric) {
	src := open(t, f, 1)
	old := open(t, f, 2)
	for i := range 10 {
		if err := src.Send(desc.Desc{Dst: 2, Buf: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()
	if err := f.Remove(2); err != nil {
		t.Fatal(err)
	}
	if err := src.Send(desc.Desc{Dst: 2}); !errors.Is(err, ErrGone) {
		t.Fatalf("send to removed endpoint: %v, want ErrGone", err)
	}
	fresh := open(t, f, 3)
	got := receiver(fresh)
	if err := src.Send(desc.Desc{Dst: 3, Buf: 99}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d.Buf != 99 {
			t.Fatalf("restarted endpoint got %v, want the new descriptor", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("restarted endpoint got nothing")
	}
	select {
	case d := <-got:
		t.Fatalf("restarted endpoint got old descriptor %v", d)
	case <-time.After(50 * time.Millisecond):
	}
	if err := src.Send(desc.Desc{Dst: 2}); !errors.Is(err, ErrGone) {
		t.Fatalf("send to the predecessor after the restart: %v, want ErrGone", err)
	}
}

func testGone(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	a := open(t, f, 1)
	for _, dst := range []uint16{4242, 0} {
		if err := a.Send(desc.Desc{Dst: dst}); !errors.Is(err, ErrGone) {
			t.Fatalf("send to never-created endpoint %d: %v, want ErrGone", dst, err)
		}
	}
	// Gone is not sticky: the sender still reaches live endpoints.
	b := open(t, f, 2)
	if err := a.Send(desc.Desc{Dst: 2}); err != nil {
		t.Fatalf("send after ErrGone: %v", err)
	}
	var ds [1]desc.Desc
	if n := recvWithin(t, b, ds[:]); n != 1 {
		t.Fatalf("Recv: %d", n)
	}
}

// A destination that does not receive fills up: Send says ErrFull (and
// never blocks), nothing accepted is lost, and once the receiver catches
// up there is room again.
func testFull(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	a, b := open(t, f, 1), open(t, f, 2)
	const limit = 1 << 17
	sent := 0
	start := time.Now()
	for ; sent < limit; sent++ {
		err := a.Send(desc.Desc{Dst: 2, Src: 1, Buf: uint32(sent)})
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if sent == limit {
		t.Fatalf("no ErrFull after %d sends", sent)
	}
	t.Logf("full after %d descriptors (%v)", sent, time.Since(start))
	var ds [MaxBatch]desc.Desc
	for got := 0; got < sent; {
		n := recvWithin(t, b, ds[:])
		for _, d := range ds[:n] {
			if d.Buf != uint32(got) {
				t.Fatalf("after full: got %d, want %d", d.Buf, got)
			}
			got++
		}
	}
	if err := a.Send(desc.Desc{Dst: 2, Src: 1, Buf: 7}); err != nil {
		t.Fatalf("send after draining: %v", err)
	}
	if n := recvWithin(t, b, ds[:]); n != 1 || ds[0].Buf != 7 {
		t.Fatalf("Recv after draining: %d %v", n, ds[0])
	}
}

func testCloseWakes(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	c, err := f.Open(5)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var ds [4]desc.Desc
		_, err := c.Recv(ds[:])
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Recv after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake Recv")
	}
	if err := c.Send(desc.Desc{Dst: 5}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
	var ds [4]desc.Desc
	if _, err := c.Recv(ds[:]); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv on a closed endpoint: %v, want ErrClosed", err)
	}
}

func testZeroAllocs(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	a, b := open(t, f, 1), open(t, f, 2)
	d := desc.Desc{Dst: 2, Src: 1}
	a.Send(d) // warm the address cache
	var ds [4]desc.Desc
	recvWithin(t, b, ds[:])
	watchdog := time.AfterFunc(10*time.Second, func() { b.Close() }) // a lost descriptor ends Recv
	defer watchdog.Stop()
	n := testing.AllocsPerRun(200, func() {
		if err := a.Send(d); err != nil {
			panic(err)
		}
		if _, err := b.Recv(ds[:]); err != nil {
			panic(err)
		}
	})
	if n != 0 {
		t.Fatalf("Send+Recv allocate %v times, want 0", n)
	}
}

// Instances in other processes, attached from what Add handed them: they
// receive what was sent to them before they started (the endpoint exists
// when Add returns), then send numbered descriptors back; the parent
// receives every one once, in each child's order.
func testCrossProcess(t *testing.T, mk fabricMaker) {
	f, p := mk(t, "a", 0)
	parent := open(t, f, 1)
	got := receiver(parent)
	const children, early, each = 2, 5, 3000
	var cmds []*exec.Cmd
	for k := range children {
		id := uint16(10 + k)
		h, err := f.Add(id)
		if err != nil {
			t.Fatal(err)
		}
		for i := range early {
			if err := parent.Send(desc.Desc{Dst: id, Src: 1, Buf: uint32(i)}); err != nil {
				t.Fatalf("send to endpoint %d before its process starts: %v", id, err)
			}
		}
		cmd, err := startChild(p, h, id, fmt.Sprintf("1,%d,%d", early, each))
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		cmds = append(cmds, cmd)
	}
	next := map[uint16]uint32{}
	timeout := time.After(60 * time.Second)
	for n := 0; n < children*each; n++ {
		select {
		case d := <-got:
			if d.Src < 10 || d.Src >= 10+children || d.Buf != next[d.Src] {
				t.Fatalf("got %v, want buf %d from %d", d, next[d.Src], d.Src)
			}
			next[d.Src]++
		case <-timeout:
			t.Fatalf("received %d of %d from the children", n, children*each)
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	}
	for k := range children {
		if err := f.Remove(uint16(10 + k)); err != nil {
			t.Fatal(err)
		}
	}
}

// startChild starts the test binary as instance id, with the pool at fd 3
// and the handed-off files after it, the way the daemon does.
func startChild(p *pool.Pool, h Handoff, id uint16, arg string) (*exec.Cmd, error) {
	pf, err := dupFile(p.Fd(), "pool")
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.ExtraFiles = append([]*os.File{pf}, h.Files...)
	var fds []string
	for i := range h.Files {
		fds = append(fds, strconv.Itoa(4+i))
	}
	cmd.Env = append(os.Environ(), h.Env...)
	cmd.Env = append(cmd.Env, EnvID+"="+strconv.Itoa(int(id)), EnvFDs+"="+strings.Join(fds, ","), childEnv+"="+arg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd, cmd.Start()
}

// childMain is an instance: parent,early,each in childEnv.
func childMain() int {
	var parent uint16
	var early, each int
	if _, err := fmt.Sscanf(os.Getenv(childEnv), "%d,%d,%d", &parent, &early, &each); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	p, err := pool.Attach(3)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	defer p.Close()
	c, err := Attach(os.Getenv, p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	defer c.Close()
	runtime.LockOSThread()
	var ds [MaxBatch]desc.Desc
	for got := 0; got < early; {
		n, err := c.Recv(ds[:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "child recv:", err)
			return 1
		}
		for _, d := range ds[:n] {
			if d.Buf != uint32(got) || d.Dst != c.ID() {
				fmt.Fprintf(os.Stderr, "child: got %v, want buf %d\n", d, got)
				return 1
			}
			got++
		}
	}
	for i := range each {
		if err := sendRetry(c, desc.Desc{Dst: parent, Src: c.ID(), Buf: uint32(i)}); err != nil {
			fmt.Fprintln(os.Stderr, "child send:", err)
			return 1
		}
	}
	return 0
}
