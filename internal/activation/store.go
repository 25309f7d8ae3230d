package activation

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The store is a write-ahead log (wal.go) in front of Shards bbolt files.
//
//	submitters ──ops──▶ writer ──log, one flush a group──▶ waiters told
//	                       │
//	                       └──the group's ops──▶ applier ──▶ bbolt files
//	                                                  └──▶ applied segments removed
//
// One writer goroutine takes every op in submission order. It settles
// idempotency keys (against what is applied and what is logged but not
// yet applied), appends the ops that must be durable to the log, flushes
// once for the whole group and tells their submitters; an accepted
// activation costs its share of one fdatasync. An applier goroutine then
// applies each group, in order, to the bbolt files (one transaction per
// shard, the shards side by side), with the log position each file has
// reached; once every file has a group, the segments it filled are
// removed. Open replays, into each file, what the log holds past that
// file's position.
//
// Reads see every write submitted before them: those of records and
// lists wait until the applier has caught up with what was submitted (a
// barrier; free when it has); a request body, which attempts read on the
// hot path, comes from memory while its create is not yet applied.

// Each bbolt file's buckets:
//
//	records  id → Record (JSON)
//	bodies   id → the request body (kept until the activation succeeds or is pruned)
//	results  id → the kept result
//	keys     app \0 chain \0 idempotency key → id
//	pending  id → nil, for every queued or running activation (read at start)
//	dead     id → nil, for every dead activation (the dead-letter list)
//	started  id → the attempt running now (a few bytes: cheaper than
//	         rewriting the record when an attempt starts)
//	wal      "applied" → the log's sequence number this file has applied
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
	bWAL     = []byte("wal")
	buckets  = [][]byte{bRecords, bBodies, bResults, bKeys, bPending, bDead, bStarted, bWAL}
	kApplied = []byte("applied")
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

// Shards is how many bbolt files the store spreads activations over. An
// activation lives in one shard, named in its id; an idempotency key and
// its activation live in the key's shard. The applier commits the shards
// side by side.
const Shards = 4

// maxBatch bounds the ops one group carries; maxApply the ops one apply
// of the bbolt files carries.
const (
	maxBatch = 4096
	maxApply = 16384
)

// Store keeps activation records durably under the data directory.
type Store struct {
	dir    string
	shards [Shards]*bolt.DB
	log    *wal

	ops     chan *op   // to the writer
	applyq  chan []*op // writer → applier: logged groups, in order
	hurry   chan struct{}
	quit    chan struct{}
	done    chan struct{} // the applier has stopped
	closed  atomic.Bool
	closeMu sync.RWMutex // held shared by submitters, exclusive by Close
	failed  atomic.Pointer[error]

	// What is logged but not yet applied: the bodies of creates (attempts
	// read them) and the idempotency keys (the writer checks them).
	memMu  sync.Mutex
	bodies map[string][]byte
	keys   map[string]string

	// Barrier: ops submitted, and ops applied (in submission order).
	submitted atomic.Uint64
	applyMu   sync.Mutex
	applyCond *sync.Cond
	applied   uint64

	// The writer's own: waiters in the last group, and the flush time
	// (moving average, ns).
	lastWaiters int
	syncEWMA    float64
	// held: groups nobody waits for (outcomes, attempts' starts), written
	// to the log but not yet flushed: the next flush (a write someone
	// waits for, a read's barrier, or lazyFlush later) carries them, and
	// only then do they go to the applier (what the bbolt files apply is
	// always durable in the log first).
	held      [][]*op
	lazyFlush time.Duration // the package's lazyFlush (tests change it before the first write)
	flushNow  chan struct{} // a reader waits for the held groups

	commits, written, dropped atomic.Uint64
	flushNs                   atomic.Int64
	applies                   atomic.Uint64
	applyNs                   atomic.Int64
	replayed                  int // log records applied by Open (after a crash)
}

