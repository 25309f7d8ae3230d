//go:build !spry_crash

// Package crash names the points of Spry's data-plane protocols where a
// process may die (alloc, forward, send, receive, complete, reclaim,
// drain). Tests built with the spry_crash tag can stop a process, or a
// goroutine standing in for one, dead at a named point (see arm.go) and
// check that nothing is lost, doubled or leaked. In every other build Point
// is empty and inlined away: the hot path pays nothing.
package crash

// Enabled reports whether this build can stop at crash points.
const Enabled = false

// Point marks a place where the calling process may die.
func Point(name string) {}
