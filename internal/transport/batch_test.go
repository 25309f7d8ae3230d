package transport

import (
	"errors"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
	"golang.org/x/sys/unix"
)

// Batches: SendBatch and the Outbox, on every transport.
func TestSendBatch(t *testing.T) {
	for _, m := range makers() {
		mk := m.mk
		t.Run(m.name, func(t *testing.T) {
			t.Run("InOrder", func(t *testing.T) { testBatchInOrder(t, mk) })
			t.Run("Mixed", func(t *testing.T) { testBatchMixed(t, mk) })
			t.Run("ZeroAllocs", func(t *testing.T) { testBatchZeroAllocs(t, mk) })
			t.Run("OutboxOwnership", func(t *testing.T) { testOutboxOwnership(t, m.name, mk) })
		})
	}
}

// drain receives exactly n descriptors from c, ds at most at a time.
func drain(t *testing.T, c Conn, n int, ds []desc.Desc) []desc.Desc {
	t.Helper()
	var got []desc.Desc
	for len(got) < n {
		k := recvWithin(t, c, ds[:min(len(ds), n-len(got))])
		got = append(got, ds[:k]...)
	}
	return got
}

// A batch of a few, and one of more than MaxBatch, arrive whole and in
// order; a receiver that asks for fewer than a batch holds takes it in
// parts (the stream stays framed in a batch's middle).
func testBatchInOrder(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	a, b := open(t, f, 1), open(t, f, 2)
	var ds [MaxBatch + 5]desc.Desc
	for i := range ds {
		ds[i] = desc.Desc{Dst: 2, Src: 1, Buf: uint32(i), Gen: 9, Chain: 3, Hop: 1}
	}
	if n, err := a.SendBatch(ds[:3]); n != 3 || err != nil {
		t.Fatalf("SendBatch of 3: %d, %v", n, err)
	}
	if n, err := a.SendBatch(ds[3:]); n != len(ds)-3 || err != nil {
		t.Fatalf("SendBatch of %d: %d, %v", len(ds)-3, n, err)
	}
	var small [5]desc.Desc
	got := drain(t, b, len(ds), small[:])
	for i, d := range got {
		if d != ds[i] {
			t.Fatalf("descriptor %d: got %v, want %v", i, d, ds[i])
		}
	}
	if n, err := a.SendBatch(nil); n != 0 || err != nil {
		t.Fatalf("empty SendBatch: %d, %v", n, err)
	}
}

// A batch whose descriptors name different destinations sends the part
// before the first stranger and says why not the rest.
func testBatchMixed(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	a, b, c := open(t, f, 1), open(t, f, 2), open(t, f, 3)
	ds := []desc.Desc{{Dst: 2, Buf: 0}, {Dst: 2, Buf: 1}, {Dst: 3, Buf: 2}, {Dst: 2, Buf: 3}}
	n, err := a.SendBatch(ds)
	if n != 2 || !errors.Is(err, errMixed) {
		t.Fatalf("mixed SendBatch: %d, %v; want 2, %v", n, err, errMixed)
	}
	var buf [MaxBatch]desc.Desc
	if got := drain(t, b, 2, buf[:]); got[0].Buf != 0 || got[1].Buf != 1 {
		t.Fatalf("received %v", got)
	}
	// Nothing else came to either: a marker sent after is next.
	for _, e := range []Conn{b, c} {
		if err := a.Send(desc.Desc{Dst: e.ID(), Buf: 99}); err != nil {
			t.Fatal(err)
		}
		if got := drain(t, e, 1, buf[:]); got[0].Buf != 99 {
			t.Fatalf("endpoint %d received %v before the marker", e.ID(), got[0])
		}
	}
}

func testBatchZeroAllocs(t *testing.T, mk fabricMaker) {
	f := fabric(t, mk, "a")
	a, b := open(t, f, 1), open(t, f, 2)
	ds := make([]desc.Desc, 8)
	for i := range ds {
		ds[i] = desc.Desc{Dst: 2, Src: 1, Buf: uint32(i)}
	}
	var rs [MaxBatch]desc.Desc
	a.SendBatch(ds) // warm the address cache
	drain(t, b, len(ds), rs[:])
	watchdog := time.AfterFunc(10*time.Second, func() { b.Close() }) // a lost descriptor ends Recv
	defer watchdog.Stop()
	n := testing.AllocsPerRun(100, func() {
		if k, err := a.SendBatch(ds); k != len(ds) || err != nil {
			panic(err)
		}
		for got := 0; got < len(ds); {
			k, err := b.Recv(rs[:])
			if err != nil {
				panic(err)
			}
			got += k
		}
	})
	if n != 0 {
		t.Fatalf("SendBatch+Recv allocate %v times, want 0", n)
	}
}