// StoreStats are the store's counters.
type StoreStats struct {
	Commits uint64  `json:"commits"` // log flushes (groups)
	Writes  uint64  `json:"writes"`  // writes they carried
	Dropped uint64  `json:"dropped"` // records of sync requests dropped because the writer was behind
	Batch   float64 `json:"batch"`   // mean writes per flush
	FlushMs float64 `json:"flushMs"` // mean milliseconds per flush (the group's write and fdatasync)
	SyncMs  float64 `json:"syncMs"`  // of which in fdatasync: the disk's flush latency
	Applies uint64  `json:"applies"` // applications of groups to the bbolt files
	ApplyMs float64 `json:"applyMs"` // mean milliseconds per application
	// Replayed: log records Open applied to the bbolt files, which had
	// not applied them when the node stopped (0 after a clean stop).
	Replayed int `json:"replayed"`
}

// Open opens (or creates) the store in dir, applying to its bbolt files
// what the log holds that they have not applied (after a crash).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("activation: data directory: %w", err)
	}
	s := &Store{dir: dir, bodies: map[string][]byte{}, keys: map[string]string{}}
	s.applyCond = sync.NewCond(&s.applyMu)
	var applied [Shards]uint64
	for i := range Shards {
		db, err := openShard(filepath.Join(dir, fmt.Sprintf("activations-%d.db", i)))
		if err != nil {
			s.closeFiles()
			return nil, err
		}
		s.shards[i] = db
		db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bWAL).Get(kApplied); len(v) == 8 {
				applied[i] = binary.LittleEndian.Uint64(v)
			}
			return nil
		})
	}
	// Replay: what each file has not applied, in big transactions.
	var batch []*op
	flush := func() error {
		err := s.applyOps(batch)
		batch = batch[:0]
		return err
	}
	var floor uint64
	for _, a := range applied {
		floor = max(floor, a)
	}
	w, last, err := openWAL(filepath.Join(dir, "wal"), floor, func(r walRecord) error {
		o, err := decodeOp(r.payload)
		if err != nil {
			return fmt.Errorf("activation: log record %d: %w", r.seq, err)
		}
		if r.seq <= applied[o.shard] {
			return nil
		}
		o.seq = r.seq
		s.replayed++
		batch = append(batch, o)
		if len(batch) >= maxApply {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("activation: %s: %w", filepath.Join(dir, "wal"), err)
	}
	s.log = w
	if err := w.retire(last); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("activation: %w", err)
	}
	s.ops = make(chan *op, maxBatch)
	s.applyq = make(chan []*op, 1024)
	s.hurry = make(chan struct{}, 1)
	s.flushNow = make(chan struct{}, 1)
	s.lazyFlush = lazyFlush
	s.quit = make(chan struct{})
	s.done = make(chan struct{})
	go s.writer()
	go s.applier()
	return s, nil
}

// openShard opens (or creates) one bbolt file. A second process opening
// it waits up to a second for the first to let go, then fails.
func openShard(path string) (*bolt.DB, error) {
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
	return db, nil
}

// Path returns the store's directory.
func (s *Store) Path() string { return s.dir }

// Close finishes the writes already submitted (logged and applied) and
// closes the files.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed.Swap(true) {
		s.closeMu.Unlock()
		return nil
	}
	close(s.quit)
	s.closeMu.Unlock()
	<-s.done
	err := s.log.close()
	return errors.Join(err, s.closeFiles())
}

func (s *Store) closeFiles() error {
	var err error
	for _, db := range s.shards {
		if db != nil {
			err = errors.Join(err, db.Close())
		}
	}
	return err
}

func (s *Store) fail(err error) {
	e := fmt.Errorf("%w: %w", errWALFailed, err)
	if s.failed.CompareAndSwap(nil, &e) {
		fmt.Fprintf(os.Stderr, "spry: activation store %s: %v: it refuses writes until the node restarts\n", s.dir, err)
	}
}

