package activation

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newRec(app, chain string, at time.Time) *Record {
	return &Record{ID: NewID(at), App: app, Chain: chain, Cause: Cause{Kind: CauseAsync}, State: Queued, Accepted: at,
		Request: Request{Method: "POST", Path: "/" + chain}}
}

func TestIDs(t *testing.T) {
	t.Parallel()
	a := time.Unix(1700000000, 5)
	id1, id2 := NewID(a), NewID(a)
	if id1 == id2 {
		t.Fatalf("ids of one instant: %s, %s: want distinct", id1, id2)
	}
	if id3 := NewID(a.Add(time.Nanosecond)); id3 <= id2 {
		t.Fatalf("a later id %s sorts before %s", id3, id2)
	}
	if err := CheckID(id1); err != nil {
		t.Fatal(err)
	}
	if !IDTime(id1).Equal(a) {
		t.Fatalf("IDTime = %v, want %v", IDTime(id1), a)
	}
	if idAt(a) > id1 || idAt(a.Add(time.Nanosecond)) <= id1 {
		t.Fatalf("idAt bounds wrong: %s %s %s", idAt(a), id1, idAt(a.Add(time.Nanosecond)))
	}
	for _, bad := range []string{"", "xyz", strings.Repeat("g", 32), strings.Repeat("A", 32), id1 + "0"} {
		if CheckID(bad) == nil {
			t.Errorf("CheckID(%q) accepted", bad)
		}
	}
}

