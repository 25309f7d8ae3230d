package wasm

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// hostRig is an app in miniature around a Host: a pool whose function 0
// is the suite guest with two instances in the host, chain 0 running it
// twice and chain 1 once, and a gateway endpoint the test drives.
type hostRig struct {
	t   *testing.T
	p   *pool.Pool
	gw  transport.Conn
	hc  *countConn // the host's endpoint
	h   *Host
	mod string // the suite guest's module file

	mu     sync.Mutex
	events []Event
}

const (
	gwID   = 1
	hostID = 2
)

func newHostRig(t *testing.T, grants ...Grants) *hostRig {
	t.Helper()
	return newHostRigWith(t, nil, grants...)
}

// newHostRigWith is newHostRig with set run on the host before it runs.
func newHostRigWith(t *testing.T, set func(*Host), grants ...Grants) *hostRig {
	t.Helper()
	ctx := context.Background()
	mod := filepath.Join(t.TempDir(), "suite.wasm")
	if err := os.WriteFile(mod, guest(t, "suite"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := pool.Create("hosttest", pool.Layout{Buffers: 32, BufferSize: testWindow, Functions: 1, Chains: 2, Slots: 2})
	if err != nil {
		t.Fatal(err)
	}
	f, err := transport.New("uds", transport.Options{App: "hosttest", Dir: t.TempDir(), UID: -1})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := f.Open(gwID)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := f.Open(hostID)
	if err != nil {
		t.Fatal(err)
	}
	p.SetGateway(gwID)
	p.SetFunction(0, 0, 2)
	p.SetChain(0, []uint16{0, 0})
	p.SetChain(1, []uint16{0})
	e, err := NewEngine(ctx, EngineConfig{CacheDir: filepath.Join(os.TempDir(), "spry-wasm-test-cache")})
	if err != nil {
		t.Fatal(err)
	}
	r := &hostRig{t: t, p: p, gw: gw, hc: &countConn{Conn: hc}, mod: mod}
	r.h = NewHost(HostConfig{Engine: e, Pool: p, Conn: r.hc, Output: io.Discard, Events: func(ev Event) {
		r.mu.Lock()
		r.events = append(r.events, ev)
		r.mu.Unlock()
	}})
	// The function's timeout is past any test's wait: a step ends by its
	// own doing or its request's deadline (TestHostRunawayAnswered504OthersServed), never by
	// a slow machine (a recursion to the 32 MiB limit ran past a 10 s
	// timeout at load 80: 504 instead of the trap's 502).
	c := Command{Op: OpLoad, Fn: 0, Name: "suite", Module: mod, Memory: 32 << 20, Timeout: 5 * time.Minute, Spares: 1}
	for _, g := range grants {
		c.Grants = g
	}
	if err := r.h.Load(ctx, c); err != nil {
		t.Fatal(err)
	}
	for slot := range uint32(2) {
		id := uint16(10 + slot)
		if err := r.h.Start(ctx, 0, slot, id); err != nil {
			t.Fatal(err)
		}
		p.StartHosted(slot, id, hostID, 1)
		p.SetSlotState(slot, pool.SlotReady)
	}
	if set != nil {
		set(r.h)
	}
	done := make(chan struct{})
	go func() {
		r.h.Run()
		close(done)
	}()
	t.Cleanup(func() {
		r.h.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("host did not stop")
		}
		for _, id := range []uint16{10, 11} {
			r.h.Stop(id)
		}
		if free := p.FreeBuffers(); free != int(p.Buffers()) {
			t.Errorf("pool: %d of %d buffers free after the test", free, p.Buffers())
		}
		gw.Close()
		f.Close()
		e.Close(ctx)
		p.Close()
	})
	return r
}

// countConn counts what an endpoint sends, and how.
type countConn struct {
	transport.Conn
	sends, batches, batched, most atomic.Int64
}

func (c *countConn) Send(d desc.Desc) error {
	c.sends.Add(1)
	return c.Conn.Send(d)
}

func (c *countConn) SendBatch(ds []desc.Desc) (int, error) {
	c.batches.Add(1)
	c.batched.Add(int64(len(ds)))
	if int64(len(ds)) > c.most.Load() {
		c.most.Store(int64(len(ds)))
	}
	return c.Conn.SendBatch(ds)
}

// send admits a request on chain with the given deadline from now (0:
// none) and returns its buffer.
func (r *hostRig) send(chain uint16, target, body string, timeout time.Duration) uint32 {
	r.t.Helper()
	buf := r.request(chain, target, body, timeout)
	fn, _ := r.p.Step(chain, 0)
	if err := transport.Forward(r.p, r.gw, fn, desc.Desc{Buf: buf, Chain: chain}, 0); err != nil {
		r.t.Fatal(err)
	}
	return buf
}

// request writes a request on chain into a new buffer the gateway holds.
func (r *hostRig) request(chain uint16, target, body string, timeout time.Duration) uint32 {
	r.t.Helper()
	buf, ok := r.p.Alloc(gwID)
	if !ok {
		r.t.Fatal("pool exhausted")
	}
	h := r.p.Header(buf)
	path, query, _ := strings.Cut(target, "?")
	m := h.WriteMeta()
	m.Request([]byte("POST"), []byte(path), []byte(query))
	now := mono.Now()
	var dl int64
	if timeout > 0 {
		dl = now + int64(timeout)
	}
	h.SetTimes(now, dl)
	h.SetReqID(uint64(buf) + 1)
	h.SetChain(chain)
	h.SetData(0, uint32(copy(r.p.Buffer(buf), body)))
	return buf
}

type reply struct {
	status int
	body   string
	hops   int
	id     uint64
}

// recv takes the next reply and frees its buffer.
func (r *hostRig) recv(within time.Duration) reply {
	r.t.Helper()
	ch := make(chan desc.Desc, 1)
	go func() {
		runtime.LockOSThread()
		var ds [1]desc.Desc
		if _, err := r.gw.Recv(ds[:]); err == nil {
			ch <- ds[0]
		}
	}()
	select {
	case d := <-ch:
		if !r.p.Accept(d.Buf, d.Gen, d.Src, gwID) {
			r.t.Fatalf("reply %v: not accepted", d)
		}
		h := r.p.Header(d.Buf)
		rep := reply{status: int(h.Status()), body: string(r.p.Data(d.Buf)), hops: h.Hops(), id: h.ReqID()}
		r.p.Free(d.Buf, gwID)
		return rep
	case <-time.After(within):
		r.t.Fatalf("no reply within %v", within)
	}
	return reply{}
}

func TestHostChainInMemory(t *testing.T) {
	r := newHostRig(t)
	for i := range 20 {
		r.send(0, "/", "hello", 0)
		got := r.recv(10 * time.Second)
		if got.status != 0 || got.body != "HELLO" || got.hops != 2 {
			t.Fatalf("request %d: %+v", i, got)
		}
	}
	var served uint64
	for s := range uint32(2) {
		st := r.p.Stats(s)
		served += st.Served.Load()
		if q, f := st.Queue.Load(), st.InFlight.Load(); q != 0 || f != 0 {
			t.Errorf("slot %d: queue %d, in flight %d after the requests", s, q, f)
		}
	}
	if served != 40 {
		t.Errorf("%d steps served, want 40", served)
	}
}

// The answers of a batch the host received go back together: one
// SendBatch of several, not a send per answer. A batch of requests comes
// in one message (the gateway's side of an Outbox; the buffers in transit
// to the instances, the descriptors to the host).
func TestHostBatchesReplies(t *testing.T) {
	r := newHostRig(t)
	for i := range 40 { // the function's steps are known to be quick after
		r.send(1, "/", "warm", 0)
		if got := r.recv(10 * time.Second); got.body != "WARM" {
			t.Fatalf("warm-up %d: %+v", i, got)
		}
	}
	var ob transport.Outbox
	ob.Init(r.p, r.gw)
	const k = 8
	for round := 0; ; round++ {
		r.hc.sends.Store(0)
		r.hc.batches.Store(0)
		r.hc.batched.Store(0)
		r.hc.most.Store(0)
		for i := range k {
			buf := r.request(1, "/", fmt.Sprint("b", i), 0)
			slot, id, ep, ok := r.p.PickRoute(0, uint32(i))
			if !ok || ep != hostID {
				t.Fatalf("pick: slot %d id %d endpoint %d %v", slot, id, ep, ok)
			}
			r.p.Stats(slot).Queue.Add(1)
			if err := ob.Add(desc.Desc{Dst: ep, Buf: buf, Chain: 1}, id); err != nil {
				t.Fatal(err)
			}
		}
		if back, err := ob.Flush(); len(back) != 0 {
			t.Fatalf("the batch to the host: %d back, %v", len(back), err)
		}
		seen := map[string]bool{}
		for range k {
			got := r.recv(10 * time.Second)
			seen[got.body] = true
		}
		if len(seen) != k {
			t.Fatalf("answers %v, want B0..B%d once each", seen, k-1)
		}
		if n := r.hc.batched.Load(); n != k || r.hc.sends.Load() != 0 {
			t.Fatalf("the host sent %d answers in batches and %d alone, want %d and 0", n, r.hc.sends.Load(), k)
		}
		if r.hc.most.Load() > 1 {
			t.Logf("round %d: %d answers in %d batches (largest %d)", round, k, r.hc.batches.Load(), r.hc.most.Load())
			break
		}
		if round == 20 {
			t.Fatalf("%d rounds of %d requests in one message, every answer sent alone", round+1, k)
		}
	}
}

// The node's commands run beside each other in the host, but a stop does
// not overtake the start of its instance: an instance the node gave up on
// before its start was confirmed (and stopped) is not left in the host.
func TestHostStopAfterUnconfirmedStart(t *testing.T) {
	r := newHostRig(t)
	a, b := net.Pipe()
	defer b.Close()
	go r.h.control(context.Background(), NewWire(a))
	w := NewWire(b)
	evs := make(chan Event, 16)
	go func() {
		for {
			var ev Event
			if w.Recv(&ev) != nil {
				return
			}
			evs <- ev
		}
	}()
	// Function 1 is not loaded yet: its start waits for the load, and
	// the stop that follows must wait for the start.
	for _, c := range []Command{
		{Op: OpStart, Fn: 1, Slot: 1, ID: 12},
		{Op: OpStop, ID: 12},
		{Op: OpLoad, Fn: 1, Name: "late", Module: r.mod, Memory: 32 << 20, Timeout: time.Minute},
	} {
		if err := w.Send(c); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for len(got) < 3 {
		select {
		case ev := <-evs:
			if ev.Err != "" {
				t.Fatalf("event %+v", ev)
			}
			got = append(got, ev.Ev)
		case <-time.After(2 * time.Minute):
			t.Fatalf("events %v, want loaded, ready and stopped", got)
		}
	}
	if strings.Join(got, ",") != EvLoaded+","+EvReady+","+EvStopped {
		t.Errorf("events %v, want loaded, ready, stopped in that order", got)
	}
	if r.h.inst(12) != nil {
		t.Fatal("instance 12 is still in the host after its stop")
	}
}

// What the routing table can make the host adopt is bounded: one instance
// per slot, none in a slot an instance holds; the node's start command
// displaces an adoption it did not ask for.
func TestHostAdoptBounded(t *testing.T) {
	r := newHostRig(t)
	adopted := func(id uint16) bool {
		t.Helper()
		stale := r.p.Stale()
		r.send(1, "/", "x", 0)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if r.h.inst(id) != nil {
				r.recv(10 * time.Second)
				return true
			}
			if r.p.Stale() > stale {
				// Not adopted: the gateway (here, the test) takes its
				// buffer back, as the node's reclaim would.
				r.p.Reclaim(id, func(b uint32) { r.p.Free(b, pool.OwnerDaemon) })
				return false
			}
			if time.Now().After(deadline) {
				t.Fatalf("descriptor for %d neither adopted nor dropped", id)
			}
		}
	}
	// Slot 0 takes nothing; slot 1 names an id the node never started,
	// while instance 11 holds the slot: not adopted.
	r.p.SetSlotState(0, pool.SlotDraining)
	r.p.StartHosted(1, 13, hostID, 1)
	r.p.SetSlotState(1, pool.SlotReady)
	if adopted(13) {
		t.Fatal("adopted 13 into slot 1, which instance 11 holds")
	}
	// The slot free: adopted once; another id written into the slot then
	// is not.
	if err := r.h.Stop(11); err != nil {
		t.Fatal(err)
	}
	if !adopted(13) {
		t.Fatal("13 not adopted into the free slot 1")
	}
	r.p.StartHosted(1, 14, hostID, 1)
	r.p.SetSlotState(1, pool.SlotReady)
	if adopted(14) {
		t.Fatal("adopted 14 into slot 1, which the adopted 13 holds")
	}
	// The node starts 15 in slot 1: 13, which it never started, goes.
	if err := r.h.Start(context.Background(), 0, 1, 15); err != nil {
		t.Fatal(err)
	}
	if r.h.inst(13) != nil || r.h.inst(15) == nil {
		t.Fatalf("after the node's start of 15 in slot 1: 13 %v, 15 %v", r.h.inst(13) != nil, r.h.inst(15) != nil)
	}
	r.p.StartHosted(1, 15, hostID, 1)
	r.p.SetSlotState(1, pool.SlotReady)
	r.send(1, "/", "fine", 0)
	if got := r.recv(10 * time.Second); got.body != "FINE" {
		t.Fatalf("%+v", got)
	}
	r.h.Stop(15)
	r.h.Start(context.Background(), 0, 1, 11) // for the rig's cleanup
	r.p.SetSlotState(0, pool.SlotReady)
}

// Receiving handed on from a working receiver again and again (the
// watchdog promotes one after a microsecond) loses no request: whichever
// receiver runs a batch's rest, every descriptor of every batch is run
// once and answered.
func TestHostHandOverLosesNothing(t *testing.T) {
	r := newHostRigWith(t, func(h *Host) { h.PromoteAfter, h.Tick = time.Microsecond, 20*time.Microsecond })
	var ob transport.Outbox
	ob.Init(r.p, r.gw)
	const rounds, k = 60, 8
	for round := range rounds {
		for i := range k {
			buf := r.request(1, "/", fmt.Sprint("r", round, "-", i), 0)
			slot, id, ep, _ := r.p.PickRoute(0, uint32(i))
			r.p.Stats(slot).Queue.Add(1)
			if err := ob.Add(desc.Desc{Dst: ep, Buf: buf, Chain: 1}, id); err != nil {
				t.Fatal(err)
			}
		}
		if back, err := ob.Flush(); len(back) != 0 {
			t.Fatalf("round %d: %d back, %v", round, len(back), err)
		}
		seen := map[string]bool{}
		for range k {
			seen[r.recv(10*time.Second).body] = true
		}
		if len(seen) != k {
			t.Fatalf("round %d: answers %v, want %d different", round, seen, k)
		}
	}
}

func TestHostRunawayAnswered504OthersServed(t *testing.T) {
	r := newHostRig(t)
	const deadline = 2 * time.Second
	began := time.Now()
	spin := r.send(1, "/?do=spin", "x", deadline)
	time.Sleep(20 * time.Millisecond)
	// The other instance serves meanwhile, without waiting for the
	// runaway: its answer comes first (the runaway's only at its deadline).
	r.send(1, "/", "meanwhile", 0)
	if got := r.recv(10 * time.Second); got.body != "MEANWHILE" {
		t.Fatalf("the other request's answer came after the runaway's (it waited for it): %+v", got)
	}
	got := r.recv(10 * time.Second)
	if got.status != 504 || got.id != uint64(spin)+1 || !strings.Contains(got.body, "deadline") {
		t.Fatalf("runaway: %+v", got)
	}
	if took := time.Since(began); took < deadline {
		t.Errorf("runaway answered after %v, before its deadline (%v)", took, deadline)
	}
	// The instance was replaced: both serve again.
	for range 4 {
		r.send(1, "/", "again", 0)
		if got := r.recv(5 * time.Second); got.body != "AGAIN" {
			t.Fatalf("after the runaway: %+v", got)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) != 1 || r.events[0].Ev != EvRestarted || !strings.Contains(r.events[0].Why, "interrupted") {
		t.Errorf("events %+v, want one restart for the interrupt", r.events)
	}
}

func TestHostTrapAnswered502(t *testing.T) {
	r := newHostRig(t)
	for _, do := range []string{"oob", "exit", "recurse"} {
		r.send(1, "/?do="+do, "x", 0)
		got := r.recv(2 * time.Minute)
		if got.status != 502 || !strings.Contains(got.body, "failed") {
			t.Errorf("%s: %+v", do, got)
		}
		r.send(0, "/", "fine", 0)
		if got := r.recv(time.Minute); got.body != "FINE" {
			t.Errorf("after %s: %+v", do, got)
		}
	}
}

// The function contract's stale-descriptor case, for the host: a
// descriptor with a stale generation or a forged source is dropped unread
// and counted, the buffer left as it was; then the real one is served.
func TestHostDropsStaleDescriptors(t *testing.T) {
	r := newHostRig(t)
	const id, slot = 10, 0
	buf := r.request(1, "/", "real", 0)
	gen, ok := r.p.Transfer(buf, gwID, id)
	if !ok {
		t.Fatal("transfer failed")
	}
	st := r.p.Stats(slot)
	for _, d := range []desc.Desc{
		{Dst: hostID, Src: gwID, Buf: buf, Gen: gen + 1, Chain: 1},
		{Dst: hostID, Src: 99, Buf: buf, Gen: gen, Chain: 1},
	} {
		st.Queue.Add(1)
		if err := r.gw.Send(d); err != nil {
			t.Fatal(err)
		}
	}
	stale := r.p.Stale()
	if err := r.gw.Send(desc.Desc{Dst: hostID, Src: gwID, Buf: r.p.Buffers() + 5, Gen: gen, Chain: 1}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); st.Stale.Load() < 2 || r.p.Stale() <= stale; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stale: %d for the instance, %d in the pool: the host did not drop them", st.Stale.Load(), r.p.Stale()-stale)
		}
	}
	if o := r.p.Header(buf).Own(); o.Holder != gwID || o.Transit != id {
		t.Fatalf("a stale descriptor moved the buffer: %+v", o)
	}
	st.Queue.Add(1)
	if err := r.gw.Send(desc.Desc{Dst: hostID, Src: gwID, Buf: buf, Gen: gen, Chain: 1}); err != nil {
		t.Fatal(err)
	}
	if got := r.recv(10 * time.Second); got.body != "REAL" {
		t.Fatalf("the real descriptor: %+v", got)
	}
	if q := st.Queue.Load(); q != 0 {
		t.Errorf("queue %d after the stale descriptors, want 0", q)
	}
}

