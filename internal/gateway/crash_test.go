package gateway

import (
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
)

// Defect 3 of issue 17: a step handed a request past its deadline gives the
// buffer back unchanged, and that hand-back could win the completion CAS
// before the deadline timer: the client got 200 with its own body. Here the
// reply comes back after the deadline with the timer held off; the client
// must still get 504.
func TestLateReplyIs504(t *testing.T) {
	r := newRig(t, 8, 4, 50*time.Millisecond, true)
	rep := &chanReplier{c: make(chan Reply, 1)}
	req := Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Body: &memBody{[]byte("client's own body")}, Reply: rep}
	if err := r.g.Admit(&req); err != nil {
		t.Fatal(err)
	}
	d := r.take(t)
	idx := uint32(r.p.Header(d.Buf).ReqID() & idMask)
	r.app.pend[idx].timer.Stop() // the timer is late (a busy machine)
	time.Sleep(80 * time.Millisecond)
	r.reply(d) // the step hands the buffer back past the deadline
	got := <-rep.c
	if got.Status() != 504 || got.Err() != ErrDeadline || string(got.Body()) != "spry: chain c did not answer in time\n" {
		t.Fatalf("late reply answered %d %q, want 504", got.Status(), got.Body())
	}
	got.Done()
	r.waitFree(t, 8)
	if r.app.Stats().Timeouts.Load() != 1 {
		t.Fatalf("timeouts = %d", r.app.Stats().Timeouts.Load())
	}
}

// Defect 7 of issue 17, through the reply loop: a forged descriptor naming
// a buffer the gateway is still filling, and a duplicate of a real reply,
// are dropped unread; the requests finish normally and every buffer comes
// back once.
func TestForgedRepliesDropped(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, true)
	rep := &chanReplier{c: make(chan Reply, 1)}
	ch := r.g.Chains()[0]
	x, err := r.g.Begin(&Request{Chain: ch, Method: []byte("POST"), Path: []byte("/c"), Length: -1, Reply: rep})
	if err != nil {
		t.Fatal(err)
	}
	// The gateway is filling x's buffer: an instance forges its reply.
	b := x.buf
	h := r.p.Header(b)
	forged := desc.Desc{Dst: gwID, Src: instID, Buf: b, Gen: h.Gen(), Flags: desc.FlagReply}
	r.inst.Send(forged)
	n := copy(x.Body(), "filling")
	waitFor(t, func() bool { return r.app.Stats().Forged.Load() == 1 })
	x.Send(n, nil)
	d := r.take(t)
	r.reply(d)
	got := <-rep.c
	// The genuine reply is being written: a duplicate arrives meanwhile.
	dup := desc.Desc{Dst: gwID, Src: instID, Buf: d.Buf, Gen: h.Gen(), Flags: desc.FlagReply}
	r.inst.Send(dup)
	waitFor(t, func() bool { return r.app.Stats().Forged.Load() == 2 })
	if string(got.Body()) != "filling" || got.Status() != 200 {
		t.Fatalf("reply %d %q", got.Status(), got.Body())
	}
	got.Done()
	r.waitFree(t, 8)
	if s := r.app.Stats().Stale.Load(); s != 0 {
		t.Fatalf("%d buffers freed as stale", s)
	}
}

// Defect 8 of issue 17: background work (a request waiting for an
// instance) outlived the pool at shutdown and faulted in Pick. Close ends
// it first: the request is answered 503 and nothing touches the pool after.
func TestCloseEndsBackgroundWork(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, true)
	r.p.SetSlotState(0, pool.SlotDraining) // no instance: the request waits in App.await
	rep := &chanReplier{c: make(chan Reply, 1)}
	req := Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Body: &memBody{[]byte("x")}, Reply: rep}
	if err := r.g.Admit(&req); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.app.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the waiting request")
	}
	got := <-rep.c
	if got.Status() != 503 {
		t.Fatalf("the waiting request got %d", got.Status())
	}
	got.Done()
	r.waitFree(t, 8)
}

// The free-list repair runs only with nothing in flight and no admission.
func TestQuiesce(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, true)
	rep := &chanReplier{c: make(chan Reply, 1)}
	req := Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Body: &memBody{[]byte("x")}, Reply: rep}
	if err := r.g.Admit(&req); err != nil {
		t.Fatal(err)
	}
	if r.app.Quiesce(func() { t.Error("ran with a request in flight") }) {
		t.Fatal("Quiesce with a request in flight")
	}
	r.reply(r.take(t))
	got := <-rep.c
	got.Done()
	ran := false
	if !r.app.Quiesce(func() { ran = true }) || !ran {
		t.Fatal("Quiesce refused an idle app")
	}
	if err := r.g.Admit(&req); err != nil {
		t.Fatalf("admission after Quiesce: %v", err)
	}
	r.reply(r.take(t))
	got = <-rep.c
	got.Done()
	r.waitFree(t, 8)
}

// A request that comes while the repair holds the table (Quiesce) waits for
// the repair to end and is served: the app is idle then, not overloaded
// (it was refused 429 after 10 ms, so at load a repair descheduled for a
// moment refused requests). Its deadline still bounds the wait.
func TestAdmitWaitsForQuiesce(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, true)
	admit := func(deadline int64) (*chanReplier, <-chan *Error) {
		rep := &chanReplier{c: make(chan Reply, 1)}
		req := Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Body: &memBody{[]byte("x")}, Reply: rep, Deadline: deadline}
		done := make(chan *Error, 1)
		go func() { done <- r.g.Admit(&req) }()
		return rep, done
	}
	var rep *chanReplier
	var admitted, late <-chan *Error
	if !r.app.Quiesce(func() {
		// Both wait for the repair: one with time to spare, one whose
		// deadline comes first.
		rep, admitted = admit(0)
		_, late = admit(mono.Now() + int64(20*time.Millisecond))
		if err := <-late; err != ErrInflight {
			t.Errorf("a request whose deadline passed during the repair: %v, want 429", err)
		}
		select {
		case err := <-admitted:
			t.Fatalf("admitted during the repair: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}) {
		t.Fatal("Quiesce refused an idle app")
	}
	if err := <-admitted; err != nil {
		t.Fatalf("the request that waited for the repair: %v", err)
	}
	r.reply(r.take(t))
	got := <-rep.c
	if got.Status() != 200 {
		t.Errorf("answered %d", got.Status())
	}
	got.Done()
	r.waitFree(t, 8)
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
