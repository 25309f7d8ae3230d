package mono

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Now must read the same clock as CLOCK_MONOTONIC, since other processes
// (and the kernel) compare against it.
func TestMatchesClockMonotonic(t *testing.T) {
	var ts unix.Timespec
	before := Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	after := Now()
	if c := ts.Nano(); c < before || c > after {
		t.Fatalf("CLOCK_MONOTONIC %d not within [%d, %d]", c, before, after)
	}
}