// The function contract's shutdown case, for the host: stopping an
// instance (the node drained it first) lets the step it runs finish and
// pass its output on; the host's other instance serves on.
func TestHostStopFinishesTheRunningStep(t *testing.T) {
	r := newHostRig(t, Grants{Clock: true})
	r.send(1, "/?do=nap", "x", 0)
	var slot uint32
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if r.p.Stats(0).InFlight.Load() == 1 {
			break
		}
		if r.p.Stats(1).InFlight.Load() == 1 {
			slot = 1
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the step did not start")
		}
	}
	r.p.SetSlotState(slot, pool.SlotDraining)
	stopped := make(chan error, 1)
	go func() { stopped <- r.h.Stop(uint16(10 + slot)) }()
	if got := r.recv(10 * time.Second); got.status != 0 || got.body != "napped" {
		t.Fatalf("the step running at the stop: %+v", got)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stop did not return after the step")
	}
	for range 3 {
		r.send(1, "/", "on", 0)
		if got := r.recv(5 * time.Second); got.body != "ON" {
			t.Fatalf("after the stop: %+v", got)
		}
	}
}

// A wasm instance whose slot the node made ready before the host heard of
// it (a cold start: no round trip between them) starts at its first
// descriptor; the start command that follows finds it running.
func TestHostAdoptsAtFirstDescriptor(t *testing.T) {
	r := newHostRig(t)
	// Slot 1's instance is replaced by id 12, which only the routing
	// table knows; slot 0 stops taking requests, so they go to 12.
	r.p.SetSlotState(1, pool.SlotDraining)
	if err := r.h.Stop(11); err != nil {
		t.Fatal(err)
	}
	r.p.SetSlotState(0, pool.SlotDraining)
	r.p.StartHosted(1, 12, hostID, 1)
	r.p.SetSlotState(1, pool.SlotReady)
	for i := range 3 {
		r.send(1, "/", "cold", 0)
		if got := r.recv(10 * time.Second); got.status != 0 || got.body != "COLD" {
			t.Fatalf("request %d: %+v", i, got)
		}
	}
	hi := r.h.inst(12)
	if hi == nil || hi.slot != 1 {
		t.Fatalf("instance 12 not adopted in slot 1: %+v", hi)
	}
	if served := r.p.Stats(1).Served.Load(); served != 3 {
		t.Errorf("slot 1 served %d steps, want 3", served)
	}
	in := hi.in.Load()
	if err := r.h.Start(context.Background(), 0, 1, 12); err != nil {
		t.Fatalf("start after adoption: %v", err)
	}
	if r.h.inst(12) != hi || hi.in.Load() != in {
		t.Error("the start command replaced the adopted instance")
	}
	// A draining slot is not adopted: its descriptors are stale.
	r.p.SetSlotState(1, pool.SlotDraining)
	if err := r.h.Stop(12); err != nil {
		t.Fatal(err)
	}
	buf := r.request(1, "/", "late", 0)
	gen, ok := r.p.Transfer(buf, gwID, 12)
	if !ok {
		t.Fatal("transfer failed")
	}
	stale := r.p.Stale()
	if err := r.gw.Send(desc.Desc{Dst: hostID, Src: gwID, Buf: buf, Gen: gen, Chain: 1}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); r.p.Stale() <= stale; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a descriptor for a stopped instance in a draining slot was not dropped")
		}
	}
	if r.h.inst(12) != nil {
		t.Fatal("a stopped instance came back")
	}
	// The gateway takes its buffer back, as the node's reclaim would.
	if !r.p.Move(buf, gwID, gwID) {
		r.p.Reclaim(12, func(b uint32) { r.p.Free(b, pool.OwnerDaemon) })
	} else {
		r.p.Free(buf, gwID)
	}
	r.p.SetSlotState(0, pool.SlotReady)
}

