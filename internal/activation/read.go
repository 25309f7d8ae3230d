package activation

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Reads. Each sees the writes submitted before it (Store.barrier), but a
// request body, which comes from memory until its create is applied.

func (s *Store) of(id string) *bolt.DB { return s.shards[idShard(id)] }

// Get returns activation id.
func (s *Store) Get(id string) (*Record, error) {
	if CheckID(id) != nil {
		return nil, ErrNotFound
	}
	s.barrier()
	var rec *Record
	err := s.of(id).View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bRecords).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		rec = new(Record)
		return decodeRecord(v, rec)
	})
	return rec, err
}

// Body returns a copy of activation id's request body.
func (s *Store) Body(id string) ([]byte, error) {
	var out []byte
	err := s.ReadBody(id, func(b []byte) { out = bytes.Clone(b) })
	return out, err
}

// ReadBody calls fn with activation id's request body, a view valid only
// during the call (copy it into a pool buffer there).
func (s *Store) ReadBody(id string, fn func([]byte)) error {
	if CheckID(id) != nil {
		return ErrNotFound
	}
	s.memMu.Lock()
	b, ok := s.bodies[id]
	s.memMu.Unlock()
	if ok {
		// Logged, not yet applied: the op's own bytes (never changed).
		fn(b)
		return nil
	}
	// Not in memory: applied (the applier commits before it forgets a
	// body), or never logged.
	return s.of(id).View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bBodies).Get([]byte(id))
		if v == nil {
			if tx.Bucket(bRecords).Get([]byte(id)) == nil {
				return ErrNotFound
			}
			return fmt.Errorf("activation %s: its request body is no longer kept", id)
		}
		fn(v)
		return nil
	})
}

// Result returns a copy of activation id's kept result (nil when none).
func (s *Store) Result(id string) ([]byte, error) {
	if CheckID(id) != nil {
		return nil, ErrNotFound
	}
	s.barrier()
	var out []byte
	err := s.of(id).View(func(tx *bolt.Tx) error {
		if tx.Bucket(bRecords).Get([]byte(id)) == nil {
			return ErrNotFound
		}
		out = bytes.Clone(tx.Bucket(bResults).Get([]byte(id)))
		return nil
	})
	return out, err
}

// Pending returns every activation owed something (queued or running,
// or finished with its callback not delivered), oldest first: what a node
// owes after a restart.
func (s *Store) Pending() ([]*Record, error) {
	s.barrier()
	var out []*Record
	for _, db := range s.shards {
		err := db.View(func(tx *bolt.Tx) error {
			recs := tx.Bucket(bRecords)
			started := tx.Bucket(bStarted)
			return tx.Bucket(bPending).ForEach(func(k, _ []byte) error {
				v := recs.Get(k)
				if v == nil {
					return nil
				}
				r := new(Record)
				if err := decodeRecord(v, r); err != nil {
					return fmt.Errorf("activation %s: %w", k, err)
				}
				if a := started.Get(k); len(a) == 1 && !r.State.Terminal() {
					// An attempt was running when the node stopped.
					r.State, r.Attempts = Running, max(r.Attempts, int(a[0]))
				}
				out = append(out, r)
				return nil
			})
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b *Record) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Filter selects activations for List.
type Filter struct {
	App, Chain string
	State      State     // "" for any
	Since      time.Time // accepted at or after (zero: any)
	Until      time.Time // accepted before (zero: any)
	Before     string    // page cursor: only ids before this one
	Limit      int       // at most this many (default 50, at most 1000)
}

// MaxList bounds one page of List.
const MaxList = 1000

// List returns activations matching f, newest first, and the cursor of
// the next page ("" when this is the last): each shard's page, merged.
func (s *Store) List(f Filter) ([]*Record, string, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, MaxList)
	s.barrier()
	var all []*Record
	more := false
	for _, db := range s.shards {
		recs, next, err := listShard(db, f)
		if err != nil {
			return nil, "", err
		}
		all = append(all, recs...)
		more = more || next != ""
	}
	slices.SortFunc(all, func(a, b *Record) int { return cmp.Compare(b.ID, a.ID) })
	if len(all) > f.Limit {
		all, more = all[:f.Limit], true
	}
	next := ""
	if more && len(all) > 0 {
		next = all[len(all)-1].ID
	}
	return all, next, nil
}

// listShard is List over one bbolt file.
func listShard(db *bolt.DB, f Filter) ([]*Record, string, error) {
	var out []*Record
	next := ""
	err := db.View(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bRecords)
		idx := recs
		switch f.State {
		case Dead:
			idx = tx.Bucket(bDead)
		case Queued, Running:
			idx = tx.Bucket(bPending)
		}
		c := idx.Cursor()
		var k []byte
		upper := f.Before
		if !f.Until.IsZero() {
			if u := idAt(f.Until); upper == "" || u < upper {
				upper = u
			}
		}
		if upper == "" {
			k, _ = c.Last()
		} else {
			k, _ = c.Seek([]byte(upper))
			if k == nil {
				k, _ = c.Last()
			}
			for k != nil && string(k) >= upper {
				k, _ = c.Prev()
			}
		}
		lower := ""
		if !f.Since.IsZero() {
			lower = idAt(f.Since)
		}
		for ; k != nil; k, _ = c.Prev() {
			if string(k) < lower {
				break
			}
			v := recs.Get(k)
			if v == nil {
				continue
			}
			r := new(Record)
			if err := decodeRecord(v, r); err != nil {
				return fmt.Errorf("activation %s: %w", k, err)
			}
			if f.App != "" && r.App != f.App || f.Chain != "" && r.Chain != f.Chain || f.State != "" && r.State != f.State {
				continue
			}
			if len(out) == f.Limit {
				next = out[len(out)-1].ID
				return nil
			}
			out = append(out, r)
		}
		return nil
	})
	return out, next, err
}

