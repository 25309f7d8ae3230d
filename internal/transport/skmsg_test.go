//go:build linux

package transport

import (
	"errors"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"golang.org/x/sys/unix"
)

// A descriptor forged by an instance of app A — written straight to its
// socket, past the endpoint table that makes Send say ErrGone — naming an
// instance of app B and claiming to come from another one of B, is refused
// by the kernel program, counted against the real sender, and never seen
// by B.
func TestSkmsgForgedCrossApp(t *testing.T) {
	sm := sharedSockmap(t)
	fa, fb := fabric(t, makeSkmsg, "a"), fabric(t, makeSkmsg, "b")
	a := open(t, fa, 1)
	b := open(t, fb, 2)
	b3 := open(t, fb, 3)
	got := receiver(b)
	before := map[uint16]uint64{}
	for _, id := range []uint16{1, 2, 3} {
		c, err := sm.Counters(id)
		if err != nil {
			t.Fatal(err)
		}
		before[id] = c.Dropped + c.Received + c.Sent
	}
	if err := a.Send(desc.Desc{Dst: 2, Src: 1}); !errors.Is(err, ErrGone) {
		t.Fatalf("Send across apps: %v, want ErrGone from the endpoint table", err)
	}
	forged := desc.Desc{Dst: 2, Src: 3, Buf: 666}.Array()
	if n, err := unix.Write(a.(*skmsgConn).s.fd, forged[:]); n != desc.Size || err != nil {
		t.Fatalf("raw write: %d %v", n, err)
	}
	select {
	case d := <-got:
		t.Fatalf("app B received forged %v", d)
	case <-time.After(100 * time.Millisecond):
	}
	ca, _ := sm.Counters(1)
	if ca.Dropped != 1 || ca.Sent != 0 {
		t.Fatalf("forger's counters %+v, want 1 dropped", ca)
	}
	for _, id := range []uint16{2, 3} {
		c, _ := sm.Counters(id)
		if c.Dropped+c.Received+c.Sent != before[id] {
			t.Fatalf("instance %d of app B counted %+v", id, c)
		}
	}
	// B's own traffic flows.
	if err := b3.Send(desc.Desc{Dst: 2, Src: 3, Buf: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d.Buf != 1 {
			t.Fatalf("got %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("own-app delivery failed")
	}
	if c, _ := sm.Counters(2); c.Received != 1 {
		t.Fatalf("receiver counters %+v, want 1 received", c)
	}
}

// The endpoint is in the sockmap when Add returns, and out of it after
// Remove.
func TestSkmsgAddRegisters(t *testing.T) {
	sm := sharedSockmap(t)
	f := fabric(t, makeSkmsg, "a")
	h, err := f.Add(7)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, ok := sm.Registered(7); !ok {
		t.Fatal("not registered when Add returned")
	}
	if len(h.Files) != 1 || len(h.Env) != 2 {
		t.Fatalf("handoff %+v", h)
	}
	if _, err := f.Add(7); err == nil {
		t.Fatal("second Add of the same id succeeded")
	}
	if err := f.Remove(7); err != nil {
		t.Fatal(err)
	}
	if _, ok := sm.Registered(7); ok {
		t.Fatal("still registered after Remove")
	}
}

// Remove of an endpoint whose receiver is blocked ends the Recv: the
// daemon closes the peer, the receiver reads end-of-file.
func TestSkmsgRemoveEndsRecv(t *testing.T) {
	f := fabric(t, makeSkmsg, "a")
	removeEndsRecv(t, f)
}

func TestSkmsgOptions(t *testing.T) {
	p := testPool(t, "skmsg", 0)
	if _, err := New("skmsg", Options{Pool: p, AppID: 1}); err == nil {
		t.Error("skmsg without a Sockmap accepted")
	}
	sm := sharedSockmap(t)
	if _, err := New("skmsg", Options{Pool: p, BPF: sm}); err == nil {
		t.Error("skmsg without an AppID accepted")
	}
	if _, err := New("skmsg", Options{BPF: sm, AppID: 1}); !errors.Is(err, errNoTable) {
		t.Errorf("skmsg without a pool: %v", err)
	}
	if _, err := New("skmsg", Options{Pool: testPool(t, "uds", 0), BPF: sm, AppID: 1}); !errors.Is(err, errNoTable) {
		t.Errorf("skmsg with a pool without endpoints: %v", err)
	}
}

// The stream reader hands out whole descriptors whatever the pieces the
// bytes come in, and carries a partial one over to the next read.
func TestStreamReaderPartial(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	s := &sockFD{fd: fds[0]}
	defer s.close()
	watchdog := time.AfterFunc(5*time.Second, s.close) // a framing bug ends the read
	defer watchdog.Stop()
	var r streamReader
	var stream []byte
	for i := range 6 {
		b := desc.Desc{Dst: 1, Buf: uint32(i)}.Array()
		stream = append(stream, b[:]...)
	}
	next := uint32(0)
	var ds [4]desc.Desc
	for _, piece := range []int{7, 9 + 16 + 5, 11 + 16, 32} { // 96 bytes; carries 5 bytes once
		if _, err := unix.Write(fds[1], stream[:piece]); err != nil {
			t.Fatal(err)
		}
		stream = stream[piece:]
		time.Sleep(time.Millisecond)
		if piece == 7 {
			continue // no whole descriptor yet: a Recv now would block
		}
		n, err := r.recv(s, ds[:], true)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds[:n] {
			if d.Buf != next {
				t.Fatalf("got %d, want %d", d.Buf, next)
			}
			next++
		}
	}
	if next != 6 {
		t.Fatalf("decoded %d of 6 descriptors (carry %d)", next, r.carry)
	}
}