func (s *Store) failure() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// How a write is submitted.
type mode int

const (
	waitDone   mode = iota // block until settled (durable, or applied for unlogged kinds)
	enqueue                // block until the writer has room, not for the outcome
	tryEnqueue             // never block: drop (ErrBusy) when the writer is behind
	noWait                 // like waitDone, but return at once: the caller waits on o.done
)

// submit hands o to the writer.
func (s *Store) submit(o *op, m mode) error {
	if err := s.enter(o, m); err != nil {
		return err
	}
	if m == waitDone {
		return o.wait()
	}
	return nil
}

func (s *Store) enter(o *op, m mode) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.failure(); err != nil {
		return err
	}
	if m == waitDone || m == noWait {
		o.done = make(chan struct{})
	}
	s.submitted.Add(1)
	if m == tryEnqueue {
		select {
		case s.ops <- o:
			return nil
		default:
			s.submitted.Add(^uint64(0))
			s.dropped.Add(1)
			return ErrBusy
		}
	}
	s.ops <- o
	return nil
}

func (s *Store) writer() {
	defer close(s.applyq)
	lazy := time.NewTimer(time.Hour)
	lazy.Stop()
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-lazy.C:
			s.flushHeld()
			continue
		case <-s.flushNow:
			s.flushHeld()
			continue
		case <-s.quit:
			// Submitters are shut out (closeMu): log what they left.
			for s.group(nil) {
			}
			s.flushHeld()
			return
		}
		held := len(s.held)
		s.group(first)
		if held == 0 && len(s.held) > 0 {
			lazy.Reset(s.lazyFlush)
		}
	}
}

// lazyFlush bounds how long a write nobody waits for (an outcome, an
// attempt's start) stays in the log unflushed: in the page cache, where a
// kill -9 of the node does not lose it but a crash of the machine may
// (the activation then runs again: at least once). Under load the next
// accepted activation's flush carries it long before.
var lazyFlush = 20 * time.Millisecond

// flushHeld flushes the groups written but not flushed, and hands them to
// the applier.
func (s *Store) flushHeld() {
	if len(s.held) == 0 {
		return
	}
	began := time.Now()
	err := s.failure()
	if err == nil {
		err = s.log.sync()
		s.flushNs.Add(int64(time.Since(began)))
		s.commits.Add(1)
	}
	s.release(err)
}

// release hands the held groups to the applier once their flush is done
// (err nil), or lets them go with the store failed.
func (s *Store) release(err error) {
	n := 0
	for _, b := range s.held {
		if err == nil {
			s.applyq <- b
		}
		n += len(b)
	}
	clear(s.held)
	s.held = s.held[:0]
	if err != nil {
		if s.failure() == nil {
			s.fail(err)
		}
		s.applied_(n) // nothing to apply: let barriers pass
	}
}

// group writes first and whatever else waits (up to maxBatch) as one
// group. It reports whether there was anything.
func (s *Store) group(first *op) bool {
	// A fresh slice each time: the applier holds the last one.
	batch := make([]*op, 0, min(len(s.ops)+1, maxBatch))
	if first != nil {
		batch = append(batch, first)
	}
	waiters := 0
	take := func(o *op) {
		batch = append(batch, o)
		if o.done != nil && o.logged() {
			waiters++
		}
	}
	if first != nil && first.done != nil && first.logged() {
		waiters = 1
	}
	for len(batch) < maxBatch {
		select {
		case o := <-s.ops:
			take(o)
			continue
		default:
		}
		break
	}
	if len(batch) == 0 {
		return false
	}
	// Group commit under a closed loop: the submitters the last flush
	// released come back one by one, and the first to come would start a
	// flush of its own, leaving the rest to wait for the one after. When
	// the last group had many waiters and few are back, wait a little
	// (at most half a flush) for the others to ride this one.
	if want := s.lastWaiters; want >= 8 && waiters < want/2 && first != nil {
		d := min(time.Duration(s.syncEWMA/2), 2*time.Millisecond)
		t := time.NewTimer(d)
	wait:
		for waiters < want*3/4 && len(batch) < maxBatch {
			select {
			case o := <-s.ops:
				take(o)
			case <-t.C:
				break wait
			case <-s.quit:
				break wait
			}
		}
		t.Stop()
	}
	if waiters > 0 {
		s.lastWaiters = waiters
	}
	s.write(batch)
	return true
}

