package activation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The store is one bbolt file. Its buckets:
//
//	records  id → Record (JSON)
//	bodies   id → the request body (kept until the activation succeeds or is pruned)
//	results  id → the kept result
//	keys     app \0 chain \0 idempotency key → id
//	pending  id → nil, for every queued or running activation (read at start)
//	dead     id → nil, for every dead activation (the dead-letter list)
//	started  id → the attempt running now (a few bytes: cheaper than
//	         rewriting the record when an attempt starts)
//
// Ids sort by accept time, so records is also the time index.
var (
	bRecords = []byte("records")
	bBodies  = []byte("bodies")
	bResults = []byte("results")
	bKeys    = []byte("keys")
	bPending = []byte("pending")
	bDead    = []byte("dead")
	bStarted = []byte("started")
	buckets  = [][]byte{bRecords, bBodies, bResults, bKeys, bPending, bDead, bStarted}
)

// Store errors.
var (
	// ErrNotFound: no activation of that id (never, or pruned).
	ErrNotFound = errors.New("activation: not found")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("activation: store closed")
	// ErrBusy: the writer's queue is full (only for writes that do not
	// wait: a recorded synchronous request is dropped, never waited for).
	ErrBusy = errors.New("activation: store busy")
)

// maxBatch bounds the writes one commit carries.
const maxBatch = 4096

// shard is one crash-safe file of the store. Every write goes through one
// writer goroutine, which commits whatever writes are waiting in one
// transaction (group commit): durability costs one disk flush per batch,
// not per activation.
type shard struct {
	db      *bolt.DB
	ops     chan *op
	quit    chan struct{}
	done    chan struct{}
	closed  atomic.Bool
	closeMu sync.RWMutex // held shared by submitters, exclusive by Close

	commits, written, dropped atomic.Uint64
	flushNs                   atomic.Int64 // time spent committing
}

// StoreStats are the writer's counters.
type StoreStats struct {
	Commits uint64  `json:"commits"` // transactions committed
	Writes  uint64  `json:"writes"`  // writes they carried
	Dropped uint64  `json:"dropped"` // records of sync requests dropped because the writer was behind
	Batch   float64 `json:"batch"`   // mean writes per commit
	FlushMs float64 `json:"flushMs"` // mean milliseconds per commit
}

// openShard opens (or creates) the shard file at path. A second process
// opening it waits up to a second for the first to let go, then fails.
func openShard(path string) (*shard, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second,
		// The freelist is rebuilt at open instead of written by every
		// commit: less to flush per batch.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Readers do not wait for a writer that grows the map.
		InitialMmapSize: 64 << 20,
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("activation: %s is in use by another spry node (one node per data directory; use --data-dir)", path)
		}
		return nil, fmt.Errorf("activation: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("activation: open %s: %w", path, err)
	}
	s := &shard{db: db, ops: make(chan *op, maxBatch), quit: make(chan struct{}), done: make(chan struct{})}
	go s.writer()
	return s, nil
}

// Path returns the store's file.
func (s *shard) Path() string { return s.db.Path() }

// Close finishes the writes already submitted and closes the file.
func (s *shard) Close() error {
	s.closeMu.Lock()
	if s.closed.Swap(true) {
		s.closeMu.Unlock()
		return nil
	}
	close(s.quit)
	s.closeMu.Unlock()
	<-s.done
	return s.db.Close()
}

// op is one write. apply runs inside the writer's transaction; its error
// fails only this write (apply must leave the transaction consistent when
// it fails: check before writing).
type op struct {
	apply func(tx *bolt.Tx) error
	done  chan error // nil: nobody waits
}

func (s *shard) writer() {
	defer close(s.done)
	batch := make([]*op, 0, maxBatch)
	errs := make([]error, 0, maxBatch)
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-s.quit:
			// Submitters are shut out (closeMu): drain what they left.
			for {
				select {
				case o := <-s.ops:
					s.commit(append(batch[:0], o), errs)
					continue
				default:
				}
				return
			}
		}
		batch = append(batch[:0], first)
	fill:
		for len(batch) < maxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.commit(batch, errs)
	}
}

