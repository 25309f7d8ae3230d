package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Builtins run with the runner beside spry (spry-fn); one from another
// build is not used, and builtins then run as `spry fn`.
func TestBuiltinRunner(t *testing.T) {
	n := startNode(t)
	if !strings.Contains(n.logs(), "builtins run with the runner beside spry") {
		t.Fatalf("the runner beside spry was not used\n%s", n.logs())
	}
	c := client(1)
	if s, b, err := n.post(c, "/hello", "spry"); err != nil || s != 200 || !strings.Contains(b, "YRPS") {
		t.Fatalf("/hello: %d %q %v", s, b, err)
	}
	for _, f := range findApp(t, n.mustStatus(), "demo").Functions {
		for _, in := range f.Instances {
			cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(in.PID), "cmdline"))
			if argv := strings.Split(string(cmd), "\x00"); !strings.HasSuffix(argv[0], "spry-fn") {
				t.Errorf("instance %d of %s runs %q", in.PID, f.Name, argv)
			}
		}
	}

	// A runner from another build beside a copy of spry.
	dir := t.TempDir()
	bin := filepath.Join(dir, "spry")
	b, err := os.ReadFile(spryBin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, b, 0o755)
	os.WriteFile(filepath.Join(dir, "spry-fn"), []byte("#!/bin/sh\necho spry-fn layout=0 builtins=other\n"), 0o755)
	old := spryBin
	spryBin = bin
	n = startNode(t)
	spryBin = old
	if !strings.Contains(n.logs(), "from another build") {
		t.Fatalf("a foreign runner was not refused\n%s", n.logs())
	}
	if s, b, err := n.post(client(1), "/hello", "spry"); err != nil || s != 200 || !strings.Contains(b, "YRPS") {
		t.Fatalf("/hello without the runner: %d %q %v", s, b, err)
	}
}
