package activation

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chainFunc stands in for the gateway in these tests of the manager's
// state machine (the node's tests run the real one): it answers each
// attempt with what fn returns for the body it was given.
type chainFunc struct {
	fn     func(rec *Record, body []byte) (int, string)
	calls  atomic.Int64
	refuse atomic.Bool // answer "not admitted"
}

func (c *chainFunc) Invoke(rec *Record, fill func([]byte) (int, error), done func(*Outcome)) error {
	if c.refuse.Load() {
		return errNotAdmitted
	}
	buf := make([]byte, 1024)
	n, err := fill(buf)
	if err != nil {
		return err
	}
	c.calls.Add(1)
	go func() {
		start := time.Now()
		status, out := c.fn(rec, buf[:n])
		done(&Outcome{Status: status, Body: []byte(out), ContentType: []byte("text/plain"), Start: start, End: time.Now(),
			Steps: []Step{{Function: "f", Micros: 1}}})
	}()
	return nil
}

var errNotAdmitted = &notAdmitted{}

type notAdmitted struct{}

func (*notAdmitted) Error() string { return "app is at its in-flight limit" }

func newManager(t *testing.T, s *Store, inv Invoker, onDone func(*Record, []byte), tweak func(*ChainConfig)) *Manager {
	t.Helper()
	cc := ChainConfig{App: "app", Chain: "c", Attempts: 3, MaxAge: time.Hour, Backoff: time.Millisecond,
		MaxBackoff: 4 * time.Millisecond, Queue: 100, Record: RecordFailures, ResultMax: 8}
	if tweak != nil {
		tweak(&cc)
	}
	m, err := New(Config{Store: s, Invoker: func(string) Invoker { return inv }, OnDone: onDone,
		Apps: []AppConfig{{Name: "app", Concurrency: 4}}, Chains: []ChainConfig{cc}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// finished collects terminal activations.
type finished struct {
	mu   sync.Mutex
	recs map[string]*Record
	res  map[string]string
	ch   chan string
}

func newFinished() *finished {
	return &finished{recs: map[string]*Record{}, res: map[string]string{}, ch: make(chan string, 100)}
}

func (f *finished) done(r *Record, b []byte) {
	f.mu.Lock()
	f.recs[r.ID], f.res[r.ID] = r, string(b)
	f.mu.Unlock()
	f.ch <- r.ID
}

func (f *finished) wait(t *testing.T, id string) *Record {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		f.mu.Lock()
		r := f.recs[id]
		f.mu.Unlock()
		if r != nil {
			return r
		}
		select {
		case <-f.ch:
		case <-timeout:
			t.Fatalf("activation %s did not finish", id)
		}
	}
}

func accept(t *testing.T, m *Manager, body string, key string) string {
	t.Helper()
	a, err := m.Accept(Spec{App: "app", Chain: "c", Cause: Cause{Kind: CauseAsync}, Body: []byte(body), Key: key,
		Request: Request{Method: "POST", Path: "/c"}})
	if err != nil {
		t.Fatal(err)
	}
	return a.ID
}

func TestSucceeds(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	f := newFinished()
	inv := &chainFunc{fn: func(_ *Record, b []byte) (int, string) { return 200, "echo: " + string(b) }}
	m := newManager(t, s, inv, f.done, nil)
	id := accept(t, m, "hello", "")
	r := f.wait(t, id)
	if r.State != Succeeded || r.Status != 200 || r.Attempts != 1 || len(r.Steps) != 1 {
		t.Fatalf("record %+v", r)
	}
	if f.res[id] != "echo: he" || !r.Result.Truncated || r.Result.Size != 11 || r.Result.Kept != 8 {
		t.Fatalf("result %q (%+v): want the first 8 bytes, truncated", f.res[id], r.Result)
	}
	// The stored record says the same (the write is queued before OnDone).
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := m.Get(id)
		if err == nil && got.State == Succeeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored record: %+v, %v", got, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A reply topic gets the whole result, however much of it the record
// keeps (activations.result): of a durable (MQTT QoS 1) activation and of
// an at-most-once one (QoS 0, recorded as failures only: not this one).
func TestReplyGetsTheWholeResult(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	f := newFinished()
	inv := &chainFunc{fn: func(_ *Record, b []byte) (int, string) { return 200, "echo: " + string(b) }}
	m := newManager(t, s, inv, f.done, nil)
	for _, volatile := range []bool{false, true} {
		a, err := m.Accept(Spec{App: "app", Chain: "c", Cause: Cause{Kind: CauseMQTT}, Body: []byte("hello world"),
			Request: Request{Method: "POST", Path: "/c"}, Reply: Reply{Topic: "out"}, Volatile: volatile})
		if err != nil {
			t.Fatal(err)
		}
		r := f.wait(t, a.ID)
		if r.State != Succeeded || f.res[a.ID] != "echo: hello world" {
			t.Fatalf("volatile %v: %s, reply %q: want the whole result", volatile, r.State, f.res[a.ID])
		}
		if !volatile && (r.Result.Kept != 8 || !r.Result.Truncated || r.Result.Size != 17) {
			t.Fatalf("record keeps %+v: want 8 of 17 bytes", r.Result)
		}
	}
}

func TestRetriesThenDeadThenRedrive(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	f := newFinished()
	var fixed atomic.Bool
	inv := &chainFunc{fn: func(*Record, []byte) (int, string) {
		if fixed.Load() {
			return 200, "ok"
		}
		return 502, "spry: step crashed"
	}}
	m := newManager(t, s, inv, f.done, nil)
	id := accept(t, m, "x", "")
	r := f.wait(t, id)
	if r.State != Dead || r.Attempts != 3 || r.Status != 502 || inv.calls.Load() != 3 {
		t.Fatalf("after 3 failing attempts: %+v (%d calls)", r, inv.calls.Load())
	}
	waitStored(t, m, id, Dead)
	dead, _, _ := m.List(Filter{State: Dead})
	if len(dead) != 1 || dead[0].ID != id {
		t.Fatalf("dead list: %v", dead)
	}
	fixed.Store(true)
	f.mu.Lock()
	delete(f.recs, id)
	f.mu.Unlock()
	q, skipped, err := m.Redrive([]string{id, NewID(time.Now())})
	if err != nil || len(q) != 1 || len(skipped) != 1 {
		t.Fatalf("Redrive = %v, %v, %v", q, skipped, err)
	}
	r = f.wait(t, id)
	if r.State != Succeeded || r.Attempts != 1 {
		t.Fatalf("after redrive: %+v", r)
	}
	waitStored(t, m, id, Succeeded)
	if dead, _, _ := m.List(Filter{State: Dead}); len(dead) != 0 {
		t.Fatalf("still on the dead list: %v", dead)
	}
}

func waitStored(t *testing.T, m *Manager, id string, st State) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if r, err := m.Get(id); err == nil && r.State == st {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("activation %s never stored as %s", id, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientErrorIsNotRetried(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	f := newFinished()
	inv := &chainFunc{fn: func(*Record, []byte) (int, string) { return 422, "bad input" }}
	m := newManager(t, s, inv, f.done, nil)
	r := f.wait(t, accept(t, m, "x", ""))
	if r.State != Failed || r.Attempts != 1 || r.Error != "status 422: bad input" {
		t.Fatalf("%+v", r)
	}
}

func TestNotAdmittedIsRetried(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	f := newFinished()
	inv := &chainFunc{fn: func(*Record, []byte) (int, string) { return 200, "ok" }}
	inv.refuse.Store(true)
	m := newManager(t, s, inv, f.done, func(c *ChainConfig) { c.Attempts = 50; c.Backoff = 5 * time.Millisecond })
	id := accept(t, m, "x", "")
	time.Sleep(20 * time.Millisecond)
	inv.refuse.Store(false)
	r := f.wait(t, id)
	if r.State != Succeeded || r.Attempts < 2 {
		t.Fatalf("%+v", r)
	}
}

func TestMaxAge(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	f := newFinished()
	inv := &chainFunc{fn: func(*Record, []byte) (int, string) { return 504, "late" }}
	m := newManager(t, s, inv, f.done, func(c *ChainConfig) { c.Attempts = 1000; c.MaxAge = 30 * time.Millisecond })
	r := f.wait(t, accept(t, m, "x", ""))
	if r.State != Dead || r.Attempts >= 1000 {
		t.Fatalf("%+v", r)
	}
}

func TestQueueFullAndIdempotency(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	block := make(chan struct{})
	inv := &chainFunc{fn: func(*Record, []byte) (int, string) { <-block; return 200, "" }}
	m := newManager(t, s, inv, nil, func(c *ChainConfig) { c.Queue = 5 })
	first := accept(t, m, "x", "key")
	if a, err := m.Accept(Spec{App: "app", Chain: "c", Key: "key"}); err != nil || !a.Duplicate || a.ID != first {
		t.Fatalf("same key: %+v, %v", a, err)
	}
	for range 4 {
		accept(t, m, "x", "")
	}
	if _, err := m.Accept(Spec{App: "app", Chain: "c"}); err != ErrQueueFull {
		t.Fatalf("6th of a queue of 5: %v", err)
	}
	close(block)
	if _, err := m.Accept(Spec{App: "nope", Chain: "c"}); err == nil {
		t.Fatal("an unknown chain was accepted")
	}
}

func TestRestartRunsWhatWasOwed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	hang := &chainFunc{fn: func(*Record, []byte) (int, string) { select {} }}
	m := newManager(t, s, hang, nil, nil)
	var ids []string
	for range 10 {
		ids = append(ids, accept(t, m, "x", ""))
	}
	m.Close()
	s.Close()

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := newFinished()
	ok := &chainFunc{fn: func(*Record, []byte) (int, string) { return 200, "ok" }}
	newManager(t, s, ok, f.done, nil)
	for _, id := range ids {
		if r := f.wait(t, id); r.State != Succeeded {
			t.Fatalf("%+v", r)
		}
	}
}

func TestCallback(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []http.Header
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r.Header.Clone())
		bodies = append(bodies, string(b))
		if len(got) == 1 {
			w.WriteHeader(503) // the first delivery fails: retried
		}
	}))
	defer srv.Close()
	s := openTest(t)
	inv := &chainFunc{fn: func(*Record, []byte) (int, string) { return 201, "made" }}
	m := newManager(t, s, inv, nil, nil)
	a, err := m.Accept(Spec{App: "app", Chain: "c", Body: []byte("x"), Reply: Reply{Callback: srv.URL + "/cb"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { r, _ := m.Get(a.ID); return r != nil && r.Reply.CallbackStatus == 200 })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || bodies[1] != "made" || got[1].Get(HeaderActivationID) != a.ID ||
		got[1].Get(HeaderStatus) != "201" || got[1].Get(HeaderState) != "succeeded" {
		t.Fatalf("callbacks: %v %q", got, bodies)
	}
	if p, _ := s.Pending(); len(p) != 0 {
		t.Fatalf("still owed after the callback: %v", p)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRecordSync(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	m := newManager(t, s, nil, nil, nil)
	if m.RecordsSync("app", "c", 200) || !m.RecordsSync("app", "c", 502) {
		t.Fatal("default record mode is not failures only")
	}
	now := time.Now()
	m.RecordSync("app", "c", Request{Method: "GET", Path: "/c"}, &Outcome{Status: 502, Body: []byte("boom"), Start: now, End: now})
	m.RecordSync("app", "c", Request{Method: "GET", Path: "/c"}, &Outcome{Status: 200, Start: now, End: now})
	waitFor(t, func() bool { total, _, _ := s.Count(); return total == 1 })
	recs, _, _ := m.List(Filter{})
	if len(recs) != 1 || recs[0].State != Failed || recs[0].Cause.Kind != CauseHTTP || recs[0].Error != "status 502: boom" {
		t.Fatalf("%+v", recs)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for n := 1; n < 20; n++ {
		d := backoff(time.Second, time.Minute, n)
		want := min(time.Second<<(n-1), time.Minute)
		if d < want/2 || d > want {
			t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, want/2, want)
		}
	}
}

func waitForMsg(t *testing.T, cond func() bool, msg func() string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached in 10 s: %s", msg())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