func TestCreateGetSave(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	r := newRec("shop", "order", time.Now())
	if ex, err := s.Create(r, []byte("body")); err != nil || ex != "" {
		t.Fatalf("Create = %q, %v", ex, err)
	}
	got, err := s.Get(r.ID)
	if err != nil || got.Chain != "order" || got.State != Queued {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if b, err := s.Body(r.ID); err != nil || string(b) != "body" {
		t.Fatalf("Body = %q, %v", b, err)
	}
	if p, _ := s.Pending(); len(p) != 1 || p[0].ID != r.ID {
		t.Fatalf("Pending = %v", p)
	}
	r.State, r.Status = Succeeded, 200
	if err := s.Save(r, []byte("result"), true); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Pending(); len(p) != 0 {
		t.Fatalf("Pending after success = %v", p)
	}
	if b, err := s.Result(r.ID); err != nil || string(b) != "result" {
		t.Fatalf("Result = %q, %v", b, err)
	}
	if _, err := s.Body(r.ID); err == nil {
		t.Fatal("the body of a succeeded activation is still kept")
	}
	if _, err := s.Get(NewID(time.Now())); err != ErrNotFound {
		t.Fatalf("Get of an unknown id: %v, want ErrNotFound", err)
	}
	// A callback not yet delivered keeps it owed.
	r.Reply.Callback = "http://127.0.0.1:1/cb"
	s.Save(r, nil, true)
	if p, _ := s.Pending(); len(p) != 1 {
		t.Fatalf("a finished activation with its callback owed is not pending: %v", p)
	}
	r.Reply.CallbackStatus = 200
	s.Save(r, nil, true)
	if p, _ := s.Pending(); len(p) != 0 {
		t.Fatalf("pending after the callback: %v", p)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	var wg sync.WaitGroup
	ids := make([]string, 16)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newRec("shop", "order", time.Now())
			r.Key = "k1"
			r.ID = s.NewID(r.Accepted, r.App, r.Chain, r.Key)
			ex, err := s.Create(r, nil)
			if err != nil {
				t.Error(err)
			}
			ids[i] = r.ID
			if ex != "" {
				ids[i] = ex
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("one key, several activations: %v", ids)
		}
	}
	if total, _, _ := s.Count(); total != 1 {
		t.Fatalf("%d records for one key", total)
	}
	// The same key on another chain is another activation.
	r := newRec("shop", "refund", time.Now())
	r.Key = "k1"
	r.ID = s.NewID(r.Accepted, r.App, r.Chain, r.Key)
	if ex, _ := s.Create(r, nil); ex != "" {
		t.Fatal("a key is shared across chains")
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	base := time.Unix(1700000000, 0)
	var all []*Record
	for i := range 30 {
		chain := []string{"a", "b"}[i%2]
		r := newRec("app", chain, base.Add(time.Duration(i)*time.Second))
		s.Create(r, nil)
		if i%3 == 0 {
			r.State = Dead
			s.Save(r, nil, true)
		}
		all = append(all, r)
	}
	recs, next, err := s.List(Filter{Limit: 10})
	if err != nil || len(recs) != 10 || recs[0].ID != all[29].ID || next != recs[9].ID {
		t.Fatalf("first page: %d, next %q, %v", len(recs), next, err)
	}
	var seen int
	for cur := ""; ; {
		page, nx, err := s.List(Filter{Limit: 7, Before: cur})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range page {
			if r.ID != all[29-seen-i].ID {
				t.Fatalf("paging out of order at %d", seen+i)
			}
		}
		seen += len(page)
		if nx == "" {
			break
		}
		cur = nx
	}
	if seen != 30 {
		t.Fatalf("paged through %d of 30", seen)
	}
	dead, _, _ := s.List(Filter{State: Dead, Limit: 100})
	if len(dead) != 10 {
		t.Fatalf("%d dead, want 10", len(dead))
	}
	b, _, _ := s.List(Filter{Chain: "b", State: Dead, Limit: 100})
	for _, r := range b {
		if r.Chain != "b" || r.State != Dead {
			t.Fatalf("filter let %+v through", r)
		}
	}
	if len(b) != 5 {
		t.Fatalf("%d dead of chain b, want 5", len(b))
	}
	win, _, _ := s.List(Filter{Since: base.Add(10 * time.Second), Until: base.Add(20 * time.Second), Limit: 100})
	if len(win) != 10 || win[0].ID != all[19].ID || win[9].ID != all[10].ID {
		t.Fatalf("time window: %d records", len(win))
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	now := time.Now()
	var recs []*Record
	for i := range 20 {
		r := newRec("app", "c", now.Add(-time.Duration(20-i)*time.Hour))
		r.Key = "key" + strconv.Itoa(i)
		r.ID = s.NewID(r.Accepted, r.App, r.Chain, r.Key)
		s.Create(r, []byte("x"))
		if i != 0 { // the oldest stays pending
			r.State = Succeeded
			s.Save(r, []byte("y"), true)
		}
		recs = append(recs, r)
	}
	n, err := s.Prune(func(string) Retention { return Retention{Age: 10*time.Hour + time.Minute} }, now)
	if err != nil || n != 9 {
		t.Fatalf("Prune by age dropped %d (%v), want 9", n, err)
	}
	if _, err := s.Get(recs[0].ID); err != nil {
		t.Fatal("a pending activation was pruned")
	}
	if _, err := s.Get(recs[5].ID); err != ErrNotFound {
		t.Fatal("an old activation was kept")
	}
	// Its idempotency key is free again.
	r := newRec("app", "c", now)
	r.Key = "key5"
	r.ID = s.NewID(r.Accepted, r.App, r.Chain, r.Key)
	if ex, _ := s.Create(r, nil); ex != "" {
		t.Fatal("a pruned activation's key still answers")
	}
	n, err = s.Prune(func(string) Retention { return Retention{Count: 4} }, now)
	if err != nil || n != 6 {
		t.Fatalf("Prune by count dropped %d (%v), want 6", n, err)
	}
	if total, pending, _ := s.Count(); total != 6 || pending != 2 {
		t.Fatalf("kept %d (%d pending), want 6 (2)", total, pending)
	}
	// Bounds are per app.
	for i := range 5 {
		r := newRec("other", "c", now.Add(-time.Duration(i)*time.Minute))
		s.Create(r, nil)
		r.State = Failed
		s.Save(r, nil, true)
	}
	n, _ = s.Prune(func(app string) Retention {
		if app == "other" {
			return Retention{Count: 2}
		}
		return Retention{}
	}, now)
	if total, _, _ := s.Count(); n != 3 || total != 8 {
		t.Fatalf("per-app prune dropped %d, kept %d; want 3, 8", n, total)
	}
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if _, err := s.Create(newRec("a", "c", time.Now()), make([]byte, 100)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	t.Logf("%d writes in %d commits (%.1f a commit, %.2f ms each)", st.Writes, st.Commits, st.Batch, st.FlushMs)
	if st.Writes != 640 || st.Commits >= st.Writes {
		t.Fatalf("%d writes in %d commits: not batched", st.Writes, st.Commits)
	}
}

// Writes nobody waits for (an outcome, an attempt's start) are not
// flushed on their own: the next flush someone waits for carries them (a
// read's barrier here), or Close; and they are in the log until then.
func TestUnwaitedWritesRideTheNextFlush(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	s.lazyFlush = time.Hour // no timer: only a flush that someone waits for
	r := newRec("a", "c", time.Now())
	if _, err := s.Create(r, []byte("body")); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	r.State, r.Status = Succeeded, 200
	for range 50 {
		if err := s.Save(r, []byte("result"), false); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); s.Stats().Writes < before.Writes+50; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the writer took %d of 50 writes in 10 s", s.Stats().Writes-before.Writes)
		}
	}
	if c := s.Stats().Commits; c != before.Commits {
		t.Fatalf("%d flushes for writes nobody waits for: want none yet", c-before.Commits)
	}
	got, err := s.Get(r.ID) // its barrier flushes them and waits for their application
	if err != nil || got.State != Succeeded {
		t.Fatalf("Get after unwaited saves = %+v, %v", got, err)
	}
	if c := s.Stats().Commits; c != before.Commits+1 {
		t.Fatalf("%d flushes: want the read's one", c-before.Commits)
	}
	r.Status = 201
	if err := s.Save(r, nil, false); err != nil {
		t.Fatal(err)
	}
	s.Close() // flushes what it holds
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(r.ID); err != nil || got.Status != 201 {
		t.Fatalf("after Close and Open: %+v, %v: want the last unwaited save", got, err)
	}
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "in use by another spry node") {
		t.Fatalf("a second Open of one directory: %v", err)
	}
	s.Close()
	if _, err := s.Create(newRec("a", "c", time.Now()), nil); err != ErrClosed {
		t.Fatalf("Create after Close: %v", err)
	}
}

// The crash test: a child process writes batches as fast as it can and
// prints every id whose Create returned (acknowledged: the caller would
// have answered 202); the parent kills it with SIGKILL at a random moment,
// reopens the store, and checks every acknowledged activation is there
// with its body, and the file is consistent. Three rounds on one file.
const crashEnv = "SPRY_ACTIVATION_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

func crashChild(dir string) {
	crashTuning()
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	for g := range 16 {
		go func() {
			for i := 0; ; i++ {
				r := newRec("a", "c", time.Now())
				body := bytes.Repeat([]byte{byte(g), byte(i)}, 200+rand.IntN(2000))
				if _, err := s.Create(r, body); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				if i%3 == 0 { // some finish, in the same stream of batches
					r.State, r.Status = Succeeded, 200
					s.Save(r, body[:10], false)
				}
				mu.Lock()
				fmt.Fprintf(out, "%s %d %d %d\n", r.ID, g, i, len(body))
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	select {}
}

func TestKillMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns and kills a writer process")
	}
	t.Parallel()
	dir := t.TempDir()
	all := map[string]acked{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashEnv+"_SEGMENT=262144")
		if round == 0 {
			// Nothing applied to the bbolt files before the kill: all
			// that was acknowledged comes back from the log alone.
			cmd.Env = append(cmd.Env, crashEnv+"_APPLY_MS=3600000")
		}
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1<<16)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Let it get going, then kill it while it is committing.
		deadline := time.After(5 * time.Second)
		want := 200 + rand.IntN(800)
		got := 0
	wait:
		for got < want {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("the writer exited on its own")
				}
				record(t, all, l)
				got++
			case <-deadline:
				break wait
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for l := range lines {
			record(t, all, l)
		}
		cmd.Wait()
		if got == 0 {
			t.Fatalf("round %d: the writer acknowledged nothing in 5 s", round)
		}

		s, err := Open(dir)
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		missing := 0
		for id, a := range all {
			r, err := s.Get(id)
			if err != nil {
				missing++
				continue
			}
			if r.State != Queued && r.State != Succeeded {
				t.Errorf("%s: state %s", id, r.State)
			}
			if r.State == Queued {
				b, err := s.Body(id)
				if err != nil || len(b) != a.n || b[0] != byte(a.g) || b[1] != byte(a.i) {
					t.Errorf("%s: body of %d bytes (%v), want %d", id, len(b), err, a.n)
				}
			}
		}
		if missing > 0 {
			t.Fatalf("round %d: %d of %d acknowledged activations lost", round, missing, len(all))
		}
		pend, err := s.Pending()
		if err != nil {
			t.Fatalf("round %d: pending list unreadable: %v", round, err)
		}
		total, _, _ := s.Count()
		replayed := s.Stats().Replayed
		t.Logf("round %d: %d acknowledged, all there; store holds %d (%d pending); %d log records replayed", round, len(all), total, len(pend), replayed)
		if round == 0 && replayed == 0 {
			t.Fatalf("round 0: nothing replayed from the log, though the writer applied nothing")
		}
		s.Close()
	}
}

