package transport

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/spry-dev/spry/internal/pool"
)

// The endpoint table: entry i is pool.Ring(i), RingBytes long, and its
// first 8 bytes are the entry's word, shared by every process of the app:
//
//	bits 63..48  owner: the instance id the entry belongs to (0: free)
//	bits 47..0   the transport's counter (skmsg: descriptors in flight to
//	             the endpoint; rings: the producers' position)
//
// Keeping the owner and the counter in one word lets a sender check that
// the entry still belongs to its destination and reserve room in one
// compare-and-swap: an entry that changed hands in between fails the CAS.
const (
	ownerShift = 48
	lowMask    = 1<<ownerShift - 1
)

func ownerOf(w uint64) uint16 { return uint16(w >> ownerShift) }

// skmsgEntryBytes is the endpoint table entry a skmsg endpoint needs: one
// cache line, so senders to different endpoints do not share one.
const skmsgEntryBytes = 64

// maxEndpoints bounds the table so an entry index fits the 16 bits the
// directory cache gives it.
const maxEndpoints = 1 << 16

var errNoTable = errors.New("transport: the pool has no endpoint table (see PoolLayout)")

// table is one process's view of an app's endpoint table.
type table struct {
	base   unsafe.Pointer // entry 0
	stride uintptr        // RingBytes
	n      uint32         // entries
	cache  [dirCache]atomic.Uint32
}

// dirCache is the size of a sender's id → entry cache (direct-mapped).
const dirCache = 1024

func newTable(p *pool.Pool, minBytes uint32) (*table, error) {
	if p == nil {
		return nil, errNoTable
	}
	l := p.Layout()
	if l.RingBytes == 0 || l.Endpoints == 0 {
		return nil, errNoTable
	}
	if l.RingBytes < minBytes {
		return nil, fmt.Errorf("transport: endpoint entries of %d bytes, this transport needs %d (see PoolLayout)", l.RingBytes, minBytes)
	}
	if l.Endpoints > maxEndpoints {
		return nil, fmt.Errorf("transport: %d endpoints, at most %d", l.Endpoints, maxEndpoints)
	}
	return &table{
		base:   unsafe.Pointer(&p.Ring(0)[0]),
		stride: uintptr(l.RingBytes),
		n:      l.Endpoints,
	}, nil
}

// entry returns the start of entry i (i < t.n).
func (t *table) entry(i uint32) unsafe.Pointer {
	return unsafe.Add(t.base, uintptr(i)*t.stride)
}

// word returns entry i's word.
func (t *table) word(i uint32) *atomic.Uint64 { return (*atomic.Uint64)(t.entry(i)) }

// find returns the entry owned by id. The answer may be stale by the time
// the caller uses it; callers confirm ownership in their CAS. fresh skips
// the cache (after a CAS found the entry had changed hands).
//
// A hit costs one load of a process-local cache word and one load of the
// entry's word; a miss scans the table (senders miss on a destination's
// first use and after it was replaced).
func (t *table) find(id uint16, fresh bool) (uint32, bool) {
	if id == 0 {
		return 0, false
	}
	c := &t.cache[id%dirCache]
	if !fresh {
		if e := c.Load(); uint16(e>>16) == id {
			i := e & 0xffff
			if ownerOf(t.word(i).Load()) == id {
				return i, true
			}
		}
	}
	for i := range t.n {
		if ownerOf(t.word(i).Load()) == id {
			c.Store(uint32(id)<<16 | i)
			return i, true
		}
	}
	return 0, false
}

// freeList hands out entry indices first in, first out, so a removed
// endpoint's entry is reused as late as possible. Only the daemon's
// fabric uses it, under the fabric's lock.
type freeList struct {
	q []uint32
}

func newFreeList(n uint32) freeList {
	q := make([]uint32, n)
	for i := range q {
		q[i] = uint32(i)
	}
	return freeList{q: q}
}

// take returns the first index for which ok returns true; indices it
// passes over go to the back.
func (f *freeList) take(ok func(uint32) bool) (uint32, bool) {
	for range len(f.q) {
		i := f.q[0]
		f.q = f.q[1:]
		if ok(i) {
			return i, true
		}
		f.q = append(f.q, i)
	}
	return 0, false
}

func (f *freeList) put(i uint32) { f.q = append(f.q, i) }

// disown clears the owner of every entry of t on the list. None is given
// out, so an owner there was written by a process of the app; left, it
// would stand in for that endpoint for good: a sender that looks the id up
// (a new process, or one whose cached entry changed hands) scans the
// table in order and may find it first, then sends into a ring nobody
// reads, or reserves room nobody gives back.
func (f *freeList) disown(t *table) {
	for _, i := range f.q {
		w := t.word(i)
		for v := w.Load(); ownerOf(v) != 0 && !w.CompareAndSwap(v, v&lowMask); v = w.Load() {
		}
	}
}

// removeAll removes every endpoint of a fabric: ends is its map of
// endpoints by id, read under mu, and remove its Remove. It returns the
// errors joined.
func removeAll[V any](mu *sync.Mutex, ends map[uint16]V, remove func(uint16) error) error {
	mu.Lock()
	ids := make([]uint16, 0, len(ends))
	for id := range ends {
		ids = append(ids, id)
	}
	mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, remove(id))
	}
	return errors.Join(errs...)
}
