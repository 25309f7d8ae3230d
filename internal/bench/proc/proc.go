// Package proc reads what a process has cost so far from /proc: CPU time,
// voluntary and involuntary context switches, and read/write system calls,
// so a benchmark can charge a system under test per request.
//
//	before, _ := proc.Take(pids)      // the processes and all their descendants
//	… load …
//	after, _ := proc.Take(pids)
//	d := after.Sub(before)            // per process, and d.Total()
//
// What is counted, per process (all its threads):
//
//   - CPU: user + system time. Read from /proc/PID/task/*/schedstat
//     (nanoseconds, live threads) and /proc/PID/stat (clock ticks, every
//     thread that ever ran); a delta uses the precise figure unless a thread
//     exited meanwhile, then the coarse one.
//   - context switches: voluntary and involuntary, summed over the live
//     threads' /proc/PID/task/TID/status.
//   - syscalls: syscr and syscw of /proc/PID/io — the kernel's count of
//     read-class (read, readv, pread…) and write-class (write, writev…)
//     calls. Socket calls that bypass the VFS read/write path (sendto,
//     sendmsg, recvmsg, recvmmsg) are not in it. Reading another user's
//     io file needs root.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

// ErrNoIO: /proc/PID/io could not be read (not root, or not Linux).
var ErrNoIO = errors.New("proc: /proc/PID/io not readable")

// Root is where procfs is mounted (tests point it elsewhere).
var Root = "/proc"

// ClockTick is the unit of utime and stime in /proc/PID/stat.
const ClockTick = 10 * time.Millisecond // USER_HZ = 100 on every Linux ABI Go supports

// Usage is one process's counters at one moment.
type Usage struct {
	PID     int
	Comm    string
	CPUTick time.Duration // utime+stime from stat (all threads, ever)
	CPUNano time.Duration // sum of live threads' schedstat run time
	Threads int
	VolCS   uint64 // voluntary context switches (live threads)
	InvolCS uint64 // involuntary context switches (live threads)
	SysR    uint64 // read-class syscalls
	SysW    uint64 // write-class syscalls
	IOOK    bool   // SysR and SysW were readable
}

// Snapshot is the usage of a set of processes at one moment.
type Snapshot struct {
	At    time.Time
	Procs map[int]Usage
}

// Descendants returns pid and every process below it.
func Descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = appendChildren(out, out[i])
	}
	return out
}

// Children returns pid's children (those of all its threads).
func Children(pid int) []int {
	return appendChildren(nil, pid)
}

func appendChildren(out []int, pid int) []int {
	tasks, _ := os.ReadDir(filepath.Join(Root, strconv.Itoa(pid), "task"))
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(Root, strconv.Itoa(pid), "task", t.Name(), "children"))
		if err != nil {
			continue
		}
		for _, f := range bytes.Fields(b) {
			if c, err := strconv.Atoi(string(f)); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// Take reads the usage of every process in roots and of their descendants.
// Processes that vanish while it reads are left out.
func Take(roots []int) Snapshot {
	s := Snapshot{At: time.Now(), Procs: map[int]Usage{}}
	for _, r := range roots {
		for _, pid := range Descendants(r) {
			if _, ok := s.Procs[pid]; ok {
				continue
			}
			if u, err := Read(pid); err == nil {
				s.Procs[pid] = u
			}
		}
	}
	return s
}

// Read reads one process's usage.
func Read(pid int) (Usage, error) {
	dir := filepath.Join(Root, strconv.Itoa(pid))
	u := Usage{PID: pid}
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return u, fmt.Errorf("proc: %w", err)
	}
	if u.Comm, u.CPUTick, err = parseStat(stat); err != nil {
		return u, fmt.Errorf("proc: %s/stat: %w", dir, err)
	}
	tasks, _ := os.ReadDir(filepath.Join(dir, "task"))
	for _, t := range tasks {
		td := filepath.Join(dir, "task", t.Name())
		if b, err := os.ReadFile(filepath.Join(td, "schedstat")); err == nil {
			if f := bytes.Fields(b); len(f) > 0 {
				ns, _ := strconv.ParseInt(string(f[0]), 10, 64)
				u.CPUNano += time.Duration(ns)
			}
		}
		if b, err := os.ReadFile(filepath.Join(td, "status")); err == nil {
			v, iv := parseSwitches(b)
			u.VolCS += v
			u.InvolCS += iv
			u.Threads++
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "io")); err == nil {
		u.SysR, u.SysW, u.IOOK = parseIO(b)
	}
	return u, nil
}