// write logs one group: idempotency keys settled, logged ops framed, one
// write and flush; then the waiters are told and the group goes to the
// applier.
func (s *Store) write(batch []*op) {
	began := time.Now()
	err := s.failure()
	logged := 0
	var newKeys []string
	if err == nil {
		for _, o := range batch {
			if o.kind == opCreate && o.key != nil {
				if id := s.keyOwner(o); id != "" {
					o.existing = id
					continue
				}
				s.memMu.Lock()
				s.keys[string(o.key)] = string(o.id)
				s.memMu.Unlock()
				newKeys = append(newKeys, string(o.key))
			}
			if !o.logged() {
				continue
			}
			var seq uint64
			if seq, err = s.log.frame(o.payload); err != nil {
				break
			}
			o.seq = seq
			logged++
		}
	}
	// Nobody waits for this group (outcomes, attempts' starts, records
	// of sync requests): it is written now and flushed with the next
	// group that someone waits for (held).
	urgent := false
	for _, o := range batch {
		if o.done != nil || o.existing != "" {
			urgent = true
			break
		}
	}
	if err == nil && !urgent {
		if logged > 0 {
			err = s.log.write()
		}
		if err == nil {
			s.written.Add(uint64(logged))
			s.held = append(s.held, batch)
			return
		}
	}
	if err == nil && (logged > 0 || len(s.held) > 0) {
		t0 := s.log.syncNs.Load()
		err = s.log.sync()
		s.syncEWMA += (float64(s.log.syncNs.Load()-t0) - s.syncEWMA) / 8
		s.flushNs.Add(int64(time.Since(began)))
		s.commits.Add(1)
		s.written.Add(uint64(logged))
	}
	s.release(err) // on err, it fails the store
	if err != nil {
		s.memMu.Lock()
		for _, k := range newKeys {
			delete(s.keys, k)
		}
		s.memMu.Unlock()
		err = s.failure()
		for _, o := range batch {
			o.err = err
			if o.done != nil {
				close(o.done)
			}
		}
		s.applied_(len(batch)) // nothing to apply: let barriers pass
		return
	}
	s.memMu.Lock()
	for _, o := range batch {
		if o.kind == opCreate && o.existing == "" {
			s.bodies[string(o.id)] = o.data
		}
	}
	s.memMu.Unlock()
	for _, o := range batch {
		// Durable: tell the waiters. Unlogged ops that wait are told
		// by the applier once applied.
		if o.done != nil && (o.logged() || o.existing != "") {
			close(o.done)
		}
	}
	s.applyq <- batch
	for _, o := range batch {
		if o.done != nil && !o.logged() {
			s.hurryApply() // someone waits for it to be applied
			break
		}
	}
}

// keyOwner returns the activation that already has o's idempotency key:
// logged and not yet applied, or in the bbolt file.
func (s *Store) keyOwner(o *op) string {
	s.memMu.Lock()
	id := s.keys[string(o.key)]
	s.memMu.Unlock()
	if id != "" {
		return id
	}
	// Applied: the applier commits before it forgets a key, so a key gone
	// from memory is in the file.
	s.shards[o.shard].View(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bKeys).Get(o.key))
		return nil
	})
	return id
}