// commit applies batch in one transaction and tells each waiter.
func (s *shard) commit(batch []*op, errs []error) {
	errs = errs[:0]
	began := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, o := range batch {
			errs = append(errs, o.apply(tx))
		}
		return nil
	})
	s.flushNs.Add(int64(time.Since(began)))
	s.commits.Add(1)
	s.written.Add(uint64(len(batch)))
	for i, o := range batch {
		if o.done == nil {
			continue
		}
		e := err
		if e == nil {
			e = errs[i]
		}
		o.done <- e
	}
}

// How a write is submitted.
type mode int

const (
	waitCommit mode = iota // block until committed (durable), return its outcome
	enqueue                // block until the writer has room, not for the commit
	tryEnqueue             // never block: drop (ErrBusy) when the writer is behind
)

// submit hands a write to the writer.
func (s *shard) submit(apply func(*bolt.Tx) error, m mode) error {
	s.closeMu.RLock()
	if s.closed.Load() {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	o := &op{apply: apply}
	switch m {
	case tryEnqueue:
		select {
		case s.ops <- o:
		default:
			s.dropped.Add(1)
			s.closeMu.RUnlock()
			return ErrBusy
		}
		s.closeMu.RUnlock()
		return nil
	case enqueue:
		s.ops <- o
		s.closeMu.RUnlock()
		return nil
	}
	o.done = make(chan error, 1)
	s.ops <- o
	s.closeMu.RUnlock()
	return <-o.done
}

func scopedKey(app, chain, key string) []byte {
	return []byte(app + "\x00" + chain + "\x00" + key)
}

// Create stores a new activation and its body durably. When rec.Key is set
// and an activation of the same app, chain and key is still kept, nothing
// is written and that activation's id comes back as existing.
func (s *shard) Create(rec *Record, body []byte) (existing string, err error) {
	return s.create(rec, body, waitCommit)
}

func (s *shard) create(rec *Record, body []byte, m mode) (existing string, err error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("activation: encode: %w", err)
	}
	id := []byte(rec.ID)
	err = s.submit(func(tx *bolt.Tx) error {
		if rec.Key != "" {
			k := scopedKey(rec.App, rec.Chain, rec.Key)
			if old := tx.Bucket(bKeys).Get(k); old != nil {
				existing = string(old)
				return nil
			}
			if err := tx.Bucket(bKeys).Put(k, id); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bRecords).Put(id, data); err != nil {
			return err
		}
		if err := tx.Bucket(bBodies).Put(id, body); err != nil {
			return err
		}
		return tx.Bucket(bPending).Put(id, nil)
	}, m)
	return existing, err
}

// Save writes rec's new state (and its result, when not nil). With wait
// it returns once the write is durable; without, once the writer took it
// (writes are applied in the order they are submitted). Indexes follow the
// state: an activation the node still owes something (a pending state, or
// a callback not yet delivered) is in the pending list, a dead one in the
// dead list, and a succeeded one drops its body.
func (s *shard) Save(rec *Record, result []byte, wait bool) error {
	m := enqueue
	if wait {
		m = waitCommit
	}
	return s.save(rec, result, m)
}

func (s *shard) save(rec *Record, result []byte, m mode) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("activation: encode: %w", err)
	}
	id := []byte(rec.ID)
	state := rec.State
	owed := rec.Owed()
	return s.submit(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bRecords).Put(id, data); err != nil {
			return err
		}
		if result != nil {
			if err := tx.Bucket(bResults).Put(id, result); err != nil {
				return err
			}
		}
		err := tx.Bucket(bStarted).Delete(id)
		if owed {
			err = errors.Join(err, tx.Bucket(bPending).Put(id, nil))
		} else {
			err = errors.Join(err, tx.Bucket(bPending).Delete(id))
		}
		if state == Dead {
			err = errors.Join(err, tx.Bucket(bDead).Put(id, nil))
		} else {
			err = errors.Join(err, tx.Bucket(bDead).Delete(id))
		}
		if state == Succeeded {
			err = errors.Join(err, tx.Bucket(bBodies).Delete(id))
		}
		return err
	}, m)
}

// MarkStarted notes, without waiting, that attempt n of activation id
// started: after a crash, that attempt counts (Pending reports it).
func (s *shard) MarkStarted(id string, n int) error {
	k := []byte(id)
	v := []byte{byte(min(n, 255))}
	return s.submit(func(tx *bolt.Tx) error {
		if tx.Bucket(bPending).Get(k) == nil {
			return nil // finished meanwhile
		}
		return tx.Bucket(bStarted).Put(k, v)
	}, enqueue)
}

