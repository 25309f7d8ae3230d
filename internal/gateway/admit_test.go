package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
)

// memBody is a body already in memory (an MQTT payload, a stored record).
type memBody struct{ b []byte }

func (m *memBody) ReadBody(dst []byte) (int, *Error) {
	if len(m.b) > len(dst) {
		return 0, ErrTooLarge
	}
	return copy(dst, m.b), nil
}

// chanReplier hands each reply to the test, which writes it "elsewhere"
// and calls Done, as an adapter that finishes off the receive thread
// would.
type chanReplier struct{ c chan Reply }

func (r *chanReplier) Reply(rep Reply) { r.c <- rep }

// An adapter other than HTTP/1.1 drives the admission path: Admit with a
// body in memory, Begin/Send with a body it pushes, Cancel, refusals, a
// client deadline; every reply comes to its Replier with its tag.
func TestAdmitAdapter(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, false)
	rep := &chanReplier{c: make(chan Reply, 4)}
	ch := r.g.Chains()[0]

	req := Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1,
		Body: &memBody{[]byte("from memory")}, Reply: rep, Tag: 7}
	if err := r.g.Admit(&req); err != nil {
		t.Fatalf("Admit: %v", err)
	}
	got := <-rep.c
	if got.Status() != 200 || string(got.Body()) != "from memory" || got.Tag() != 7 || got.Err() != nil || got.Chain() != ch {
		t.Fatalf("reply %d %q tag %d err %v", got.Status(), got.Body(), got.Tag(), got.Err())
	}
	if r.p.FreeBuffers() != 7 || r.app.Inflight() != 1 {
		t.Fatalf("before Done: %d free, %d in flight", r.p.FreeBuffers(), r.app.Inflight())
	}
	got.Done()
	r.waitFree(t, 8)

	// A body pushed in pieces; the chain named directly (no route).
	x, err := r.g.Begin(&Request{Chain: ch, Method: []byte("PUT"), Path: []byte("/mqtt/topic"), Length: -1, Reply: rep, Tag: 8})
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	n := copy(x.Body(), "pushed ")
	n += copy(x.Body()[n:], "in pieces")
	x.Send(n, []byte("text/plain"))
	got = <-rep.c
	// No step chose a content type: the reply's is not the request's.
	if string(got.Body()) != "pushed in pieces" || got.Tag() != 8 || string(got.ContentType()) != "application/octet-stream" {
		t.Fatalf("reply %q tag %d ctype %q", got.Body(), got.Tag(), got.ContentType())
	}
	if m, p, _ := got.Header().Request(); string(m) != "PUT" || string(p) != "/mqtt/topic" {
		t.Fatalf("metadata %q %q", m, p)
	}
	got.Done()

	// Cancelled before its body was complete (a reset stream).
	x, err = r.g.Begin(&Request{Chain: ch, Method: []byte("POST"), Path: []byte("/c"), Length: -1, Reply: rep})
	if err != nil {
		t.Fatal(err)
	}
	x.Cancel()
	r.waitFree(t, 8)

	// Refusals, with the messages every adapter renders alike.
	for _, tc := range []struct {
		req  Request
		want *Error
		msg  string
	}{
		{Request{Method: []byte("POST"), Path: []byte("/nope")}, ErrNoRoute, "spry: no chain serves /nope\n"},
		{Request{Method: []byte("GET"), Path: []byte("/c")}, ErrMethod, "spry: GET is not allowed on /c\n"},
		{Request{Method: []byte("POST"), Path: []byte("/c"), Length: 5000}, ErrTooLarge, "spry: request body of 5000 bytes is larger than limits.maxBody (4096 bytes) of app gwtest\n"},
		{Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Body: &memBody{make([]byte, 5000)}}, ErrTooLarge, ""},
		{Request{Method: []byte("POST"), Path: []byte(strings.Repeat("/p", 2000)), Chain: ch, Length: -1}, ErrMetaTooLarge, ""},
	} {
		tc.req.Reply = rep
		if err := r.g.Admit(&tc.req); err != tc.want {
			t.Errorf("%s %s: got %v, want %v", tc.req.Method, tc.req.Path, err, tc.want)
		} else if msg := string(tc.req.AppendMessage(nil, err)); tc.msg != "" && msg != tc.msg {
			t.Errorf("message %q, want %q", msg, tc.msg)
		}
	}
	if string(ch.Allow()) != "POST" {
		t.Errorf("Allow %q", ch.Allow())
	}
	r.waitFree(t, 8)
}

