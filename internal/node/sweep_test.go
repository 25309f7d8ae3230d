package node

import (
	"testing"

	"github.com/spry-dev/spry/internal/pool"
)

// The quiescent sweep leaves shared buffers and joins' inputs to the
// pool's audit, but only when their word could be one: such a buffer is
// never in transit, so a word that says so was scribbled and is lost.
func TestOwnedByPool(t *testing.T) {
	for _, c := range []struct {
		o    pool.Own
		want bool
	}{
		{pool.Own{Gen: 3, Holder: pool.OwnerShared}, true},
		{pool.Own{Gen: 3, Holder: pool.OwnerJoined}, true},
		{pool.Own{Gen: 3, Holder: pool.OwnerShared, Transit: 7}, false},
		{pool.Own{Gen: 3, Holder: pool.OwnerJoined, Transit: pool.OwnerDaemon}, false},
		{pool.Own{Gen: 3, Holder: 7}, false},
		{pool.Own{Gen: 3, Holder: pool.OwnerDaemon}, false},
	} {
		if got := ownedByPool(c.o); got != c.want {
			t.Errorf("ownedByPool(%+v) = %v, want %v", c.o, got, c.want)
		}
	}
}