// Record writes the record of a synchronous request without waiting: when
// the writer is behind, it is dropped (and counted) rather than slowing
// the request path.
func (s *shard) Record(rec *Record, result []byte) error {
	return s.save(rec, result, tryEnqueue)
}

// Get returns the activation id.
func (s *shard) Get(id string) (*Record, error) {
	var rec *Record
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bRecords).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		rec = new(Record)
		return json.Unmarshal(v, rec)
	})
	return rec, err
}

// Body returns a copy of activation id's request body.
func (s *shard) Body(id string) ([]byte, error) {
	var out []byte
	err := s.ReadBody(id, func(b []byte) { out = bytes.Clone(b) })
	return out, err
}

// ReadBody calls fn with activation id's request body, a view into the
// store valid only during the call (copy it into a pool buffer there).
func (s *shard) ReadBody(id string, fn func([]byte)) error {
	return s.db.View(func(tx *bolt.Tx) error {
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
func (s *shard) Result(id string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bRecords).Get([]byte(id)) == nil {
			return ErrNotFound
		}
		out = bytes.Clone(tx.Bucket(bResults).Get([]byte(id)))
		return nil
	})
	return out, err
}

// Pending returns every queued or running activation, oldest first: what
// a node owes after a restart.
func (s *shard) Pending() ([]*Record, error) {
	var out []*Record
	err := s.db.View(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bRecords)
		started := tx.Bucket(bStarted)
		return tx.Bucket(bPending).ForEach(func(k, _ []byte) error {
			v := recs.Get(k)
			if v == nil {
				return nil
			}
			r := new(Record)
			if err := json.Unmarshal(v, r); err != nil {
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
	return out, err
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
// the next page ("" when this is the last).
func (s *shard) List(f Filter) ([]*Record, string, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, MaxList)
	var out []*Record
	next := ""
	err := s.db.View(func(tx *bolt.Tx) error {
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
			if err := json.Unmarshal(v, r); err != nil {
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

// finished lists the shard's finished activations (those owed nothing),
// oldest first, with their apps.
func (s *shard) finished() ([]kept, error) {
	var out []kept
	err := s.db.View(func(tx *bolt.Tx) error {
		pending := tx.Bucket(bPending)
		c := tx.Bucket(bRecords).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if pending.Get(k) == nil {
				out = append(out, kept{id: string(k), app: appOf(v)})
			}
		}
		return nil
	})
	return out, err
}

// kept is a finished activation: its id and app.
type kept struct{ id, app string }

// drop deletes finished activations ids with their bodies, results and
// idempotency keys (one that is owed something again, redriven since it
// was listed, stays), and returns how many it dropped.
func (s *shard) drop(ids []string) (int, error) {
	dropped := 0
	for len(ids) > 0 {
		n := min(len(ids), 1000)
		chunk := ids[:n]
		ids = ids[n:]
		err := s.submit(func(tx *bolt.Tx) error {
			recs := tx.Bucket(bRecords)
			for _, id := range chunk {
				k := []byte(id)
				v := recs.Get(k)
				if v == nil || tx.Bucket(bPending).Get(k) != nil {
					continue
				}
				var r Record
				if json.Unmarshal(v, &r) == nil && r.Key != "" {
					sk := scopedKey(r.App, r.Chain, r.Key)
					if string(tx.Bucket(bKeys).Get(sk)) == id {
						tx.Bucket(bKeys).Delete(sk)
					}
				}
				for _, b := range [][]byte{bRecords, bBodies, bResults, bDead, bStarted} {
					if err := tx.Bucket(b).Delete(k); err != nil {
						return err
					}
				}
				dropped++
			}
			return nil
		}, waitCommit)
		if err != nil {
			return dropped, err
		}
	}
	return dropped, nil
}

// appOf reads the app of an encoded record without decoding all of it: a
// Record encodes as {"id":"<32 hex>","app":"<name>",… and app names need
// no escaping.
func appOf(v []byte) string {
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
func (s *shard) Count() (total, pending, dead int) {
	s.db.View(func(tx *bolt.Tx) error {
		total = tx.Bucket(bRecords).Stats().KeyN
		pending = tx.Bucket(bPending).Stats().KeyN
		dead = tx.Bucket(bDead).Stats().KeyN
		return nil
	})
	return
}
