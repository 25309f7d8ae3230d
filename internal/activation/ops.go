package activation

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// An op is one write to the store. The writer goroutine takes ops in the
// order they are submitted; those that must be durable (logged kinds) go
// into the write-ahead log, flushed by group; then the applier applies
// every op, in the same order, to the bbolt file of its shard.
type op struct {
	kind  byte
	shard int
	id    []byte // the activation's id (32 hex digits)
	key   []byte // opCreate: the scoped idempotency key, or nil
	rec   []byte // opCreate, opSave, opRecord: the record (JSON)
	data  []byte // opCreate: the body; opSave, opRecord: the result (nil: none)
	flags byte   // opSave, opRecord: saveOwed, saveDead, saveSucceeded, saveResult
	n     byte   // opStarted: the attempt
	ids   []string

	payload []byte // logged kinds: what goes into the log (id, key, rec and data point into it)
	seq     uint64 // the log's sequence number (logged kinds)

	// Coalescing (coalesce): a create whose only later op in the same
	// application is its save is not applied by itself (merged); the
	// save applies both (created: that create).
	merged  bool
	created *op

	// Outcomes, read by the submitter once done is closed.
	existing string // opCreate: the activation that already has the key
	dropped  int    // opDrop
	err      error
	done     chan struct{} // nil: nobody waits
}

// Op kinds. The logged ones are written into the log with this byte
// first; the others only reach the bbolt files.
const (
	opCreate  = 1 // logged: a new activation and its body (durable before Create returns)
	opSave    = 2 // logged: an activation's new state and result
	opStarted = 3 // logged: attempt n started
	opRecord  = 4 // not logged: a synchronous request's record (a crash may lose the last few)
	opDrop    = 5 // not logged: retention drops finished activations (pruning again is harmless)
	opBarrier = 6 // not logged: nothing; done once everything before it is applied
)

// Save flags.
const (
	saveOwed      = 1 << iota // the node owes it something: keep it in the pending list
	saveDead                  // in the dead list
	saveSucceeded             // its body is no longer needed
	saveResult                // data is its result (else the result is left as it is)
)

func (o *op) logged() bool { return o.kind <= opStarted }

// Wait blocks until the op is settled and returns its error.
func (o *op) wait() error {
	<-o.done
	return o.err
}

func newCreate(rec *Record, body []byte) (*op, error) {
	if CheckID(rec.ID) != nil {
		return nil, fmt.Errorf("activation %q: %w", rec.ID, errBadOp)
	}
	o := &op{kind: opCreate, shard: idShard(rec.ID)}
	var key []byte
	if rec.Key != "" {
		key = scopedKey(rec.App, rec.Chain, rec.Key)
		if len(key) > 0xffff {
			return nil, fmt.Errorf("activation %q: idempotency key of %d bytes", rec.ID, len(rec.Key))
		}
	}
	o.pack(rec, key, body)
	return o, nil
}

// pack encodes a logged op of rec (create: with its key and body; save:
// with its result) into its payload, the one copy of its bytes the store
// keeps (the body is copied from the caller's buffer here), and points
// the op's fields into it. The record is encoded once, in place.
func (o *op) pack(rec *Record, key, data []byte) {
	p := make([]byte, 0, 1+IDLen+2+len(key)+5+recordSize(rec)+len(data))
	p = append(append(p, o.kind), rec.ID...)
	if o.kind == opCreate {
		p = binary.LittleEndian.AppendUint16(p, uint16(len(key)))
		p = append(p, key...)
	} else {
		p = append(p, o.flags)
	}
	at := len(p) + 4
	p = encodeRecord(append(p, 0, 0, 0, 0), rec)
	end := len(p)
	binary.LittleEndian.PutUint32(p[at-4:], uint32(end-at))
	p = append(p, data...)
	o.payload, o.id, o.rec = p, p[1:1+IDLen], p[at:end]
	if o.kind == opCreate {
		if len(key) > 0 {
			o.key = p[1+IDLen+2 : 1+IDLen+2+len(key)]
		}
		o.data = p[end:]
	} else if o.flags&saveResult != 0 {
		o.data = p[end:]
	}
}

