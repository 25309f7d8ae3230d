// Package mono reads the monotonic clock that every process on a node shares.
//
// Hop timestamps in the pool are written by the gateway and by instances in
// different processes, so they must come from one clock: CLOCK_MONOTONIC.
// Go's runtime reads it through the vDSO (~25 ns, no syscall); Now exposes
// that reading as nanoseconds.
package mono

import _ "unsafe" // for go:linkname

//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Now returns CLOCK_MONOTONIC in nanoseconds. Values are comparable across
// processes on the same machine.
func Now() int64 { return nanotime() }