// Retention bounds what the store keeps of an app's finished activations.
type Retention struct {
	Age   time.Duration // drop finished activations accepted longer ago (0: no age bound)
	Count int           // keep at most this many finished activations (0: no count bound)
}

// kept is a finished activation: its id and app.
type kept struct {
	id, app string
	shard   int
}

// finished lists every finished activation (owed nothing), oldest first,
// with its app.
func (s *Store) finished() ([]kept, error) {
	s.barrier()
	var out []kept
	for i, db := range s.shards {
		err := db.View(func(tx *bolt.Tx) error {
			pending := tx.Bucket(bPending)
			c := tx.Bucket(bRecords).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if pending.Get(k) == nil {
					out = append(out, kept{id: string(k), app: appOf(v), shard: i})
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b kept) int { return cmp.Compare(a.id, b.id) })
	return out, nil
}

// Prune drops finished activations past their app's retention bounds
// (ret: the bounds of an app; zero bounds keep everything), oldest first
// across the shards, with their bodies, results and idempotency keys;
// activations still owed something are kept whatever their age. It
// returns how many it dropped.
func (s *Store) Prune(ret func(app string) Retention, now time.Time) (int, error) {
	all, err := s.finished()
	if err != nil {
		return 0, err
	}
	count := map[string]int{}
	for _, k := range all {
		count[k.app]++
	}
	bounds := map[string]Retention{}
	for app := range count {
		bounds[app] = ret(app)
	}
	var victims [Shards][]string
	for _, k := range all {
		r := bounds[k.app]
		old := r.Age > 0 && k.id < idAt(now.Add(-r.Age))
		over := r.Count > 0 && count[k.app] > r.Count
		if old || over {
			victims[k.shard] = append(victims[k.shard], k.id)
			count[k.app]--
		}
	}
	total := 0
	for i, ids := range victims {
		for len(ids) > 0 {
			n := min(len(ids), 1000)
			o := &op{kind: opDrop, shard: i, ids: ids[:n]}
			ids = ids[n:]
			if err := s.submit(o, waitDone); err != nil {
				return total, err
			}
			total += o.dropped
		}
	}
	return total, nil
}

// appOf reads the app of a stored record without decoding all of it (the
// binary form, codec.go: version, id, app; or the JSON of older stores,
// {"id":"<32 hex>","app":"<name>",…, whose app names need no escaping).
func appOf(v []byte) string {
	if len(v) > 0 && v[0] == recordV1 {
		d := decoder{b: v[1:]}
		d.bytes()
		return d.str()
	}
	const pre = `{"id":"` + "01234567890123456789012345678901" + `","app":"`
	if len(v) < len(pre) {
		return ""
	}
	rest := v[len(pre):]
	if i := bytes.IndexByte(rest, '"'); i >= 0 {
		return string(rest[:i])
	}
	return ""
}

// Count returns how many activations the store keeps, and how many of
// them are pending and dead.
func (s *Store) Count() (total, pending, dead int) {
	s.barrier()
	for _, db := range s.shards {
		db.View(func(tx *bolt.Tx) error {
			total += tx.Bucket(bRecords).Stats().KeyN
			pending += tx.Bucket(bPending).Stats().KeyN
			dead += tx.Bucket(bDead).Stats().KeyN
			return nil
		})
	}
	return
}
