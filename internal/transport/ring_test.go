//go:build linux

package transport

import (
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
)

// Positions count modulo 2^48; descriptors flow unharmed across the wrap.
func TestRingWrap(t *testing.T) {
	for _, name := range []string{"poll", "adaptive"} {
		t.Run(name, func(t *testing.T) {
			p := testPool(t, name, 2)
			v, err := ringViewOf(p)
			if err != nil {
				t.Fatal(err)
			}
			for i := range uint32(2) {
				v.hdr(i).tail.Store(lowMask - 100) // ownerless, just short of the wrap
				v.hdr(i).head.Store(lowMask - 100)
			}
			f := newFabric(t, name, Options{Pool: p})
			a, b := open(t, f, 1), open(t, f, 2)
			got := receiver(b)
			const total = 5000 // several laps of the 1024-slot ring
			go func() {
				for i := range total {
					if err := sendRetry(a, desc.Desc{Dst: 2, Src: 1, Buf: uint32(i)}); err != nil {
						panic(err)
					}
				}
			}()
			for i := range total {
				select {
				case d := <-got:
					if d.Buf != uint32(i) {
						t.Fatalf("got %d, want %d", d.Buf, i)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("received %d of %d", i, total)
				}
			}
			if pos := v.hdr(b.(*ringConn).ring).tail.Load() & lowMask; pos > lowMask-100 {
				t.Fatalf("tail at %d did not wrap", pos)
			}
		})
	}
}

// A ring in which a live producer claimed a slot and has not published it
// (it is writing the descriptor) is not handed to a new owner; once the
// claim is published, it is, emptied. A claim of a producer that died
// (Remove of it) never blocks reuse.
func TestRingInFlightNotReused(t *testing.T) {
	p := testPool(t, "adaptive", 2)
	f := newFabric(t, "adaptive", Options{Pool: p})
	c1 := open(t, f, 1)
	c2 := open(t, f, 2)
	v := c2.(*ringConn).v
	i := c2.(*ringConn).ring
	h := v.hdr(i)
	// Reserve and claim a position the way push does (as producer 1),
	// and stop there.
	t0 := h.tail.Load()
	pos := t0 & lowMask
	if !h.tail.CompareAndSwap(t0, t0+1) {
		t.Fatal("reserve")
	}
	s := v.slot(i, pos)
	if !s.seq.CompareAndSwap(pos, pos|1<<tagShift) {
		t.Fatal("claim")
	}
	c2.Close()
	if err := f.Remove(2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Open(3); err == nil {
		t.Fatal("a ring with a reservation in flight was reused")
	}
	// The stalled producer finishes.
	(&desc.Desc{Dst: 2, Buf: 1}).Encode(s.d[:])
	if !s.seq.CompareAndSwap(pos|1<<tagShift, pos+1) {
		t.Fatal("publish")
	}
	c3 := open(t, f, 3)
	if got := c3.(*ringConn).ring; got != i {
		t.Fatalf("got ring %d, want the reusable %d", got, i)
	}
	// The new owner sees only what is sent to it, not the old descriptor.
	if err := c1.Send(desc.Desc{Dst: 3, Src: 1, Buf: 9}); err != nil {
		t.Fatal(err)
	}
	var ds [4]desc.Desc
	if n := recvWithin(t, c3, ds[:]); n != 1 || ds[0].Buf != 9 {
		t.Fatalf("Recv = %d, %v; want only buf 9", n, ds[:n])
	}
}

// An idle adaptive receiver goes to sleep; descriptors sent at every
// moment around its spin-then-sleep transition all wake it (no lost
// wake-up).
func TestAdaptiveNoLostWakeup(t *testing.T) {
	p := testPool(t, "adaptive", 0)
	f := newFabric(t, "adaptive", Options{Pool: p, Spin: 3 * time.Microsecond})
	a, b := open(t, f, 1), open(t, f, 2)
	got := receiver(b)
	time.Sleep(20 * time.Millisecond)
	if b.(*ringConn).sleeps.Load() == 0 {
		t.Fatal("idle receiver never slept")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		// Gaps from nothing to a few spin budgets: sends land before,
		// during and after the receiver's announcement of sleep.
		if gap := rng.IntN(12); gap > 0 {
			deadline := time.Now().Add(time.Duration(gap) * time.Microsecond)
			for time.Now().Before(deadline) {
			}
		}
		sendAwait(t, a, got, i)
	}
	t.Logf("receiver slept %d times", b.(*ringConn).sleeps.Load())
}

// sendAwait sends buffer i from a to endpoint 2 and waits until its
// receiver delivers it on got.
func sendAwait(t *testing.T, a Conn, got <-chan desc.Desc, i int) {
	t.Helper()
	if err := a.Send(desc.Desc{Dst: 2, Src: 1, Buf: uint32(i)}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d.Buf != uint32(i) {
			t.Fatalf("got %d, want %d", d.Buf, i)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("descriptor %d never woke the receiver (lost wake-up)", i)
	}
}

// The adaptive spin budget: halves toward 0 while descriptors come further
// apart than the spin bound, doubles back toward the bound once they come
// within it.
func TestAdaptiveLearnsBudget(t *testing.T) {
	const spin = int64(50 * time.Microsecond)
	c := &ringConn{adaptive: true, spin: spin, budget: spin}
	var got []int64
	for range 6 {
		c.learn(2 * spin)
		got = append(got, c.budget)
	}
	us := int64(time.Microsecond)
	want := []int64{25 * us, 12500, 6250, 3125, 0, 0}
	if !slices.Equal(got, want) {
		t.Fatalf("budget over slow gaps: %v, want %v", got, want)
	}
	got = got[:0]
	for range 7 {
		c.learn(spin / 2)
		got = append(got, c.budget)
	}
	want = []int64{2 * us, 4 * us, 8 * us, 16 * us, 32 * us, spin, spin}
	if !slices.Equal(got, want) {
		t.Fatalf("budget over quick gaps: %v, want %v", got, want)
	}
	if c.learn(spin); c.budget != spin {
		t.Fatalf("a gap of exactly the bound shrank the budget to %d", c.budget)
	}
}

// An adaptive receiver whose traffic comes slower than its spin bound stops
// spinning (its budget falls to 0) and still gets every descriptor.
func TestAdaptiveStopsSpinningWhenItCannotPay(t *testing.T) {
	p := testPool(t, "adaptive", 0)
	f := newFabric(t, "adaptive", Options{Pool: p, Spin: 20 * time.Microsecond})
	a, b := open(t, f, 1), open(t, f, 2)
	got := receiver(b)
	for i := range 20 {
		time.Sleep(2 * time.Millisecond)
		sendAwait(t, a, got, i)
	}
	// The receiver goroutine is back in Recv, asleep: its budget is only
	// read once it returns, so check it after Close ends that Recv.
	b.Close()
	for range got {
	}
	if bud := b.(*ringConn).budget; bud != 0 {
		t.Fatalf("budget %v after 20 gaps of 2 ms, want 0", time.Duration(bud))
	}
}

// removeEndsRecv checks that f.Remove of an endpoint whose receiver is
// blocked in Recv ends that Recv with ErrClosed.
func removeEndsRecv(t *testing.T, f Fabric) {
	t.Helper()
	c := open(t, f, 5)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var ds [4]desc.Desc
		_, err := c.Recv(ds[:])
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := f.Remove(5); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Recv after Remove: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Remove did not end Recv")
	}
}

// Remove wakes a receiver sleeping on its ring and ends its Recv.
func TestRingRemoveEndsRecv(t *testing.T) {
	for _, name := range []string{"poll", "adaptive"} {
		t.Run(name, func(t *testing.T) {
			p := testPool(t, name, 0)
			f := newFabric(t, name, Options{Pool: p})
			removeEndsRecv(t, f)
		})
	}
}

func TestRingGeometry(t *testing.T) {
	for _, c := range []struct {
		bytes uint32
		cap   uint64
	}{{RingBytes(1024), 1024}, {RingBytes(1024) + 32*100, 1024}, {RingBytes(2), 2}, {RingBytes(2) - 64, 0}, {RingBytes(7), 4}} {
		if got := ringCap(c.bytes); got != c.cap {
			t.Errorf("ringCap(%d) = %d, want %d", c.bytes, got, c.cap)
		}
	}
	for _, c := range []struct {
		a, b uint64
		d    int64
	}{{5, 3, 2}, {3, 5, -2}, {0, lowMask, 1}, {lowMask, 0, -1}, {2, lowMask - 1, 4}} {
		if got := dist48(c.a, c.b); got != c.d {
			t.Errorf("dist48(%d, %d) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}
