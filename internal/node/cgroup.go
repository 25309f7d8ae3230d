package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spry-dev/spry/internal/config"
)

// Functions with limits: {memory, cpu} run each instance in a cgroup of its
// own, below the node's cgroup, so the kernel enforces the limits and tells
// which instance it killed for memory. Both cgroup versions work:
//
//   - v1 (one hierarchy per controller, as on this project's CI machines):
//     memory.limit_in_bytes and cpu.cfs_quota_us in the memory and cpu
//     hierarchies; an instance is moved into its groups right after it
//     starts (before it is ready; memory.move_charge_at_immigrate carries
//     what it used until then along), and an OOM kill shows in
//     memory.oom_control's oom_kill count.
//   - v2 (unified): memory.max, memory.swap.max and cpu.max; an instance is
//     started inside its group (clone3 CLONE_INTO_CGROUP), and an OOM kill
//     shows in memory.events. The node enables the memory and cpu
//     controllers below its own cgroup; if processes live in that cgroup
//     (the "no internal processes" rule), it first moves itself into a
//     leaf, spry-daemon, beside the instances' groups.
//
// On a hybrid host (v1 controllers and an empty v2 hierarchy) a controller
// mounted on v1 is used there. Without root, or without a cgroup that the
// node may write (v2 delegation), a function with limits fails to start
// with the reason: limits are never silently left out.

// cgroupRoot is where cgroup hierarchies are mounted; mountinfo is read to
// find them. Tests point them elsewhere.
var (
	cgroupMountinfo = "/proc/self/mountinfo"
	cgroupSelf      = "/proc/self/cgroup"
)

// cgroups is the node's place in the cgroup hierarchies.
type cgroups struct {
	v2        bool   // memory and cpu are on the unified hierarchy
	mem, cpu  string // v1: the node's directories in the memory and cpu hierarchies; v2: both the same
	made      []string
	available error // why limits cannot be enforced, when they cannot
}

// errCgroups is returned when a function has limits the node cannot apply.
var errCgroups = errors.New("cgroups: cannot enforce limits")

// newCgroups finds the memory and cpu controllers and makes the node's
// group in each, named spry-PID, after removing those of nodes that are no
// longer running.
func newCgroups() (*cgroups, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCgroups, err)
	}
	self, err := os.ReadFile(cgroupSelf)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCgroups, err)
	}
	paths := parseProcCgroup(self)
	name := "spry-" + strconv.Itoa(os.Getpid())
	cg := &cgroups{}
	dirOf := func(ctl string) (string, bool) {
		m, ok := mounts[ctl]
		if !ok {
			return "", false
		}
		p := paths[ctl]
		if m.v2 {
			p = paths[""]
		}
		p = strings.TrimPrefix(p, m.root)
		return filepath.Join(m.dir, p), true
	}
	memDir, memOK := dirOf("memory")
	cpuDir, cpuOK := dirOf("cpu")
	if !memOK || !cpuOK {
		return nil, fmt.Errorf("%w: no memory and cpu controllers mounted", errCgroups)
	}
	if mounts["memory"].v2 != mounts["cpu"].v2 {
		return nil, fmt.Errorf("%w: memory and cpu controllers on different cgroup versions", errCgroups)
	}
	cg.v2 = mounts["memory"].v2
	if cg.v2 {
		if err := enableV2(memDir); err != nil {
			return nil, fmt.Errorf("%w: %v", errCgroups, err)
		}
		removeStale(memDir)
		cg.mem = filepath.Join(memDir, name)
		cg.cpu = cg.mem
		if err := os.Mkdir(cg.mem, 0o755); err != nil && !os.IsExist(err) {
			return nil, fmt.Errorf("%w: %v", errCgroups, err)
		}
		cg.made = append(cg.made, cg.mem)
		if err := os.WriteFile(filepath.Join(cg.mem, "cgroup.subtree_control"), []byte("+memory +cpu"), 0); err != nil {
			cg.close()
			return nil, fmt.Errorf("%w: enable memory and cpu below %s: %v", errCgroups, cg.mem, err)
		}
		return cg, nil
	}
	for _, d := range []struct {
		base string
		dst  *string
	}{{memDir, &cg.mem}, {cpuDir, &cg.cpu}} {
		removeStale(d.base)
		*d.dst = filepath.Join(d.base, name)
		if err := os.Mkdir(*d.dst, 0o755); err != nil && !os.IsExist(err) {
			cg.close()
			return nil, fmt.Errorf("%w: %v", errCgroups, err)
		}
		cg.made = append(cg.made, *d.dst)
	}
	return cg, nil
}

