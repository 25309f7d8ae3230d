package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spry-dev/spry/internal/config"
)

// fakeCgroups lays out cgroup hierarchies as plain directories under a
// temporary root and points the node's view of /proc at files describing
// them, so the path logic of both versions runs without the kernel.
func fakeCgroups(t *testing.T, mountinfo, self string, dirs ...string) string {
	t.Helper()
	root := t.TempDir()
	mountinfo = strings.ReplaceAll(mountinfo, "ROOT", root)
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mi, sf := filepath.Join(root, "mountinfo"), filepath.Join(root, "self")
	os.WriteFile(mi, []byte(mountinfo), 0o644)
	os.WriteFile(sf, []byte(self), 0o644)
	oldMI, oldSelf := cgroupMountinfo, cgroupSelf
	cgroupMountinfo, cgroupSelf = mi, sf
	t.Cleanup(func() { cgroupMountinfo, cgroupSelf = oldMI, oldSelf })
	return root
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// cgroup v2: the node enables memory and cpu below its own group and makes
// one group per instance with memory.max and cpu.max.
func TestCgroupsV2(t *testing.T) {
	root := fakeCgroups(t, "30 23 0:26 / ROOT/unified rw - cgroup2 cgroup2 rw\n", "0::/system.slice/spry.service\n",
		"unified/system.slice/spry.service")
	os.WriteFile(filepath.Join(root, "unified", "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
	cg, err := newCgroups()
	if err != nil {
		t.Fatal(err)
	}
	defer cg.close()
	base := filepath.Join(root, "unified/system.slice/spry.service")
	if !cg.v2 || cg.mem != cg.cpu || filepath.Dir(cg.mem) != base {
		t.Fatalf("v2 groups at %s and %s", cg.mem, cg.cpu)
	}
	if got := readFile(t, filepath.Join(base, "cgroup.subtree_control")); got != "+memory +cpu" {
		t.Errorf("subtree_control %q", got)
	}
	g, err := cg.group("app.1-f-0", config.FnLimits{Memory: 256 << 20, CPU: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if m, c := readFile(t, filepath.Join(g.mem, "memory.max")), readFile(t, filepath.Join(g.cpu, "cpu.max")); m != "268435456" || c != "50000 100000" {
		t.Errorf("memory.max %q, cpu.max %q", m, c)
	}
	if f, err := g.intoFD(); err != nil || f == nil {
		t.Errorf("v2 starts instances inside their group: %v %v", f, err)
	} else {
		f.Close()
	}
	os.WriteFile(filepath.Join(g.mem, "memory.events"), []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n"), 0o644)
	g.started(0)
	os.WriteFile(filepath.Join(g.mem, "memory.events"), []byte("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n"), 0o644)
	if !g.oomKilled() {
		t.Error("an oom_kill in memory.events was not seen")
	}
}

// cgroup v1 (and a hybrid host): memory and cpu in their own hierarchies,
// below the node's cgroup in each; instances moved in after they start.
func TestCgroupsV1(t *testing.T) {
	root := fakeCgroups(t, strings.Join([]string{
		"32 31 0:29 / ROOT/cpu rw,relatime - cgroup cgroup rw,cpu",
		"35 31 0:32 / ROOT/memory rw,relatime - cgroup cgroup rw,memory",
		"41 31 0:38 / ROOT/unified rw,relatime - cgroup2 cgroup2 rw",
	}, "\n")+"\n", "4:memory:/process_api/x\n1:cpu:/\n0::/\n", "cpu", "memory/process_api/x", "unified")
	os.WriteFile(filepath.Join(root, "unified", "cgroup.controllers"), []byte("hugetlb\n"), 0o644)
	cg, err := newCgroups()
	if err != nil {
		t.Fatal(err)
	}
	defer cg.close()
	if cg.v2 || filepath.Dir(cg.mem) != filepath.Join(root, "memory/process_api/x") || filepath.Dir(cg.cpu) != filepath.Join(root, "cpu") {
		t.Fatalf("v1 groups at %s and %s", cg.mem, cg.cpu)
	}
	g, err := cg.group("app.1-f-0", config.FnLimits{Memory: 64 << 20, CPU: 0.25})
	if err != nil {
		t.Fatal(err)
	}
	if m, q := readFile(t, filepath.Join(g.mem, "memory.limit_in_bytes")), readFile(t, filepath.Join(g.cpu, "cpu.cfs_quota_us")); m != "67108864" || q != "25000" {
		t.Errorf("limit %q, quota %q", m, q)
	}
	if f, _ := g.intoFD(); f != nil {
		t.Error("v1 has no CLONE_INTO_CGROUP")
	}
	if err := g.started(12345); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(g.cpu, "cgroup.procs")); got != "12345" {
		t.Errorf("not moved into the cpu group: %q", got)
	}
}
