package bench

import (
	"strings"
	"testing"
	"time"
)

// Bad options of spry bench recovery are refused, each naming its flag,
// before any cluster starts.
func TestRecoveryOptionsRefused(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		o    RecoveryOptions
		want string
	}{
		{RecoveryOptions{Nodes: 2}, "--nodes 2"},
		{RecoveryOptions{Runs: -1}, "--runs -1"},
		{RecoveryOptions{Lease: 1500 * time.Millisecond}, "--lease 1.5s"},
		{RecoveryOptions{Lease: time.Second, Heartbeat: time.Second}, "--lease 1s"},
	} {
		if err := c.o.fill(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.o, err, c.want)
		}
	}
	o := RecoveryOptions{}
	if err := o.fill(); err != nil || o.Nodes != 3 || o.Runs != 3 || o.Lease != 2*time.Second {
		t.Fatalf("defaults: %v, %+v", err, o)
	}
}
