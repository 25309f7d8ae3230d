package transport

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
)

// Senders killed at random instructions while they send as fast as they
// can: real processes and kill -9, no crash points, so the same test runs
// against the transports before issue 17. Whatever a killed sender left
// behind, a healthy sender's descriptors all arrive afterwards. Before the
// fix, on poll and adaptive: a sender killed between reserving a ring slot
// and publishing it left a hole the receiver waited at for good (defect 1);
// a kill lands in that window only now and then, so TestReservedAndDied
// makes that case certain.
func TestKilledSenders(t *testing.T) {
	for _, m := range makers() {
		t.Run(m.name, func(t *testing.T) { testKilledSenders(t, m.mk) })
	}
}

func testKilledSenders(t *testing.T, mk fabricMaker) {
	const kills, first, healthy = 30, 10, 2
	f, p := mk(t, "killed", 2*kills)
	rx := open(t, f, 1)
	var seen [kills]atomic.Int64 // descriptors from each killed sender
	var fromHealthy atomic.Int64
	go func() {
		runtime.LockOSThread()
		var ds [MaxBatch]desc.Desc
		for {
			n, err := rx.Recv(ds[:])
			if err != nil {
				return
			}
			for _, d := range ds[:n] {
				switch k := int(d.Src) - first; {
				case d.Src == healthy:
					fromHealthy.Add(1)
				case k >= 0 && k < kills:
					seen[k].Add(1)
				}
			}
		}
	}()
	for k := range kills {
		id := uint16(first + k)
		h, err := f.Add(id)
		if err != nil {
			t.Fatal(err)
		}
		cmd, err := startChild(p, h, id, "1,0,1000000000") // send to 1 until killed
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		// Kill it mid-stride: while its descriptors stream in, before
		// the ring (or queue) could fill and make it wait.
		at := int64(1 + rand.IntN(500))
		for deadline := time.Now().Add(10 * time.Second); seen[k].Load() < at && time.Now().Before(deadline); {
			runtime.Gosched()
		}
		cmd.Process.Kill()
		cmd.Wait()
		if seen[k].Load() == 0 {
			t.Fatalf("sender %d never got a descriptor through", id)
		}
		if err := f.Remove(id); err != nil { // as the daemon does once it is gone
			t.Fatal(err)
		}
	}
	tx := open(t, f, healthy)
	const n = 2000
	for i := range n {
		if err := sendRetry(tx, desc.Desc{Dst: 1, Src: healthy, Buf: uint32(i)}); err != nil {
			t.Fatalf("healthy send %d: %v", i, err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); fromHealthy.Load() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d descriptors from a healthy sender arrived after %d senders were killed mid-send", fromHealthy.Load(), n, kills)
		}
		time.Sleep(time.Millisecond)
	}
}

// A process of the app that reserved a slot in a ring and died before it
// wrote it (defect 1 made certain: the child reserves the slot as push
// does, by a compare-and-swap of the ring's tail word, and exits). The
// descriptors sent after it all arrive. Before the fix: none did; the
// receiver waited at the hole for good, and once the ring had gone round
// every send said full.
func TestReservedAndDied(t *testing.T) {
	for _, m := range makers() {
		if m.name != "poll" && m.name != "adaptive" {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			f, p := m.mk(t, "reserved", 0)
			rx := open(t, f, 1)
			got := receiver(rx)
			runChild(t, p, "reserve:1")
			tx := open(t, f, 2)
			const n = 100
			for i := range n {
				if err := sendRetry(tx, desc.Desc{Dst: 1, Src: 2, Buf: uint32(i)}); err != nil {
					t.Fatalf("send %d after the hole: %v", i, err)
				}
			}
			timeout := time.After(5 * time.Second)
			for i := range n {
				select {
				case <-got:
				case <-timeout:
					t.Fatalf("%d of %d descriptors sent after the hole arrived", i, n)
				}
			}
		})
	}
}

// A sender that published its descriptor, found the adaptive receiver
// asleep and died before its futex_wake (defect 2: the child does what a
// sender does on the ring's header up to that call, and exits). The
// descriptors sent after it wake the receiver and all arrive. Before the
// fix, the sender's step was to swap the sleep flag from 1 to 0 first: a
// sender that died there left a flag that told every later sender the
// receiver was awake, and it slept for good.
func TestWakerDied(t *testing.T) {
	f, p := makeRing("adaptive", time.Microsecond)(t, "waker", 0)
	rx := open(t, f, 1)
	got := receiver(rx)
	for deadline := time.Now().Add(5 * time.Second); rx.(*ringConn).sleeps.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the receiver never slept")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // in futex_wait by now
	runChild(t, p, "wake:1")
	tx := open(t, f, 2)
	const n = 10
	for i := range n {
		if err := sendRetry(tx, desc.Desc{Dst: 1, Src: 2, Buf: uint32(i)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	timeout := time.After(5 * time.Second)
	for i := range n {
		select {
		case <-got:
		case <-timeout:
			t.Fatalf("%d of %d descriptors sent after the waker died arrived", i, n)
		}
	}
}

// runChild runs the test binary as a process of the app that does what
// rogueEnv's value says (see rogue) with the pool at fd 3, and waits for
// it.
func runChild(t *testing.T, p *pool.Pool, what string) {
	t.Helper()
	pf, err := dupFile(p.Fd(), "pool")
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.ExtraFiles = []*os.File{pf}
	cmd.Env = append(os.Environ(), rogueEnv+"="+what)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child %s: %v\n%s", what, err, out)
	}
}

// rogueEnv makes the test binary a process of the app that does one step
// of a sender's protocol on the ring of an endpoint and dies:
// "reserve:ID" reserves a slot (TestReservedAndDied), "wake:ID" does what
// precedes a sender's futex_wake (TestWakerDied).
const rogueEnv = "SPRY_TRANSPORT_TEST_ROGUE"

func init() {
	if v := os.Getenv(rogueEnv); v != "" {
		os.Exit(rogue(v))
	}
}

func rogue(v string) int {
	what, ids, _ := strings.Cut(v, ":")
	id, _ := strconv.Atoi(ids)
	p, err := pool.Attach(3)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for e := range p.Layout().Endpoints {
		// The entry's first word: owner << 48 | the producers' position.
		ring := p.Ring(e)
		tail := (*atomic.Uint64)(unsafe.Pointer(&ring[0]))
		t := tail.Load()
		if int(t>>48) != id {
			continue
		}
		switch what {
		case "reserve":
			if !tail.CompareAndSwap(t, t+1) {
				return 3
			}
		case "wake":
			(*atomic.Uint32)(unsafe.Pointer(&ring[132])).Add(1) // the event count
		}
		return 0 // dies here
	}
	fmt.Fprintln(os.Stderr, "no ring of endpoint", id)
	return 2
}
