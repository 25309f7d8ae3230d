package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// UIDLockDir is where nodes on one host lease the uids of their apps: a
// node holds an exclusive lock on UIDLockDir/UID.lock for every uid its
// apps run under, so two nodes never hand one uid to two apps (which could
// then reach each other's pools through /proc). The kernel drops a dead
// node's locks with it.
var UIDLockDir = "/run/spry/uids"

// ErrNoUIDs is returned when every uid of the range is leased.
var ErrNoUIDs = errors.New("every uid of the range is in use by an app of this or another spry node")

// uidLeases are the uids this node holds.
type uidLeases struct {
	mu   sync.Mutex
	held map[int]*uidLease
}

// uidLease is one leased uid, shared by the generations of one app that
// run side by side during a reload.
type uidLease struct {
	ls   *uidLeases
	uid  int
	file *os.File
	refs int
}

// take leases the lowest uid of r that no app of any node on this host
// holds.
func (ls *uidLeases) take(r UIDRange) (*uidLease, error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.held == nil {
		ls.held = map[int]*uidLease{}
	}
	if err := os.MkdirAll(UIDLockDir, 0o700); err != nil {
		return nil, fmt.Errorf("uid leases: %w", err)
	}
	for uid := r.First; uid <= r.Last; uid++ {
		if ls.held[uid] != nil {
			continue
		}
		f, err := os.OpenFile(filepath.Join(UIDLockDir, strconv.Itoa(uid)+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("uid leases: %w", err)
		}
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("uid leases: %w", err)
		}
		if !ok {
			f.Close()
			continue
		}
		l := &uidLease{ls: ls, uid: uid, file: f, refs: 1}
		ls.held[uid] = l
		return l, nil
	}
	return nil, fmt.Errorf("uids %d-%d: %w (--app-uids sets another range)", r.First, r.Last, ErrNoUIDs)
}

// share counts one more app generation on the lease; nil when the lease
// was already given back (its last app closed).
func (l *uidLease) share() *uidLease {
	l.ls.mu.Lock()
	defer l.ls.mu.Unlock()
	if l.refs <= 0 {
		return nil
	}
	l.refs++
	return l
}

// release drops one generation's hold; the last one gives the uid back.
func (l *uidLease) release() {
	l.ls.mu.Lock()
	defer l.ls.mu.Unlock()
	if l.refs--; l.refs > 0 {
		return
	}
	delete(l.ls.held, l.uid)
	l.file.Close() // drops the lock
}

// closeAll gives back every uid still held.
func (ls *uidLeases) closeAll() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for uid, l := range ls.held {
		l.file.Close()
		delete(ls.held, uid)
	}
}