// applyEvery is how long the applier gathers groups before it applies
// them (unless a reader waits for them, or they grow past maxApply): the
// bbolt files then commit a few times a second, not once per group —
// their page writes and two flushes a commit are off the accept path,
// but not free.
var applyEvery = 100 * time.Millisecond

func (s *Store) applier() {
	defer close(s.done)
	var pending []*op
	t := time.NewTimer(time.Hour)
	t.Stop()
	armed, hurried := false, false
	for {
		now := false
		select {
		case b, ok := <-s.applyq:
			if !ok {
				s.apply(pending)
				return
			}
			pending = append(pending, b...)
			if !armed {
				t.Reset(applyEvery)
				armed = true
			}
			now = hurried || len(pending) >= maxApply
		case <-t.C:
			armed, now = false, true
		case <-s.hurry:
			now = true
		}
		if !now {
			continue
		}
		if len(pending) == 0 {
			hurried = true // what the hurry is for is still with the writer
			continue
		}
		hurried = false
		// Everything the writer has handed over meanwhile goes too.
	more:
		for {
			select {
			case b, ok := <-s.applyq:
				if !ok {
					break more
				}
				pending = append(pending, b...)
				continue
			default:
			}
			break
		}
		s.apply(pending)
		pending = nil
	}
}

// apply applies ops (in order) to the bbolt files, then forgets what it
// kept in memory for them, tells those waiting, and removes the log
// segments wholly applied.
func (s *Store) apply(batch []*op) {
	if len(batch) == 0 {
		return
	}
	began := time.Now()
	if err := s.applyOps(batch); err != nil && s.failure() == nil {
		s.fail(err)
	}
	s.applyNs.Add(int64(time.Since(began)))
	s.applies.Add(1)
	var last uint64
	s.memMu.Lock()
	for _, o := range batch {
		last = max(last, o.seq)
		if o.kind == opCreate && o.existing == "" {
			delete(s.bodies, string(o.id))
			if o.key != nil && s.keys[string(o.key)] == string(o.id) {
				delete(s.keys, string(o.key))
			}
		}
	}
	s.memMu.Unlock()
	for _, o := range batch {
		if o.done != nil && !o.logged() && o.existing == "" {
			close(o.done)
		}
	}
	s.applied_(len(batch))
	if s.failure() == nil {
		if err := s.log.retire(last); err != nil {
			s.fail(err)
		}
	}
}

// hurryApply asks the applier to apply what it has now.
func (s *Store) hurryApply() {
	select {
	case s.hurry <- struct{}{}:
	default:
	}
}

func (s *Store) applied_(n int) {
	s.applyMu.Lock()
	s.applied += uint64(n)
	s.applyMu.Unlock()
	s.applyCond.Broadcast()
}

// applyOps applies ops, in order, to their shards' bbolt files: one
// transaction per shard, side by side, each also noting the log position
// its file has reached.
func (s *Store) applyOps(ops []*op) error {
	if len(ops) == 0 {
		return nil
	}
	var per [Shards][]*op
	for _, o := range ops {
		per[o.shard] = append(per[o.shard], o)
	}
	var errs [Shards]error
	var wg sync.WaitGroup
	for i, list := range per {
		if len(list) == 0 {
			continue
		}
		coalesce(list)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.shards[i].Update(func(tx *bolt.Tx) error {
				var last uint64
				for _, o := range list {
					if o.existing != "" {
						continue
					}
					if err := o.apply(tx); err != nil {
						o.err = err
					}
					last = max(last, o.seq)
				}
				if last == 0 {
					return nil
				}
				var v [8]byte
				binary.LittleEndian.PutUint64(v[:], last)
				return tx.Bucket(bWAL).Put(kApplied, v[:])
			})
		}()
	}
	wg.Wait()
	return errors.Join(errs[:]...)
}

// barrier returns once every op submitted before it is applied to the
// bbolt files (at once when the applier is caught up).
func (s *Store) barrier() {
	target := s.submitted.Load()
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	for s.applied < target && !s.closed.Load() && s.failure() == nil {
		select {
		case s.flushNow <- struct{}{}: // held groups go now
		default:
		}
		s.hurryApply()
		s.applyCond.Wait()
	}
}

