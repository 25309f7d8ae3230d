package bench

import "time"

// startCPU anchors ThreadCPU in a wasm function, which has no CPU clock.
var startCPU = time.Now()

// ThreadCPU returns the time since the module started: a wasm guest runs
// on one thread of its host at a time and has no clock of a thread's CPU
// time (with the clock grant the host's monotonic clock stands in).
func ThreadCPU() time.Duration { return time.Since(startCPU) }
