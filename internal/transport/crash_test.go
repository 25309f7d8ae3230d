//go:build spry_crash && linux

package transport

import (
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/bpf"
	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
)

// The crash-point walk (issue 17): for every transport and every named
// point of the send and receive protocols, a sender (a goroutine standing
// in for an instance) is stopped dead at the point mid-stream; the daemon
// then does what it does for a dead instance (Reclaim, Remove). Afterwards:
// every buffer was taken exactly once (accepted by the receiver or
// reclaimed by the daemon, never both, never neither), all buffers are
// free again, and the destination still receives from a healthy sender.
// The walk runs once with a sender that passes buffer by buffer (Pass)
// and once with one that sends batches (an Outbox).
//
//	go test -tags spry_crash -run CrashPoints ./internal/transport
func TestCrashPoints(t *testing.T) {
	points := []string{"send.transferred", "send.sent", "ring.reserved", "ring.claimed", "ring.published", "skmsg.reserved"}
	batched := []string{"outbox.added", "outbox.sent", "skmsg.reserved"}
	for _, name := range availableTransports(t) {
		for _, point := range points {
			t.Run(name+"/"+point, func(t *testing.T) { crashWalk(t, name, point, false) })
		}
		for _, point := range batched {
			t.Run(name+"/batch/"+point, func(t *testing.T) { crashWalk(t, name, point, true) })
		}
	}
}

func availableTransports(t *testing.T) []string {
	var out []string
	for _, n := range Names {
		if n == "skmsg" {
			if shared.once.Do(func() { shared.sm, shared.err = bpf.New() }); shared.err != nil {
				continue
			}
		}
		out = append(out, n)
	}
	return out
}

func crashWalk(t *testing.T, name, point string, batched bool) {
	p := testPool(t, name, 8)
	o := Options{Pool: p, Dir: t.TempDir(), UID: -1, GID: -1}
	if name == "skmsg" {
		o.BPF, o.AppID = sharedSockmap(t), shared.apps.Add(1)
	}
	f := newFabric(t, name, o)
	const dead, dst, good = 1, 2, 3
	cd := open(t, f, dead)
	rc := open(t, f, dst)
	cg := open(t, f, good)

	var mu sync.Mutex
	taken := map[uint64]int{} // buffer use (generation, index) → times taken (accepted or reclaimed)
	take := func(b, gen uint32) { mu.Lock(); taken[uint64(gen)<<32|uint64(b)]++; mu.Unlock() }

	// The receiver accepts what is really its and frees it.
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		runtime.LockOSThread()
		var ds [MaxBatch]desc.Desc
		for {
			n, err := rc.Recv(ds[:])
			if err != nil {
				return
			}
			for _, d := range ds[:n] {
				if p.Accept(d.Buf, d.Gen, d.Src, dst) {
					take(d.Buf, d.Gen)
					p.Free(d.Buf, dst)
				}
			}
		}
	}()
	// A walk that ends early (skipped, failed) must stop the receiver
	// before the pool is unmapped by an earlier cleanup: it may be inside
	// Accept when its endpoint closes.
	t.Cleanup(func() { rc.Close(); <-recvDone })

	// The doomed sender sends a stream and dies at the point's first
	// pass, after a few descriptors went through; batched, it sends
	// batches of 2 (the pool's buffers) with an Outbox.
	const n = 16
	died := make(chan struct{})
	before := crash.Hits(point)
	go func() {
		defer close(died)
		var ob Outbox
		ob.Init(p, cd)
		flush := func() {
			back, _ := ob.Flush()
			for _, d := range back {
				p.Free(d.Buf, dead)
			}
		}
		for i := range n {
			if i == 3 {
				disarm := crash.Goroutine(point, func() {})
				defer disarm()
			}
			b, ok := p.Alloc(dead)
			for wait := 0; !ok && batched && wait < 5000; wait++ {
				flush()
				time.Sleep(100 * time.Microsecond)
				b, ok = p.Alloc(dead)
			}
			if !ok {
				break
			}
			if !batched {
				if err := Pass(p, cd, desc.Desc{Dst: dst, Buf: b}); err != nil {
					p.Free(b, dead)
				}
				continue
			}
			if err := ob.Add(desc.Desc{Dst: dst, Buf: b}, dst); err != nil {
				t.Errorf("Add: %v", err)
			}
			if ob.Len() == 2 || i == n-1 {
				flush()
			}
		}
	}()
	<-died
	if crash.Hits(point) == before {
		t.Skipf("%s does not pass %s", name, point)
	}
	// The daemon: the process is gone.
	f.Remove(dead)
	p.Reclaim(dead, func(b uint32) { take(b, p.Header(b).Gen()); p.Free(b, pool.OwnerDaemon) })

	// A healthy sender still gets through.
	for i := range 2 * Depth {
		b, ok := p.Alloc(good)
		for !ok {
			time.Sleep(100 * time.Microsecond)
			b, ok = p.Alloc(good)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := Pass(p, cg, desc.Desc{Dst: dst, Buf: b})
			if err == nil {
				break
			}
			if !errors.Is(err, ErrFull) || time.Now().After(deadline) {
				t.Fatalf("send %d after the crash: %v", i, err)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.FreeBuffers() != int(p.Buffers()) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d buffers free after the crash at %s", p.FreeBuffers(), p.Buffers(), point)
		}
		time.Sleep(time.Millisecond)
	}
	rc.Close()
	<-recvDone
	mu.Lock()
	defer mu.Unlock()
	for u, k := range taken {
		if k != 1 {
			t.Errorf("buffer %d (generation %d) taken %d times", uint32(u), u>>32, k)
		}
	}
	// Every buffer use that left the free list was taken exactly once:
	// the uses counted equal the generations the buffers moved through.
	uses := 0
	for i := range p.Buffers() {
		uses += int(p.Header(i).Gen() - 1)
	}
	if uses != len(taken) {
		t.Errorf("%d buffer uses, %d taken: a use was lost or doubled", uses, len(taken))
	}
}
