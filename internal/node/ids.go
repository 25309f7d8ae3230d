package node

import (
	"errors"
	"sync"

	"github.com/spry-dev/spry/internal/pool"
)

// ids hands out node-wide endpoint ids (1..65532; 65533 is pool.OwnerJoined, 65534
// pool.OwnerShared, 65535 pool.OwnerDaemon) for instances and
// gateway endpoints. It goes round the whole space before reusing an id, so
// a descriptor that names a dead instance is very unlikely to find a new
// one under the same id (and the buffer generation catches it if it does).
type ids struct {
	mu   sync.Mutex
	used [1 << 16]bool
	next uint16
}

var errNoIDs = errors.New("node: all 65532 endpoint ids are in use")

func (s *ids) alloc() (uint16, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 1 << 16 {
		s.next++
		if s.next != 0 && s.next < pool.OwnerJoined && !s.used[s.next] {
			s.used[s.next] = true
			return s.next, nil
		}
	}
	return 0, errNoIDs
}

func (s *ids) free(id uint16) {
	s.mu.Lock()
	s.used[id] = false
	s.mu.Unlock()
}
