//go:build race

package pool

// raceEnabled: the race detector is on. Its atomics run in C, where a
// fault on a read-only mapping cannot be recovered from.
const raceEnabled = true