// A client's own deadline (gRPC's grpc-timeout) shortens the chain's: the
// Replier gets the gateway's 504, and the entry stays taken until the
// chain gives the buffer back.
func TestAdmitClientDeadline(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, true)
	rep := &chanReplier{c: make(chan Reply, 1)}
	req := Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Reply: rep,
		Deadline: mono.Now() + int64(50*time.Millisecond)}
	if err := r.g.Admit(&req); err != nil {
		t.Fatal(err)
	}
	got := <-rep.c
	if got.Status() != 504 || got.Err() != ErrDeadline || string(got.Body()) != "spry: chain c did not answer in time\n" {
		t.Fatalf("got %d %v %q", got.Status(), got.Err(), got.Body())
	}
	got.Done()
	if r.app.Inflight() != 1 {
		t.Fatalf("%d in flight while the step holds the buffer", r.app.Inflight())
	}
	r.reply(r.take(t))
	r.waitFree(t, 8)
}

// The admission path allocates nothing for an adapter either.
func TestAdmitZeroAllocs(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, false)
	rep := &chanReplier{c: make(chan Reply, 1)}
	body := &memBody{[]byte("zero")}
	req := Request{Method: []byte("POST"), Path: []byte("/c"), Length: -1, Body: body, Reply: rep}
	run := func() {
		req.Began = 0
		if err := r.g.Admit(&req); err != nil {
			t.Fatal(err)
		}
		got := <-rep.c
		got.Done()
	}
	for range 100 {
		run()
	}
	if a := testing.AllocsPerRun(2000, run); a != 0 {
		t.Fatalf("%v allocations per request, want 0", a)
	}
}

// A request another node handed over (Local) never goes to the endpoint
// that stands for other nodes' instances: with only that one ready it
// waits for an instance of this node, and gets the gateway's 503 at its
// deadline. The same request not Local goes there.
func TestAdmitLocal(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, false)
	rep := &chanReplier{c: make(chan Reply, 1)}
	r.app.SetRemote(instID) // the rig's one instance plays the remote endpoint
	req := Request{Chain: r.g.Chains()[0], Length: -1, Body: &memBody{[]byte("x")}, Reply: rep, Local: true,
		Deadline: mono.Now() + int64(100*time.Millisecond)}
	if err := r.g.Admit(&req); err != nil {
		t.Fatal(err)
	}
	got := <-rep.c
	if got.Status() != 503 || got.Err() != ErrNoInstance {
		t.Fatalf("local: got %d %v %q", got.Status(), got.Err(), got.Body())
	}
	got.Done()
	r.waitFree(t, 8)
	req = Request{Chain: r.g.Chains()[0], Length: -1, Body: &memBody{[]byte("y")}, Reply: rep}
	if err := r.g.Admit(&req); err != nil {
		t.Fatal(err)
	}
	if got = <-rep.c; got.Status() != 200 || string(got.Body()) != "y" {
		t.Fatalf("not local: got %d %q", got.Status(), got.Body())
	}
	got.Done()
	r.waitFree(t, 8)
}

// A continued chain's header is what its Continuation writes, not the
// request line; one that does not fit is a 431.
func TestAdmitContinue(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, false)
	rep := &chanReplier{c: make(chan Reply, 1)}
	req := Request{Chain: r.g.Chains()[0], Length: -1, Body: &memBody{[]byte("z")}, Reply: rep,
		Continue: contFunc(func(h *pool.BufHeader) bool {
			m := h.WriteMeta()
			return m.Request([]byte("PATCH"), []byte("/from/elsewhere"), nil)
		})}
	if err := r.g.Admit(&req); err != nil {
		t.Fatal(err)
	}
	got := <-rep.c
	if m, p, _ := got.Header().Request(); string(m) != "PATCH" || string(p) != "/from/elsewhere" {
		t.Fatalf("metadata %q %q", m, p)
	}
	got.Done()
	req.Continue = contFunc(func(*pool.BufHeader) bool { return false })
	if err := r.g.Admit(&req); err != ErrMetaTooLarge {
		t.Fatalf("a continuation that does not fit: %v", err)
	}
	r.waitFree(t, 8)
}

type contFunc func(h *pool.BufHeader) bool

func (f contFunc) WriteHeader(h *pool.BufHeader) bool { return f(h) }
