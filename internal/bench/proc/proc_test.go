package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// comm with spaces and parentheses, as the kernel writes it.
	b := []byte("1234 (spry fn (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 8 0 12345 0 0\n")
	comm, cpu, err := parseStat(b)
	if err != nil || comm != "spry fn (x)" || cpu != 287*ClockTick {
		t.Fatalf("got %q %v %v", comm, cpu, err)
	}
	if _, _, err := parseStat([]byte("1 (x) S 1")); err == nil {
		t.Fatal("short stat parsed")
	}
}

func TestParseStatusAndIO(t *testing.T) {
	v, iv := parseSwitches([]byte("Name:\tspry\nvoluntary_ctxt_switches:\t  42\nnonvoluntary_ctxt_switches:\t7\n"))
	if v != 42 || iv != 7 {
		t.Fatalf("switches %d %d", v, iv)
	}
	r, w, ok := parseIO([]byte("rchar: 1\nwchar: 2\nsyscr: 30\nsyscw: 40\nread_bytes: 0\n"))
	if !ok || r != 30 || w != 40 {
		t.Fatalf("io %d %d %v", r, w, ok)
	}
	if _, _, ok := parseIO([]byte("rchar: 1\n")); ok {
		t.Fatal("io without syscr parsed")
	}
}

// A fake procfs: two snapshots of a process whose thread exited between
// them falls back to the tick count; a new process is charged from zero.
func TestSubAndFallback(t *testing.T) {
	a := Snapshot{Procs: map[int]Usage{
		1: {PID: 1, CPUTick: 100 * time.Millisecond, CPUNano: 104 * time.Millisecond, VolCS: 10, SysR: 5, SysW: 5},
		2: {PID: 2, CPUTick: 0, CPUNano: 1 * time.Millisecond},
	}}
	b := Snapshot{Procs: map[int]Usage{
		1: {PID: 1, CPUTick: 300 * time.Millisecond, CPUNano: 150 * time.Millisecond, VolCS: 8, SysR: 15, SysW: 25},
		2: {PID: 2, CPUTick: 10 * time.Millisecond, CPUNano: 13500 * time.Microsecond, VolCS: 3},
		3: {PID: 3, CPUTick: 20 * time.Millisecond, CPUNano: 21 * time.Millisecond, InvolCS: 2},
	}}
	cs := b.Sub(a)
	if len(cs) != 3 {
		t.Fatalf("%d costs", len(cs))
	}
	if cs[0].CPU != 200*time.Millisecond || cs[0].VolCS != 0 || cs[0].Syscalls() != 30 {
		t.Errorf("pid 1: %+v (want the tick count, a clamped switch count, 30 syscalls)", cs[0])
	}
	if cs[1].CPU != 12500*time.Microsecond {
		t.Errorf("pid 2: %v, want the precise 12.5ms", cs[1].CPU)
	}
	if !cs[2].New || cs[2].CPU != 21*time.Millisecond || cs[2].CtxSw() != 2 {
		t.Errorf("pid 3: %+v", cs[2])
	}
	if tot := Total(cs); tot.CPU != cs[0].CPU+cs[1].CPU+cs[2].CPU || tot.SysW != 20 {
		t.Errorf("total %+v", tot)
	}
}

func TestFakeProcfs(t *testing.T) {
	root := t.TempDir()
	old := Root
	Root = root
	defer func() { Root = old }()
	write := func(p, s string) {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(s), 0o644)
	}
	write("10/stat", "10 (node) S 1 10 10 0 -1 0 0 0 0 0 3 2 0 0 20 0 2 0 1 0 0\n")
	write("10/io", "syscr: 7\nsyscw: 9\n")
	write("10/task/10/schedstat", "1000000 0 5\n")
	write("10/task/10/status", "voluntary_ctxt_switches: 3\nnonvoluntary_ctxt_switches: 1\n")
	write("10/task/10/children", "11\n")
	write("10/task/12/schedstat", "2000000 0 5\n")
	write("10/task/12/status", "voluntary_ctxt_switches: 4\nnonvoluntary_ctxt_switches: 0\n")
	write("11/stat", "11 (fn) S 10 10 10 0 -1 0 0 0 0 0 1 0 0 0 20 0 1 0 1 0 0\n")
	write("11/task/11/schedstat", "500 0 1\n")
	write("11/task/11/status", "voluntary_ctxt_switches: 1\n")
	s := Take([]int{10})
	if len(s.Procs) != 2 {
		t.Fatalf("procs %v", s.Procs)
	}
	n := s.Procs[10]
	if n.Comm != "node" || n.CPUTick != 5*ClockTick || n.CPUNano != 3*time.Millisecond || n.Threads != 2 || n.VolCS != 7 || n.InvolCS != 1 || !n.IOOK || n.SysR != 7 {
		t.Errorf("node %+v", n)
	}
	if f := s.Procs[11]; f.IOOK || f.VolCS != 1 {
		t.Errorf("fn %+v", f)
	}
	if got := CPUOf([]int{10, 11, 99}); got != 6*ClockTick {
		t.Errorf("CPUOf %v", got)
	}
}

// The real /proc: a child that burns CPU is charged for it.
func TestRealProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux /proc")
	}
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5")
	if err := cmd.Start(); err != nil {
		t.Skip("no sh:", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	before := Take([]int{cmd.Process.Pid})
	time.Sleep(300 * time.Millisecond)
	after := Take([]int{cmd.Process.Pid})
	cs := after.Sub(before)
	tot := Total(cs)
	if tot.CPU <= 0 {
		t.Skip("the child finished its loop before the first snapshot")
	}
	if tot.CPU > time.Second {
		t.Errorf("CPU %v in 300ms", tot.CPU)
	}
	if os.Geteuid() == 0 && !tot.IOOK {
		t.Errorf("root could not read /proc/PID/io")
	}
}
