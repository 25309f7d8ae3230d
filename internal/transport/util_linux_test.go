package transport

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// dupFile returns a new *os.File for a duplicate of fd (fd stays open and
// owned by its owner).
func dupFile(fd int, name string) (*os.File, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(d), name), nil
}

// resources lists this process's open fds of the kinds transports make:
// sockets, BPF objects, memfds (pools).
func resources() []string {
	es, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range es {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue
		}
		if strings.HasPrefix(l, "socket:") || strings.Contains(l, "bpf") || strings.HasPrefix(l, "/memfd:") {
			out = append(out, e.Name()+" -> "+l)
		}
	}
	slices.Sort(out)
	return out
}

// checkLeaks runs the tests, then fails the run if they left sockets, BPF
// objects or pools open.
func checkLeaks(run func() int, cleanup func()) int {
	before := resources()
	code := run()
	cleanup()
	var leaked []string
	for range 50 { // closes by finalizers or exiting goroutines may lag
		leaked = leaked[:0]
		for _, r := range resources() {
			if !slices.Contains(before, r) {
				leaked = append(leaked, r)
			}
		}
		if len(leaked) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(leaked) > 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "tests leaked %d fds:\n  %s\n", len(leaked), strings.Join(leaked, "\n  "))
		return 1
	}
	return code
}
