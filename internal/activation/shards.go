package activation

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Shards is how many files the store spreads activations over. Each is a
// bbolt file with its own writer and group commit, so Shards commits (and
// their disk flushes, which the file system journals together) run at
// once: the accept path's throughput is Shards batches per flush time, not
// one. An activation lives in one shard, named in its id; an idempotency
// key and its activation live in the key's shard, so the check and the
// insert are one transaction.
const Shards = 4

// Store keeps activation records in Shards crash-safe files under the
// data directory.
type Store struct {
	dir    string
	shards [Shards]*shard
}

// Open opens (or creates) the store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("activation: data directory: %w", err)
	}
	s := &Store{dir: dir}
	for i := range Shards {
		sh, err := openShard(filepath.Join(dir, fmt.Sprintf("activations-%d.db", i)))
		if err != nil {
			s.Close()
			return nil, err
		}
		s.shards[i] = sh
	}
	return s, nil
}

// Path returns the store's directory.
func (s *Store) Path() string { return s.dir }

// Close finishes the writes already submitted and closes the files.
func (s *Store) Close() error {
	var err error
	for _, sh := range s.shards {
		if sh != nil {
			if e := sh.Close(); e != nil && err == nil {
				err = e
			}
		}
	}
	return err
}

func (s *Store) of(id string) *shard { return s.shards[idShard(id)] }

// keyShard is the shard of an idempotency key.
func keyShard(app, chain, key string) byte {
	h := fnv.New32a()
	h.Write(scopedKey(app, chain, key))
	return byte(h.Sum32() % Shards)
}

// NewID returns a fresh id for an activation of app/chain accepted at t:
// with an idempotency key, in the key's shard.
func (s *Store) NewID(t time.Time, app, chain, key string) string {
	if key == "" {
		return NewID(t)
	}
	return newID(t, keyShard(app, chain, key), idSeq.Add(1))
}

// Create stores a new activation and its body durably (see shard.Create).
// Its id must come from NewID with the same key.
func (s *Store) Create(rec *Record, body []byte) (existing string, err error) {
	if rec.Key != "" && idShard(rec.ID) != int(keyShard(rec.App, rec.Chain, rec.Key)) {
		return "", fmt.Errorf("activation: id %s is not in the shard of its idempotency key (use Store.NewID)", rec.ID)
	}
	return s.of(rec.ID).Create(rec, body)
}

// Save writes rec's new state (see shard.Save).
func (s *Store) Save(rec *Record, result []byte, wait bool) error {
	return s.of(rec.ID).Save(rec, result, wait)
}

// MarkStarted notes that attempt n of activation id started.
func (s *Store) MarkStarted(id string, n int) error { return s.of(id).MarkStarted(id, n) }

// Record writes the record of a synchronous request without waiting.
func (s *Store) Record(rec *Record, result []byte) error { return s.of(rec.ID).Record(rec, result) }

// Get returns activation id.
func (s *Store) Get(id string) (*Record, error) {
	if CheckID(id) != nil {
		return nil, ErrNotFound
	}
	return s.of(id).Get(id)
}

// Body returns a copy of activation id's request body.
func (s *Store) Body(id string) ([]byte, error) { return s.of(id).Body(id) }

// ReadBody calls fn with activation id's request body (a view valid
// during the call).
func (s *Store) ReadBody(id string, fn func([]byte)) error { return s.of(id).ReadBody(id, fn) }

// Result returns a copy of activation id's kept result.
func (s *Store) Result(id string) ([]byte, error) { return s.of(id).Result(id) }

// Pending returns every activation owed something, oldest first.
func (s *Store) Pending() ([]*Record, error) {
	var out []*Record
	for _, sh := range s.shards {
		p, err := sh.Pending()
		if err != nil {
			return nil, err
		}
		out = append(out, p...)
	}
	slices.SortFunc(out, func(a, b *Record) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// List returns activations matching f, newest first, and the cursor of
// the next page ("" when this is the last): each shard's page, merged.
func (s *Store) List(f Filter) ([]*Record, string, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, MaxList)
	var all []*Record
	more := false
	for _, sh := range s.shards {
		recs, next, err := sh.List(f)
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

// Prune drops finished activations past their app's retention bounds
// (ret: the bounds of an app; zero bounds keep everything), oldest first
// across the shards, with their bodies, results and idempotency keys;
// activations still owed something are kept whatever their age. It
// returns how many it dropped.
func (s *Store) Prune(ret func(app string) Retention, now time.Time) (int, error) {
	var all []kept
	from := map[string]int{}
	for i, sh := range s.shards {
		f, err := sh.finished()
		if err != nil {
			return 0, err
		}
		for _, k := range f {
			from[k.id] = i
		}
		all = append(all, f...)
	}
	slices.SortFunc(all, func(a, b kept) int { return cmp.Compare(a.id, b.id) })
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
			victims[from[k.id]] = append(victims[from[k.id]], k.id)
			count[k.app]--
		}
	}
	total := 0
	for i, sh := range s.shards {
		n, err := sh.drop(victims[i])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Count returns how many activations the store keeps, and how many of
// them are pending and dead.
func (s *Store) Count() (total, pending, dead int) {
	for _, sh := range s.shards {
		t, p, d := sh.Count()
		total, pending, dead = total+t, pending+p, dead+d
	}
	return
}

// Stats returns the writers' counters, summed.
func (s *Store) Stats() StoreStats {
	var st StoreStats
	var ns int64
	for _, sh := range s.shards {
		st.Commits += sh.commits.Load()
		st.Writes += sh.written.Load()
		st.Dropped += sh.dropped.Load()
		ns += sh.flushNs.Load()
	}
	if st.Commits > 0 {
		st.Batch = float64(st.Writes) / float64(st.Commits)
		st.FlushMs = float64(ns) / float64(st.Commits) / 1e6
	}
	return st
}
