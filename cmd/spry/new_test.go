package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// spry new python NAME makes a function and a spry.yaml that serve at
// once; a second spry new adds to the same file.
func TestNewFunction(t *testing.T) {
	python3(t)
	dir := openDir(t)
	for _, args := range [][]string{{"new", "python", "greet"}, {"new", "python", "shout"}} {
		cmd := exec.Command(spryBin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "spry up -f spry.yaml") {
			t.Fatalf("spry %v: %v\n%s", args, err, out)
		}
	}
	cmd := exec.Command(spryBin, "new", "python", "greet")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "greet already exists") {
		t.Errorf("a second greet: %v\n%s", err, out)
	}
	n := startNode(t, "--transport", "uds", "-f", filepath.Join(dir, "spry.yaml"))
	c := client(1)
	for _, route := range []string{"/greet", "/shout"} {
		if s, b, err := n.post(c, route, "spry"); err != nil || s != 200 || b != "Hello, SPRY!" {
			t.Errorf("%s: %d %q %v", route, s, b, err)
		}
	}
}