// seal encodes an op without a record (opStarted) into its payload.
func (o *op) seal() error {
	p, err := decodeOp(o.encode(make([]byte, 0, o.size())))
	if err != nil {
		return fmt.Errorf("activation %q: %w", o.id, err)
	}
	*o = *p
	return nil
}

// size is the length of the op's payload.
func (o *op) size() int {
	return 1 + len(o.id) + 2 + len(o.key) + 5 + len(o.rec) + len(o.data) + 1
}

func newSave(kind byte, rec *Record, result []byte) (*op, error) {
	if CheckID(rec.ID) != nil {
		return nil, fmt.Errorf("activation %q: %w", rec.ID, errBadOp)
	}
	o := &op{kind: kind, shard: idShard(rec.ID)}
	if rec.Owed() {
		o.flags |= saveOwed
	}
	switch rec.State {
	case Dead:
		o.flags |= saveDead
	case Succeeded:
		o.flags |= saveSucceeded
	}
	if result != nil {
		o.flags |= saveResult
	}
	o.pack(rec, nil, result)
	return o, nil
}

// encode appends the op's log payload to dst:
//
//	create:  kind | id (32) | u16 keyLen | key | u32 recLen | rec | body
//	save:    kind | id (32) | flags | u32 recLen | rec | result
//	started: kind | id (32) | n
func (o *op) encode(dst []byte) []byte {
	dst = append(append(dst, o.kind), o.id...)
	switch o.kind {
	case opCreate:
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(o.key)))
		dst = append(dst, o.key...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(o.rec)))
		dst = append(append(dst, o.rec...), o.data...)
	case opSave:
		dst = append(dst, o.flags)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(o.rec)))
		dst = append(append(dst, o.rec...), o.data...)
	case opStarted:
		dst = append(dst, o.n)
	}
	return dst
}

var errBadOp = errors.New("activation: malformed log record")

// decodeOp reads an op back from its log payload (replay). Its slices
// point into p.
func decodeOp(p []byte) (*op, error) {
	if len(p) < 1+IDLen {
		return nil, errBadOp
	}
	o := &op{kind: p[0], id: p[1 : 1+IDLen], payload: p}
	if CheckID(string(o.id)) != nil {
		return nil, errBadOp
	}
	o.shard = idShard(string(o.id))
	p = p[1+IDLen:]
	switch o.kind {
	case opCreate:
		if len(p) < 2 {
			return nil, errBadOp
		}
		k := int(binary.LittleEndian.Uint16(p))
		p = p[2:]
		if len(p) < k+4 {
			return nil, errBadOp
		}
		if k > 0 {
			o.key = p[:k]
		}
		p = p[k:]
		r := int(binary.LittleEndian.Uint32(p))
		p = p[4:]
		if len(p) < r {
			return nil, errBadOp
		}
		o.rec, o.data = p[:r], p[r:]
	case opSave:
		if len(p) < 5 {
			return nil, errBadOp
		}
		o.flags = p[0]
		r := int(binary.LittleEndian.Uint32(p[1:]))
		p = p[5:]
		if len(p) < r {
			return nil, errBadOp
		}
		o.rec = p[:r]
		if o.flags&saveResult != 0 {
			o.data = p[r:]
		}
	case opStarted:
		if len(p) != 1 {
			return nil, errBadOp
		}
		o.n = p[0]
	default:
		return nil, errBadOp
	}
	return o, nil
}

// coalesce pairs, in the ops one transaction applies to a shard (in
// order), each create with its save when the save is the only other op of
// that activation there: an activation that ran within one application
// (most, at a few applications a second) is then written once, in its
// final state, instead of written and rewritten (its body put and
// deleted, its pending entry put and deleted).
func coalesce(list []*op) {
	type seen struct{ create, save, n int }
	var ids map[[IDLen]byte]*seen
	for i, o := range list {
		if o.kind != opCreate || o.existing != "" || len(o.id) != IDLen {
			continue
		}
		if ids == nil {
			ids = make(map[[IDLen]byte]*seen)
		}
		ids[[IDLen]byte(o.id)] = &seen{create: i, save: -1}
	}
	if ids == nil {
		return
	}
	for i, o := range list {
		if len(o.id) != IDLen {
			continue
		}
		e := ids[[IDLen]byte(o.id)]
		if e == nil || i < e.create {
			continue
		}
		e.n++
		if o.kind == opSave {
			e.save = i
		}
	}
	for _, e := range ids {
		if e.n == 2 && e.save > e.create {
			c := list[e.create]
			c.merged, list[e.save].created = true, c
		}
	}
}

