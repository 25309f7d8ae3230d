// Package bpftest holds the one rule for tests that need eBPF: skip, with
// the reason, where this process may not load it; fail instead when
// SPRY_REQUIRE_BPF=1 (CI sets it, so a lost capability cannot turn the
// eBPF tests into silent skips).
package bpftest

import (
	"os"
	"testing"

	"github.com/spry-dev/spry/internal/bpf"
)

// EnvRequire names the variable that turns skips into failures.
const EnvRequire = "SPRY_REQUIRE_BPF"

// Unavailable skips tb because of err, or fails it when EnvRequire is 1.
func Unavailable(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv(EnvRequire) == "1" {
		tb.Fatalf("eBPF required (%s=1) but unavailable: %v", EnvRequire, err)
	}
	tb.Skipf("eBPF unavailable (set %s=1 to fail instead): %v", EnvRequire, err)
}

// New loads a fresh Sockmap, closed when tb ends, or calls Unavailable.
func New(tb testing.TB) *bpf.Sockmap {
	tb.Helper()
	sm, err := bpf.New()
	if err != nil {
		Unavailable(tb, err)
	}
	tb.Cleanup(func() { sm.Close() })
	return sm
}
