package runtime

import (
	"strconv"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/mono"
)

// An adapter's wait ends by the node's deadline less the margin, counted
// from when the node started the process, however late the adapter itself
// got going; its own --ready-timeout still bounds it.
func TestAdapterTimeout(t *testing.T) {
	t.Setenv(EnvReadyBy, "")
	if got := AdapterTimeout(2 * time.Second); got != 2*time.Second {
		t.Errorf("without %s: %v, want its own 2s", EnvReadyBy, got)
	}
	began := mono.Now()
	t.Setenv(EnvReadyBy, ReadyBy(3*time.Second)) // the node's 3 s: the adapter's by 2 s from then
	got := AdapterTimeout(0)
	if took := time.Duration(mono.Now() - began); got < 2*time.Second-took || got > 2*time.Second {
		t.Errorf("node's 3 s, no limit of its own: %v (%v after), want what is left of the 2 s to the node's deadline less 1 s", got, took)
	}
	t.Setenv(EnvReadyBy, ReadyBy(time.Hour))
	if got := AdapterTimeout(time.Second); got != time.Second {
		t.Errorf("its own 1 s, long before the node's deadline: %v", got)
	}
	t.Setenv(EnvReadyBy, strconv.FormatInt(mono.Now()-int64(time.Second), 10))
	if got := AdapterTimeout(2 * time.Second); got <= 0 || got > time.Millisecond {
		t.Errorf("deadline passed: %v, want at once (not 0, which is no limit)", got)
	}
}