// enableV2 enables the memory and cpu controllers for the children of dir,
// moving the processes in dir into a leaf first when there are any.
func enableV2(dir string) error {
	ctl := filepath.Join(dir, "cgroup.subtree_control")
	err := os.WriteFile(ctl, []byte("+memory +cpu"), 0)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("enable memory and cpu below %s: %w", dir, err)
	}
	leaf := filepath.Join(dir, "spry-daemon")
	if err := os.Mkdir(leaf, 0o755); err != nil && !os.IsExist(err) {
		return err
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return err
	}
	for _, pid := range strings.Fields(string(procs)) {
		// One by one: each write moves one process (and its threads).
		os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(pid), 0)
	}
	if err := os.WriteFile(ctl, []byte("+memory +cpu"), 0); err != nil {
		return fmt.Errorf("enable memory and cpu below %s: %w", dir, err)
	}
	return nil
}

// removeStale removes the groups of spry nodes that no longer run (their
// instances died with them, so the groups are empty).
func removeStale(base string) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "spry-"))
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "spry-") || err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			removeTree(filepath.Join(base, e.Name()))
		}
	}
}

// removeTree removes a cgroup and the groups below it (rmdir, deepest
// first: a cgroup's files are not files).
func removeTree(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			removeTree(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir)
}

// close removes the node's groups.
func (cg *cgroups) close() {
	for _, d := range cg.made {
		removeTree(d)
	}
}

type cgroupMount struct {
	dir, root string
	v2        bool
}

// cgroupMounts maps each controller ("memory", "cpu") to where its
// hierarchy is mounted, preferring v1 (on a hybrid host the v2 hierarchy
// lacks the controllers the v1 ones hold).
func cgroupMounts() (map[string]cgroupMount, error) {
	b, err := os.ReadFile(cgroupMountinfo)
	if err != nil {
		return nil, err
	}
	out := map[string]cgroupMount{}
	var v2 *cgroupMount
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(f) || len(f) < 5 {
			continue
		}
		root, dir, fstype, super := f[3], f[4], f[sep+1], f[sep+3]
		switch fstype {
		case "cgroup2":
			v2 = &cgroupMount{dir: dir, root: root, v2: true}
		case "cgroup":
			for _, o := range strings.Split(super, ",") {
				if o == "memory" || o == "cpu" {
					out[o] = cgroupMount{dir: dir, root: root}
				}
			}
		}
	}
	if v2 != nil {
		ctls, _ := os.ReadFile(filepath.Join(v2.dir, "cgroup.controllers"))
		for _, c := range strings.Fields(string(ctls)) {
			if _, ok := out[c]; !ok && (c == "memory" || c == "cpu") {
				out[c] = *v2
			}
		}
	}
	return out, nil
}

// parseProcCgroup maps each v1 controller to the process's cgroup path in
// its hierarchy, and "" to the v2 path.
func parseProcCgroup(b []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[1] == "" {
			out[""] = f[2]
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			out[c] = f[2]
		}
	}
	return out
}

// instanceGroup is the cgroup of one instance slot.
type instanceGroup struct {
	cg       *cgroups
	mem, cpu string
	limits   config.FnLimits
	ooms     uint64 // the OOM kill count when the current process started
}