// batchPool is a pool with room for a few buffers in flight.
func batchPool(t *testing.T, name string) *pool.Pool {
	t.Helper()
	e, rb := PoolLayout(name, defaultEndpoints)
	p, err := pool.Create("test-batch-"+name, pool.Layout{
		Buffers: 8, BufferSize: pool.MinBufferSize, Functions: 1, Chains: 1, Slots: 1,
		Endpoints: e, RingBytes: rb,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// An Outbox's batch moves ownership whole: what went is the receiver's
// once it accepts, what did not is the sender's again (no transit left),
// never a buffer with no holder or two. On skmsg a batch that does not
// fit is refused whole.
func testOutboxOwnership(t *testing.T, name string, mk fabricMaker) {
	p := batchPool(t, name)
	o := Options{App: "a", Pool: p, Dir: t.TempDir(), UID: -1, GID: -1}
	if name == "skmsg" {
		o.BPF, o.AppID = sharedSockmap(t), shared.apps.Add(1)
	}
	f := newFabric(t, name, o)
	a, b := open(t, f, 1), open(t, f, 2)
	var ob Outbox
	ob.Init(p, a)
	var rs [MaxBatch]desc.Desc

	// The destination has room: all three go.
	bufs := allocN(t, p, 1, 3)
	for _, buf := range bufs {
		if !ob.Room(2) {
			t.Fatal("no room in an outbox of fewer than MaxBatch")
		}
		if err := ob.Add(desc.Desc{Dst: 2, Buf: buf}, 2); err != nil {
			t.Fatal(err)
		}
		if own := p.Header(buf).Own(); own.Holder != 1 || own.Transit != 2 {
			t.Fatalf("buffer %d after Add: %+v, want held by 1 in transit to 2", buf, own)
		}
	}
	if ob.Room(3) {
		t.Fatal("room for another destination in a non-empty outbox")
	}
	if back, err := ob.Flush(); len(back) != 0 || err != nil {
		t.Fatalf("Flush: %v back, %v", back, err)
	}
	for i, d := range drain(t, b, 3, rs[:]) {
		if d.Buf != bufs[i] || d.Src != 1 || !p.Accept(d.Buf, d.Gen, d.Src, 2) {
			t.Fatalf("descriptor %d: %v not accepted", i, d)
		}
		p.Free(d.Buf, 2)
	}

	// The destination has room for one: fill it, then let one go.
	filled := 0
	for ; ; filled++ {
		err := a.Send(desc.Desc{Dst: 2, Src: 1, Buf: 1 << 20})
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil || filled > 1<<17 {
			t.Fatalf("filling: %v after %d", err, filled)
		}
	}
	time.Sleep(10 * time.Millisecond) // skmsg and uds deliver in the kernel; let it finish
	drain(t, b, 1, rs[:1])
	filled--
	bufs = allocN(t, p, 1, 3)
	for _, buf := range bufs {
		if err := ob.Add(desc.Desc{Dst: 2, Buf: buf}, 2); err != nil {
			t.Fatal(err)
		}
	}
	back, err := ob.Flush()
	went := 3 - len(back)
	if went == 3 || !errors.Is(err, ErrFull) {
		t.Fatalf("Flush into a full destination: %d went, %v", went, err)
	}
	if name == "skmsg" && went != 0 {
		t.Fatalf("skmsg sent %d of a batch of 3 with room for 1: a batch goes whole or not at all", went)
	}
	for i, d := range back {
		if d.Buf != bufs[went+i] {
			t.Fatalf("back: %v, want the batch's tail from %d", back, went)
		}
		if own := p.Header(d.Buf).Own(); own.Holder != 1 || own.Transit != 0 {
			t.Fatalf("buffer %d back: %+v, want held by 1, no transit", d.Buf, own)
		}
	}
	// The receiver catches up: the filler, then what went, accepted.
	got := drain(t, b, filled+went, rs[:])
	for i, d := range got[filled:] {
		if d.Buf != bufs[i] || !p.Accept(d.Buf, d.Gen, d.Src, 2) {
			t.Fatalf("sent descriptor %v not accepted", d)
		}
		p.Free(d.Buf, 2)
	}
	for _, d := range back {
		if !p.Free(d.Buf, 1) {
			t.Fatalf("the sender cannot free buffer %d it holds again", d.Buf)
		}
	}
	if p.FreeBuffers() != int(p.Buffers()) {
		t.Fatalf("%d of %d buffers free", p.FreeBuffers(), p.Buffers())
	}

	// A buffer the sender does not hold is refused at Add, unqueued.
	if err := ob.Add(desc.Desc{Dst: 2, Buf: 0}, 2); !errors.Is(err, ErrLost) || ob.Len() != 0 {
		t.Fatalf("Add of a buffer not held: %v, %d queued", err, ob.Len())
	}
}

func allocN(t *testing.T, p *pool.Pool, owner uint16, n int) []uint32 {
	t.Helper()
	out := make([]uint32, n)
	for i := range out {
		b, ok := p.Alloc(owner)
		if !ok {
			t.Fatal("pool empty")
		}
		out[i] = b
	}
	return out
}

// A malformed write on an skmsg endpoint (not whole descriptors) is
// refused by the kernel; batches before and after it arrive framed.
func TestSkmsgMalformedLength(t *testing.T) {
	f := fabric(t, makeSkmsg, "a")
	a, b := open(t, f, 1), open(t, f, 2)
	ds := []desc.Desc{{Dst: 2, Src: 1, Buf: 1}, {Dst: 2, Src: 1, Buf: 2}}
	if n, err := a.SendBatch(ds); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	var raw [40]byte // two descriptors and a half, for 2
	for i := range 2 {
		desc.Desc{Dst: 2, Src: 1, Buf: 666}.Encode(raw[16*i:])
	}
	raw[32] = 2
	if n, err := unix.Write(a.(Poller).FD(), raw[:]); n != len(raw) || err != nil {
		t.Fatalf("raw write: %d, %v", n, err)
	}
	ds[0].Buf, ds[1].Buf = 3, 4
	if n, err := a.SendBatch(ds); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	var rs [MaxBatch]desc.Desc
	for i, d := range drain(t, b, 4, rs[:]) {
		if d.Buf != uint32(i+1) {
			t.Fatalf("descriptor %d: %v (the malformed message got through?)", i, d)
		}
	}
}