// An idle warm host costs no CPU: soon after the last request its
// watchdog sleeps until the next one, which wakes it.
func TestHostIdleWatchdogSleeps(t *testing.T) {
	r := newHostRig(t)
	asleep := func() {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !r.h.parked.Load(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the watchdog did not go to sleep after the traffic")
			}
		}
		ticks := r.h.ticks.Load()
		time.Sleep(100 * time.Millisecond)
		if n := r.h.ticks.Load() - ticks; n != 0 || !r.h.parked.Load() {
			t.Fatalf("the watchdog ticked %d times while the host was idle", n)
		}
	}
	for range 2 {
		r.send(0, "/", "tick", 0)
		if got := r.recv(10 * time.Second); got.body != "TICK" {
			t.Fatalf("%+v", got)
		}
		asleep()
	}
}

// Closing a host while it makes spare instances in the background waits
// for them: none is instantiated into an engine being closed (a spare
// made after the engine closed its modules panicked in Instance.bind).
func TestHostCloseWhileMakingSpares(t *testing.T) {
	ctx := context.Background()
	mod := filepath.Join(t.TempDir(), "suite.wasm")
	if err := os.WriteFile(mod, guest(t, "suite"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := pool.Create("hostclose", pool.Layout{Buffers: 8, BufferSize: testWindow, Functions: 1, Chains: 1, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	f, err := transport.New("uds", transport.Options{App: "hostclose", Dir: t.TempDir(), UID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 3 {
		hc, err := f.Open(hostID + uint16(i))
		if err != nil {
			t.Fatal(err)
		}
		e, err := NewEngine(ctx, EngineConfig{CacheDir: filepath.Join(os.TempDir(), "spry-wasm-test-cache")})
		if err != nil {
			t.Fatal(err)
		}
		h := NewHost(HostConfig{Engine: e, Pool: p, Conn: hc, Output: io.Discard})
		done := make(chan struct{})
		go func() {
			h.Run()
			close(done)
		}()
		if err := h.Load(ctx, Command{Op: OpLoad, Fn: 0, Name: "suite", Module: mod, Memory: 32 << 20, Spares: 8}); err != nil {
			t.Fatal(err)
		}
		h.Close()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("host did not stop")
		}
		// Nothing is made after the host stopped, and the spares are
		// closed: no instance is left for the engine's close.
		fn := h.fn(0).f
		time.Sleep(10 * time.Millisecond)
		if n := fn.live.Load(); n != 0 {
			t.Fatalf("%d instances left after the host stopped", n)
		}
		e.Close(ctx)
	}
}
