package cli

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// --watch sees a change of a go: function's source, of its module's go.mod,
// and of the config file; not of files a build does not read.
func TestWatchSees(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("go.mod", "module example.com/w\n\ngo 1.24\n")
	src := write("fn/main.go", "package main\n\nfunc main() {}\n")
	write("fn/notes.txt", "not source")
	cfg := write("spry.yaml", "app: w\nfunctions:\n  f: {go: ./fn}\nchains:\n  c: {route: /c, steps: [f]}\n")
	before := snapshotSources([]string{cfg})
	if _, ok := before[src]; !ok {
		t.Fatalf("the function's source is not watched: %v", before)
	}
	touch := func(p string) {
		later := time.Now().Add(2 * time.Second)
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	touch(filepath.Join(dir, "fn/notes.txt"))
	if c := changedFile(before, snapshotSources([]string{cfg})); c != "" {
		t.Errorf("a file no build reads counted as a change: %s", c)
	}
	for _, p := range []string{src, filepath.Join(dir, "go.mod"), cfg} {
		prev := snapshotSources([]string{cfg})
		touch(p)
		if c := changedFile(prev, snapshotSources([]string{cfg})); c != p {
			t.Errorf("touching %s: changed %q", p, c)
		}
	}
	// A new source file is a change too.
	prev := snapshotSources([]string{cfg})
	added := write("fn/more.go", "package main\n")
	if c := changedFile(prev, snapshotSources([]string{cfg})); c != added {
		t.Errorf("a new source file: changed %q", c)
	}
}
