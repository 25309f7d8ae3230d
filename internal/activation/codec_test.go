package activation

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fullRecord has every field set.
func fullRecord() *Record {
	at := time.Unix(1700000000, 123456789)
	return &Record{
		ID: NewID(at), App: "shop", Chain: "order", Cause: Cause{Kind: CauseMQTT, Trigger: "motion"}, State: Dead, Status: 503,
		Accepted: at, Start: at.Add(time.Millisecond), End: at.Add(2 * time.Millisecond), Next: at.Add(time.Second),
		Steps: []Step{{Function: "upper", Micros: 12.5}, {Function: "reverse", Micros: 0.25}}, Attempts: 3,
		Error: "dead after 3 attempts: status 503: busy", Key: "k-1",
		Event:   map[string]string{"type": "t", "source": "/s", "id": "1"},
		Topic:   "sensors/1/motion",
		Request: Request{Method: "POST", Path: "/order", Query: "a=1", ContentType: "text/plain", Headers: [][2]string{{"X-A", "1"}, {"X-B", ""}}, Size: 64},
		Reply:   Reply{Broker: "tcp://b:1883", Topic: "out", Correlation: []byte{0, 1, 2}, QoS: 1, Callback: "http://127.0.0.1:1/cb", CallbackStatus: -1},
		Result:  ResultInfo{Size: 100, Kept: 10, Truncated: true, ContentType: "application/json"},
	}
}

// sameRecord compares records as the API shows them (JSON: times to the
// nanosecond, whatever their location).
func sameRecord(t *testing.T, got, want *Record) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	var gm, wm map[string]any
	json.Unmarshal(g, &gm)
	json.Unmarshal(w, &wm)
	for _, k := range []string{"accepted", "start", "end", "next"} {
		for _, m := range []map[string]any{gm, wm} {
			if s, ok := m[k].(string); ok {
				tm, _ := time.Parse(time.RFC3339Nano, s)
				m[k] = tm.UnixNano()
			}
		}
	}
	if !reflect.DeepEqual(gm, wm) {
		t.Fatalf("record changed in the store:\n got %s\nwant %s", g, w)
	}
}

func TestRecordCodec(t *testing.T) {
	t.Parallel()
	for _, r := range []*Record{fullRecord(), newRec("a", "c", time.Now()), {ID: NewID(time.Now())}} {
		b := encodeRecord(nil, r)
		var got Record
		if err := decodeRecord(b, &got); err != nil {
			t.Fatal(err)
		}
		sameRecord(t, &got, r)
		if len(b) > recordSize(r) {
			t.Errorf("encoded %d bytes, estimated %d", len(b), recordSize(r))
		}
		// Cut anywhere, or with a byte more, it is refused, never a panic.
		for i := range len(b) {
			if err := decodeRecord(b[:i], new(Record)); err == nil {
				t.Fatalf("a record cut at %d of %d bytes decoded", i, len(b))
			}
		}
		if err := decodeRecord(append(b, 0), new(Record)); err == nil {
			t.Fatal("a record with a trailing byte decoded")
		}
		if appOf(b) != r.App {
			t.Fatalf("appOf = %q, want %q", appOf(b), r.App)
		}
	}
}

// A store written before the binary form (JSON records) reads the same.
func TestJSONRecordsStillRead(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := fullRecord()
	r.State = Dead
	r.ID = s.NewID(r.Accepted, r.App, r.Chain, r.Key)
	if _, err := s.Create(r, []byte("body")); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(r, []byte("res"), true); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Rewrite its record as the old store did.
	db, err := bolt.Open(dir+"/activations-"+string(rune('0'+idShard(r.ID)))+".db", 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(r)
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bRecords).Put([]byte(r.ID), js) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, got, r)
	page, _, err := s.List(Filter{Limit: 10})
	if err != nil || len(page) != 1 || page[0].App != r.App {
		t.Fatalf("List = %v, %v", page, err)
	}
	if n, err := s.Prune(func(string) Retention { return Retention{Count: 0, Age: time.Nanosecond} }, time.Now()); err != nil || n != 1 {
		t.Fatalf("Prune dropped %d (%v), want 1", n, err)
	}
}

// A create and its save applied together leave what they leave applied
// apart: the final record, the body unless it succeeded, the pending and
// dead lists as its state says, its idempotency key.
func TestCoalescedApply(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	now := time.Now()
	type tc struct {
		state   State
		owed    bool
		body    bool
		pending bool
		dead    bool
	}
	cases := []tc{
		{state: Succeeded},
		{state: Failed, body: true},
		{state: Dead, body: true, dead: true},
		{state: Queued, body: true, pending: true},
	}
	var recs []*Record
	var ops []*op
	for i, c := range cases {
		r := newRec("app", "c", now)
		r.Key = "key" + string(rune('a'+i))
		r.ID = s.NewID(now, r.App, r.Chain, r.Key)
		cr, err := newCreate(r, []byte("the body"))
		if err != nil {
			t.Fatal(err)
		}
		rr := *r
		rr.State = c.state
		sv, err := newSave(opSave, &rr, []byte("result"))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &rr)
		ops = append(ops, cr, sv)
	}
	// Settled later, in a separate application: written apart.
	r := newRec("app", "c", now)
	cr, _ := newCreate(r, []byte("apart"))
	ops = append(ops, cr)
	for i, o := range ops {
		o.seq = uint64(1000 + i)
	}
	if err := s.applyOps(ops); err != nil {
		t.Fatal(err)
	}
	for _, o := range ops[:len(ops)-1] {
		if o.kind == opCreate && !o.merged {
			t.Fatal("a create followed by its save in one application was not merged")
		}
	}
	if ops[len(ops)-1].merged {
		t.Fatal("a create without its save was merged")
	}
	for i, c := range cases {
		id := []byte(recs[i].ID)
		s.shards[idShard(recs[i].ID)].View(func(tx *bolt.Tx) error {
			var got Record
			if err := decodeRecord(tx.Bucket(bRecords).Get(id), &got); err != nil {
				t.Fatal(err)
			}
			sameRecord(t, &got, recs[i])
			if has := tx.Bucket(bBodies).Get(id) != nil; has != c.body {
				t.Errorf("%s: body kept %v, want %v", c.state, has, c.body)
			}
			if has := tx.Bucket(bPending).Get(id) != nil; has != c.pending {
				t.Errorf("%s: pending %v, want %v", c.state, has, c.pending)
			}
			if has := tx.Bucket(bDead).Get(id) != nil; has != c.dead {
				t.Errorf("%s: dead %v, want %v", c.state, has, c.dead)
			}
			if string(tx.Bucket(bResults).Get(id)) != "result" {
				t.Errorf("%s: result not kept", c.state)
			}
			if k := scopedKey("app", "c", recs[i].Key); string(tx.Bucket(bKeys).Get(k)) != recs[i].ID {
				t.Errorf("%s: idempotency key not kept", c.state)
			}
			return nil
		})
	}
	if b, err := s.Body(r.ID); err != nil || string(b) != "apart" {
		t.Fatalf("the create applied apart: body %q, %v", b, err)
	}
}