// group makes (or resets) the group of one instance slot with limits l.
func (cg *cgroups) group(name string, l config.FnLimits) (*instanceGroup, error) {
	g := &instanceGroup{cg: cg, mem: filepath.Join(cg.mem, name), cpu: filepath.Join(cg.cpu, name), limits: l}
	for _, d := range []string{g.mem, g.cpu} {
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return nil, fmt.Errorf("%w: %v", errCgroups, err)
		}
	}
	write := func(dir, file, v string) error {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0); err != nil {
			return fmt.Errorf("%w: %s: %v", errCgroups, file, err)
		}
		return nil
	}
	period := 100000
	if cg.v2 {
		mem, cpu := "max", "max "+strconv.Itoa(period)
		if l.Memory > 0 {
			mem = strconv.FormatUint(l.Memory, 10)
		}
		if l.CPU > 0 {
			cpu = strconv.Itoa(max(int(l.CPU*float64(period)), 1000)) + " " + strconv.Itoa(period)
		}
		if err := write(g.mem, "memory.max", mem); err != nil {
			return nil, err
		}
		if l.Memory > 0 {
			write(g.mem, "memory.swap.max", "0") // absent without swap accounting
		}
		if err := write(g.cpu, "cpu.max", cpu); err != nil {
			return nil, err
		}
		return g, nil
	}
	mem, quota := "-1", "-1"
	if l.Memory > 0 {
		mem = strconv.FormatUint(l.Memory, 10)
	}
	if l.CPU > 0 {
		quota = strconv.Itoa(max(int(l.CPU*float64(period)), 1000))
	}
	write(g.mem, "memory.move_charge_at_immigrate", "3") // deprecated in new kernels; best effort
	if err := write(g.mem, "memory.limit_in_bytes", mem); err != nil {
		return nil, err
	}
	if l.Memory > 0 {
		// Without swap: a function over its limit is killed, not
		// swapped (memsw exists only with swap accounting).
		write(g.mem, "memory.memsw.limit_in_bytes", mem)
	}
	if err := write(g.cpu, "cpu.cfs_period_us", strconv.Itoa(period)); err != nil {
		return nil, err
	}
	if err := write(g.cpu, "cpu.cfs_quota_us", quota); err != nil {
		return nil, err
	}
	return g, nil
}

// dir returns the group's directory for clone3 (v2), or "" (v1: the
// process is moved in after it starts).
func (g *instanceGroup) intoFD() (*os.File, error) {
	if !g.cg.v2 {
		return nil, nil
	}
	return os.Open(g.mem)
}

// started records the OOM count and, on v1, moves process pid into the
// group.
func (g *instanceGroup) started(pid int) error {
	g.ooms = g.oomKills()
	if g.cg.v2 {
		return nil
	}
	for _, d := range []string{g.mem, g.cpu} {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("%w: move instance %d into %s: %v", errCgroups, pid, d, err)
		}
	}
	return nil
}

// oomKilled reports whether the kernel killed a process of the group for
// memory since the current one started.
func (g *instanceGroup) oomKilled() bool { return g.oomKills() > g.ooms }

func (g *instanceGroup) oomKills() uint64 {
	file := "memory.oom_control"
	if g.cg.v2 {
		file = "memory.events"
	}
	return statField(filepath.Join(g.mem, file), "oom_kill")
}

// usage reads the group's memory in use and CPU throttling so far.
func (g *instanceGroup) usage() (memory uint64, throttled uint64, throttledTime uint64) {
	stat := filepath.Join(g.cpu, "cpu.stat")
	if g.cg.v2 {
		memory = readUint(filepath.Join(g.mem, "memory.current"))
		return memory, statField(stat, "nr_throttled"), statField(stat, "throttled_usec") * 1000
	}
	memory = readUint(filepath.Join(g.mem, "memory.usage_in_bytes"))
	return memory, statField(stat, "nr_throttled"), statField(stat, "throttled_time")
}

// remove removes the group (its processes are gone).
func (g *instanceGroup) remove() {
	os.Remove(g.mem)
	if g.cpu != g.mem {
		os.Remove(g.cpu)
	}
}

// statField reads "key value" lines and returns key's value, or 0.
func statField(path, key string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func readUint(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}