// parseStat returns comm and utime+stime from /proc/PID/stat.
func parseStat(b []byte) (string, time.Duration, error) {
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open {
		return "", 0, errors.New("no comm")
	}
	comm := string(b[open+1 : close])
	// After ") ": state(3) ppid(4) … utime(14) stime(15).
	f := bytes.Fields(b[close+1:])
	if len(f) < 13 {
		return comm, 0, errors.New("short")
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return comm, 0, errors.New("bad utime/stime")
	}
	return comm, time.Duration(ut+st) * ClockTick, nil
}

func parseSwitches(b []byte) (vol, invol uint64) {
	for _, l := range bytes.Split(b, []byte{'\n'}) {
		k, v, ok := bytes.Cut(l, []byte{':'})
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "voluntary_ctxt_switches":
			vol = n
		case "nonvoluntary_ctxt_switches":
			invol = n
		}
	}
	return vol, invol
}

func parseIO(b []byte) (r, w uint64, ok bool) {
	var gotR, gotW bool
	for _, l := range bytes.Split(b, []byte{'\n'}) {
		k, v, found := bytes.Cut(l, []byte{':'})
		if !found {
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "syscr":
			r, gotR = n, true
		case "syscw":
			w, gotW = n, true
		}
	}
	return r, w, gotR && gotW
}

// Cost is what a process spent between two snapshots.
type Cost struct {
	PID     int
	Comm    string
	CPU     time.Duration
	VolCS   uint64
	InvolCS uint64
	SysR    uint64
	SysW    uint64
	IOOK    bool
	New     bool // the process appeared after the first snapshot (counted from zero)
}

// CtxSw returns all context switches.
func (c Cost) CtxSw() uint64 { return c.VolCS + c.InvolCS }

// Syscalls returns the read- and write-class system calls.
func (c Cost) Syscalls() uint64 { return c.SysR + c.SysW }

// Add adds o to c.
func (c *Cost) Add(o Cost) {
	c.CPU += o.CPU
	c.VolCS += o.VolCS
	c.InvolCS += o.InvolCS
	c.SysR += o.SysR
	c.SysW += o.SysW
	c.IOOK = c.IOOK || o.IOOK
}

// cpuDelta is the CPU a process used between a and b: the nanosecond sum
// of its live threads, unless that is implausibly below the tick count
// (threads that exited took their time with them), then the tick count.
func cpuDelta(a, b Usage) time.Duration {
	nano := b.CPUNano - a.CPUNano
	tick := b.CPUTick - a.CPUTick
	if nano < 0 || nano < tick-2*ClockTick {
		return max(tick, 0)
	}
	return nano
}

func sub(a, b uint64) uint64 {
	if b < a {
		return 0 // a thread exited: its count left the sum
	}
	return b - a
}

// Sub returns the cost of every process in s since before. A process that
// is in s but not in before is charged from zero (it started meanwhile).
func (s Snapshot) Sub(before Snapshot) []Cost {
	var out []Cost
	for pid, b := range s.Procs {
		a, ok := before.Procs[pid]
		if !ok {
			a = Usage{PID: pid}
		}
		out = append(out, Cost{
			PID: pid, Comm: b.Comm, CPU: cpuDelta(a, b),
			VolCS: sub(a.VolCS, b.VolCS), InvolCS: sub(a.InvolCS, b.InvolCS),
			SysR: sub(a.SysR, b.SysR), SysW: sub(a.SysW, b.SysW), IOOK: b.IOOK, New: !ok,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// Total sums costs.
func Total(cs []Cost) Cost {
	var t Cost
	for _, c := range cs {
		t.Add(c)
	}
	return t
}

// CPUOf returns the total CPU of the processes in s (for sampling CPU over
// time cheaply: only the stat file, not every thread).
func CPUOf(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join(Root, strconv.Itoa(pid), "stat"))
		if err != nil {
			continue
		}
		if _, t, err := parseStat(b); err == nil {
			total += t
		}
	}
	return total
}
