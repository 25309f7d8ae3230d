package transport

import (
	"runtime"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
)

// Defect 1 of issue 17: a producer that dies between reserving a ring slot
// and publishing it stalled the ring for good: later descriptors were never
// delivered and, a ring's depth later, every Send said full. Now the
// consumer skips a reservation nobody claimed, and the daemon skips the
// claims of a producer it knows is dead (Remove), so the ring flows on.
func TestRingHoleOfDeadProducer(t *testing.T) {
	for _, name := range []string{"poll", "adaptive"} {
		for _, claimed := range []bool{false, true} {
			t.Run(name+map[bool]string{false: "/reserved", true: "/claimed"}[claimed], func(t *testing.T) {
				p := testPool(t, name, 4)
				f := newFabric(t, name, Options{Pool: p})
				dead := open(t, f, 1)
				good := open(t, f, 2)
				rc := open(t, f, 3)
				v, i := rc.(*ringConn).v, rc.(*ringConn).ring
				// Producer 1 reserves (and maybe claims) the next slot, then dies.
				h := v.hdr(i)
				t0 := h.tail.Load()
				pos := t0 & lowMask
				h.tail.CompareAndSwap(t0, t0+1)
				if claimed {
					v.slot(i, pos).seq.CompareAndSwap(pos, pos|1<<tagShift)
				}
				dead.Close()
				if claimed {
					f.Remove(1) // the daemon learns the process died
				}
				// A healthy producer sends more than a ring's depth.
				sent, got := 0, 0
				var ds [MaxBatch]desc.Desc
				done := make(chan int)
				go func() {
					runtime.LockOSThread()
					n := 0
					for n < 3*Depth {
						k, err := rc.Recv(ds[:])
						if err != nil {
							break
						}
						n += k
					}
					done <- n
				}()
				deadline := time.Now().Add(10 * time.Second)
				for sent < 3*Depth && time.Now().Before(deadline) {
					if err := good.Send(desc.Desc{Dst: 3, Src: 2, Buf: uint32(sent)}); err == nil {
						sent++
					} else {
						time.Sleep(50 * time.Microsecond)
					}
				}
				select {
				case got = <-done:
				case <-time.After(10 * time.Second):
					rc.Close()
					got = <-done
				}
				if sent != 3*Depth || got != sent {
					t.Fatalf("sent %d, received %d, want %d each", sent, got, 3*Depth)
				}
				if rc.(*ringConn).skipped.Load() == 0 && !claimed {
					t.Fatal("the hole was not skipped by the consumer")
				}
			})
		}
	}
}

// Defect 2 of issue 17: the sender that won the sleep→awake CAS and died
// before futex_wake left the flag saying awake: every later sender skipped
// the wake and the receiver slept forever. Now only the receiver clears
// its sleep flag, so the next sender wakes it; and the daemon kicks every
// ring when a process dies.
func TestAdaptiveSenderDiesBeforeWake(t *testing.T) {
	p := testPool(t, "adaptive", 4)
	f := newFabric(t, "adaptive", Options{Pool: p, Spin: time.Microsecond})
	a := open(t, f, 1)
	b := open(t, f, 2)
	rc := open(t, f, 3).(*ringConn)
	got := make(chan desc.Desc, 4)
	go func() {
		runtime.LockOSThread()
		var ds [4]desc.Desc
		for {
			n, err := rc.Recv(ds[:])
			if err != nil {
				close(got)
				return
			}
			for _, d := range ds[:n] {
				got <- d
			}
		}
	}()
	defer rc.Close()
	waitSleep := func() {
		for deadline := time.Now().Add(5 * time.Second); rc.v.hdr(rc.ring).sleep.Load() == 0; {
			if time.Now().After(deadline) {
				t.Fatal("the receiver never slept")
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Sender 1 publishes and dies before it wakes the receiver.
	waitSleep()
	if err := rc.v.push(rc.ring, &desc.Desc{Dst: 3, Src: 1, Buf: 1}, 1); err != nil {
		t.Fatal(err)
	}
	a.Close()
	// The next sender wakes it; both descriptors arrive.
	if err := b.Send(desc.Desc{Dst: 3, Src: 2, Buf: 2}); err != nil {
		t.Fatal(err)
	}
	for want := uint32(1); want <= 2; want++ {
		select {
		case d := <-got:
			if d.Buf != want {
				t.Fatalf("got buf %d, want %d", d.Buf, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("descriptor %d never arrived: the receiver sleeps on", want)
		}
	}
	// With no later sender, the daemon's Remove of the dead one wakes it.
	time.Sleep(10 * time.Millisecond)
	waitSleep()
	if err := rc.v.push(rc.ring, &desc.Desc{Dst: 3, Src: 1, Buf: 3}, 1); err != nil {
		t.Fatal(err)
	}
	f.Remove(1)
	select {
	case d := <-got:
		if d.Buf != 3 {
			t.Fatalf("got buf %d, want 3", d.Buf)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Remove of the dead sender did not wake the receiver")
	}
}