// apply makes the op's change in tx (the bbolt file of its shard). Its
// error fails only this op: it checks before it writes.
func (o *op) apply(tx *bolt.Tx) error {
	if o.merged {
		return nil // its save applies it
	}
	if c := o.created; c != nil {
		return o.applyCreated(tx, c)
	}
	switch o.kind {
	case opCreate:
		if o.key != nil {
			if err := tx.Bucket(bKeys).Put(o.key, o.id); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bRecords).Put(o.id, o.rec); err != nil {
			return err
		}
		if err := tx.Bucket(bBodies).Put(o.id, nonNil(o.data)); err != nil {
			return err
		}
		return tx.Bucket(bPending).Put(o.id, present)
	case opSave, opRecord:
		if err := tx.Bucket(bRecords).Put(o.id, o.rec); err != nil {
			return err
		}
		if o.flags&saveResult != 0 {
			if err := tx.Bucket(bResults).Put(o.id, nonNil(o.data)); err != nil {
				return err
			}
		}
		err := tx.Bucket(bStarted).Delete(o.id)
		if o.flags&saveOwed != 0 {
			err = errors.Join(err, tx.Bucket(bPending).Put(o.id, present))
		} else {
			err = errors.Join(err, tx.Bucket(bPending).Delete(o.id))
		}
		if o.flags&saveDead != 0 {
			err = errors.Join(err, tx.Bucket(bDead).Put(o.id, present))
		} else {
			err = errors.Join(err, tx.Bucket(bDead).Delete(o.id))
		}
		if o.flags&saveSucceeded != 0 {
			err = errors.Join(err, tx.Bucket(bBodies).Delete(o.id))
		}
		return err
	case opStarted:
		if tx.Bucket(bPending).Get(o.id) == nil {
			return nil // finished meanwhile
		}
		return tx.Bucket(bStarted).Put(o.id, []byte{o.n})
	case opDrop:
		return o.drop(tx)
	}
	return nil
}

// applyCreated applies save o and create c, its activation's create, as
// one: what the two leave in the file, written once.
func (o *op) applyCreated(tx *bolt.Tx, c *op) error {
	if c.key != nil {
		if err := tx.Bucket(bKeys).Put(c.key, c.id); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bRecords).Put(o.id, o.rec); err != nil {
		return err
	}
	if o.flags&saveResult != 0 {
		if err := tx.Bucket(bResults).Put(o.id, nonNil(o.data)); err != nil {
			return err
		}
	}
	if o.flags&saveSucceeded == 0 {
		if err := tx.Bucket(bBodies).Put(o.id, nonNil(c.data)); err != nil {
			return err
		}
	}
	if o.flags&saveOwed != 0 {
		if err := tx.Bucket(bPending).Put(o.id, present); err != nil {
			return err
		}
	}
	if o.flags&saveDead != 0 {
		return tx.Bucket(bDead).Put(o.id, present)
	}
	return nil
}

// present is the value of a key in the pending and dead lists. Not nil:
// within the transaction that put it, bbolt's Get returns the value as
// put, and a nil value reads as no key (TestListMembershipInOneTransaction).
var present = []byte{}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// drop deletes the finished activations o.ids with their bodies, results
// and idempotency keys (one that is owed something again, redriven since
// it was listed, stays).
func (o *op) drop(tx *bolt.Tx) error {
	recs := tx.Bucket(bRecords)
	for _, id := range o.ids {
		k := []byte(id)
		v := recs.Get(k)
		if v == nil || tx.Bucket(bPending).Get(k) != nil {
			continue
		}
		var r Record
		if decodeRecord(v, &r) == nil && r.Key != "" {
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
		o.dropped++
	}
	return nil
}
