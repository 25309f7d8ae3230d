package transport

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
)

// fabricMaker makes a fresh Fabric for one app of a test.
type fabricMaker func(tb testing.TB, app string) Fabric

// makers lists every transport the conformance suite runs against.
func makers() map[string]fabricMaker {
	return map[string]fabricMaker{
		"uds": func(tb testing.TB, app string) Fabric {
			dir, err := os.MkdirTemp("", "spry-uds-")
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { os.RemoveAll(dir) })
			f, err := New("uds", Options{App: app, Dir: dir, UID: -1})
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { f.Close() })
			return f
		},
	}
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
	out := make(chan desc.Desc, 4096)
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

func TestConformance(t *testing.T) {
	for name, mk := range makers() {
		t.Run(name, func(t *testing.T) {
			t.Run("Delivery", func(t *testing.T) { testDelivery(t, mk) })
			t.Run("ManyProducers", func(t *testing.T) { testManyProducers(t, mk) })
			t.Run("NoCrossApp", func(t *testing.T) { testNoCrossApp(t, mk) })
			t.Run("Restart", func(t *testing.T) { testRestart(t, mk) })
			t.Run("Gone", func(t *testing.T) { testGone(t, mk) })
			t.Run("CloseWakesRecv", func(t *testing.T) { testCloseWakes(t, mk) })
			t.Run("ZeroAllocs", func(t *testing.T) { testZeroAllocs(t, mk) })
		})
	}
}

func testDelivery(t *testing.T, mk fabricMaker) {
	f := mk(t, "a")
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
	if a.ID() != 1 || b.ID() != 2 {
		t.Fatalf("ids %d %d", a.ID(), b.ID())
	}
}

// Several producers send numbered descriptors into one consumer: every one
// arrives exactly once, and each producer's arrive in order.
func testManyProducers(t *testing.T, mk fabricMaker) {
	f := mk(t, "a")
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
	fa, fb := mk(t, "a"), mk(t, "b")
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
	f := mk(t, "a")
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
}

func testGone(t *testing.T, mk fabricMaker) {
	f := mk(t, "a")
	a := open(t, f, 1)
	if err := a.Send(desc.Desc{Dst: 4242}); !errors.Is(err, ErrGone) {
		t.Fatalf("send to never-created endpoint: %v, want ErrGone", err)
	}
}

func testCloseWakes(t *testing.T, mk fabricMaker) {
	f := mk(t, "a")
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
}

func testZeroAllocs(t *testing.T, mk fabricMaker) {
	f := mk(t, "a")
	a, b := open(t, f, 1), open(t, f, 2)
	d := desc.Desc{Dst: 2, Src: 1}
	a.Send(d) // warm the address cache
	var ds [4]desc.Desc
	b.Recv(ds[:])
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

// BenchmarkHop measures one descriptor round trip between two endpoints,
// each on a locked OS thread: the cost of two hops of a chain.
func BenchmarkHop(b *testing.B) {
	for name, mk := range makers() {
		b.Run(name, func(b *testing.B) {
			f := mk(b, "bench")
			a, e := open(b, f, 1), open(b, f, 2)
			go func() {
				runtime.LockOSThread()
				var ds [MaxBatch]desc.Desc
				for {
					n, err := e.Recv(ds[:])
					if err != nil {
						return
					}
					for _, d := range ds[:n] {
						d.Dst, d.Src = d.Src, d.Dst
						for e.Send(d) == ErrFull {
						}
					}
				}
			}()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var ds [MaxBatch]desc.Desc
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := a.Send(desc.Desc{Dst: 2, Src: 1, Buf: uint32(i)}); err != nil {
					b.Fatal(err)
				}
				if _, err := a.Recv(ds[:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