// acked is an acknowledged activation: the writer goroutine, its
// sequence number and the body's length.
type acked struct{ g, i, n int }

func record(t *testing.T, all map[string]acked, l string) {
	f := strings.Fields(l)
	if len(f) != 4 {
		t.Fatalf("bad line %q", l)
	}
	g, _ := strconv.Atoi(f[1])
	i, _ := strconv.Atoi(f[2])
	n, _ := strconv.Atoi(f[3])
	all[f[0]] = acked{g, i, n}
}

// An attempt's start is noted apart; after a crash it counts.
func TestStartedCounts(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	r := newRec("a", "c", time.Now())
	if _, err := s.Create(r, []byte("b")); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkStarted(r.ID, 2); err != nil {
		t.Fatal(err)
	}
	var p []*Record
	var err error
	waitForMsg(t, func() bool {
		p, err = s.Pending()
		return len(p) == 1 && p[0].State == Running && p[0].Attempts == 2
	}, func() string {
		var started []string
		for _, db := range s.shards {
			db.View(func(tx *bolt.Tx) error {
				return tx.Bucket(bStarted).ForEach(func(k, v []byte) error { started = append(started, fmt.Sprintf("%s=%v", k, v)); return nil })
			})
		}
		return fmt.Sprintf("pending %+v (%v); store %v; started %v; id %s", *p[0], err, s.failure(), started, r.ID)
	})
	r.State, r.Attempts = Queued, 2
	s.Save(r, nil, true)
	if p, _ := s.Pending(); len(p) != 1 || p[0].State != Queued {
		t.Fatalf("the mark outlived the attempt's outcome: %+v", p[0])
	}
}

// A create and its attempt's start applied in one transaction: the start
// sees the activation in the pending list (bbolt reads a nil value put in
// the same transaction as no key).
func TestListMembershipInOneTransaction(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	r := newRec("a", "c", time.Now())
	c, err := newCreate(r, []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	st := &op{kind: opStarted, id: []byte(r.ID), n: 3}
	if err := st.seal(); err != nil {
		t.Fatal(err)
	}
	err = s.shards[c.shard].Update(func(tx *bolt.Tx) error {
		return errors.Join(c.apply(tx), st.apply(tx))
	})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := s.Pending(); err != nil || len(p) != 1 || p[0].State != Running || p[0].Attempts != 3 {
		t.Fatalf("pending after create+start in one transaction: %v %v", p, err)
	}
}