func scopedKey(app, chain, key string) []byte {
	return []byte(app + "\x00" + chain + "\x00" + key)
}

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

// Pending is a create on its way to the disk.
type Pending struct{ o *op }

// Wait returns once the create is durable (or failed), with the id of the
// activation that already had its idempotency key, if one did.
func (p Pending) Wait() (existing string, err error) {
	if err := p.o.wait(); err != nil {
		return "", err
	}
	return p.o.existing, nil
}

// Create stores a new activation and its body durably. When rec.Key is set
// and an activation of the same app, chain and key is still kept, nothing
// is written and that activation's id comes back as existing. Its id must
// come from NewID with the same key.
func (s *Store) Create(rec *Record, body []byte) (existing string, err error) {
	p, err := s.CreateAsync(rec, body)
	if err != nil {
		return "", err
	}
	return p.Wait()
}

// CreateAsync submits Create without waiting for the disk: Wait on the
// result does (a caller that pipelines acknowledgements waits in order).
// The store keeps body until it is applied: the caller must not change it.
func (s *Store) CreateAsync(rec *Record, body []byte) (Pending, error) {
	if rec.Key != "" && idShard(rec.ID) != int(keyShard(rec.App, rec.Chain, rec.Key)) {
		return Pending{}, fmt.Errorf("activation: id %s is not in the shard of its idempotency key (use Store.NewID)", rec.ID)
	}
	o, err := newCreate(rec, body)
	if err != nil {
		return Pending{}, err
	}
	if err := s.submit(o, noWait); err != nil {
		return Pending{}, err
	}
	return Pending{o}, nil
}

// Save writes rec's new state (and its result, when not nil). With wait
// it returns once the write is durable; without, once the writer took it
// (writes are applied in the order they are submitted). Indexes follow the
// state: an activation the node still owes something (a pending state, or
// a callback not yet delivered) is in the pending list, a dead one in the
// dead list, and a succeeded one drops its body.
func (s *Store) Save(rec *Record, result []byte, wait bool) error {
	o, err := newSave(opSave, rec, result)
	if err != nil {
		return err
	}
	m := enqueue
	if wait {
		m = waitDone
	}
	return s.submit(o, m)
}

// MarkStarted notes, without waiting, that attempt n of activation id
// started: after a crash, that attempt counts (Pending reports it).
func (s *Store) MarkStarted(id string, n int) error {
	o := &op{kind: opStarted, id: []byte(id), n: byte(min(n, 255))}
	if err := o.seal(); err != nil {
		return err
	}
	return s.submit(o, enqueue)
}

// Record writes the record of a synchronous request without waiting: when
// the writer is behind, it is dropped (and counted) rather than slowing
// the request path. It is not logged: a crash may lose the records of
// the last moments before it.
func (s *Store) Record(rec *Record, result []byte) error {
	o, err := newSave(opRecord, rec, result)
	if err != nil {
		return err
	}
	return s.submit(o, tryEnqueue)
}

// Stats returns the store's counters.
func (s *Store) Stats() StoreStats {
	st := StoreStats{Commits: s.commits.Load(), Writes: s.written.Load(), Dropped: s.dropped.Load(), Applies: s.applies.Load(), Replayed: s.replayed}
	if st.Commits > 0 {
		st.Batch = float64(st.Writes) / float64(st.Commits)
		st.FlushMs = float64(s.flushNs.Load()) / float64(st.Commits) / 1e6
		st.SyncMs = float64(s.log.syncNs.Load()) / float64(st.Commits) / 1e6
	}
	if st.Applies > 0 {
		st.ApplyMs = float64(s.applyNs.Load()) / float64(st.Applies) / 1e6
	}
	return st
}
