//go:build spry_crash

package crash

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether this build can stop at crash points.
const Enabled = true

// EnvPoint arms a point in a process at its start: NAME, or NAME@N to die
// at the N-th pass (1 = the first).
const EnvPoint = "CRASH_POINT" // not SPRY_: a function's env: in spry.yaml may set it

var (
	mu    sync.Mutex
	armed = map[string]*arm{}
	hits  = map[string]*atomic.Uint64{} // under mu; a map, not a sync.Map: a pass allocates nothing (the transports' zero-alloc tests run in this build too)
)

type arm struct {
	at   uint64 // die at this pass
	seen atomic.Uint64
	stop func() // how to die: nil kills the process
	gid  uint64 // only this goroutine (0: any)
}

func init() {
	if s := os.Getenv(EnvPoint); s != "" {
		name, n := s, uint64(1)
		if i := strings.IndexByte(s, '@'); i >= 0 {
			name = s[:i]
			n, _ = strconv.ParseUint(s[i+1:], 10, 64)
		}
		armed[name] = &arm{at: max(n, 1)}
	}
}

// Point marks a place where the calling process may die: if the point is
// armed and this is its pass, the process is killed (SIGKILL, no defers,
// no exit handlers), or, when armed by Goroutine, the armed goroutine ends
// there (runtime.Goexit).
func Point(name string) {
	mu.Lock()
	c := hits[name]
	if c == nil {
		c = new(atomic.Uint64)
		hits[name] = c
	}
	a := armed[name]
	mu.Unlock()
	c.Add(1)
	if a == nil || (a.gid != 0 && a.gid != goid()) {
		return
	}
	if a.seen.Add(1) != a.at {
		return
	}
	if a.stop != nil {
		a.stop()
		runtime.Goexit()
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// Goroutine arms name for the calling goroutine: it ends at its first pass
// there, after calling died. The returned function disarms the point.
func Goroutine(name string, died func()) (disarm func()) {
	mu.Lock()
	armed[name] = &arm{at: 1, stop: died, gid: goid()}
	mu.Unlock()
	return func() {
		mu.Lock()
		delete(armed, name)
		mu.Unlock()
	}
}

// Hits returns how often the point was passed in this process.
func Hits(name string) uint64 {
	mu.Lock()
	c := hits[name]
	mu.Unlock()
	if c == nil {
		return 0
	}
	return c.Load()
}

// goid returns the calling goroutine's id (from its stack header).
func goid() uint64 {
	var b [64]byte
	s := b[:runtime.Stack(b[:], false)]
	s = s[len("goroutine "):]
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, _ := strconv.ParseUint(string(s[:i]), 10, 64)
	return n
}
