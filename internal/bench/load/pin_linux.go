package load

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// pinThreads runs every thread of this process on cpus only (threads made
// later inherit that from the thread that makes them), and returns what
// puts every thread back on the CPUs the process had. The load generator
// is this process: pinned, it keeps off the cores left to the system
// under test, and its share of the machine stops drifting between runs.
func pinThreads(cpus []int) (restore func(), err error) {
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		return nil, err
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	if err := eachThread(func(tid int) error { return unix.SchedSetaffinity(tid, &set) }); err != nil {
		eachThread(func(tid int) error { return unix.SchedSetaffinity(tid, &was) })
		return nil, err
	}
	return func() { eachThread(func(tid int) error { return unix.SchedSetaffinity(tid, &was) }) }, nil
}

// eachThread calls fn for every thread of this process (a thread that
// exits meanwhile is skipped); the first other error stops it.
func eachThread(fn func(tid int) error) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := fn(tid); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}
