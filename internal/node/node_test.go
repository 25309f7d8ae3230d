package node

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// go: functions are built once per content: the same sources give the
// same cached executable without a build; a change gives a new one.
func TestBuildCache(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Go programs")
	}
	mod := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(mod, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/fn\n\ngo 1.22\n")
	write("main.go", "package main\n\nfunc main() { println(1) }\n")
	cache := t.TempDir()
	ctx := context.Background()
	first, err := buildGo(ctx, cache, mod, mod)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(first)
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("built %s: %v %v", first, st.Mode(), err)
	}
	again, err := buildGo(ctx, cache, mod, mod)
	if err != nil || again != first {
		t.Fatalf("unchanged sources: %s (%v), want the cached %s", again, err, first)
	}
	st2, _ := os.Stat(again)
	if !st2.ModTime().Equal(st.ModTime()) {
		t.Fatal("unchanged sources were rebuilt")
	}
	write("main.go", "package main\n\nfunc main() { println(2) }\n")
	changed, err := buildGo(ctx, cache, mod, mod)
	if err != nil || changed == first {
		t.Fatalf("changed sources: %s (%v), want a new build", changed, err)
	}
	write("main.go", "package lib\n")
	if _, err := buildGo(ctx, cache, mod, mod); err == nil || !strings.Contains(err.Error(), "not a main package") {
		t.Fatalf("library package: %v", err)
	}
	write("main.go", "package main\n\nfunc main() { undefined() }\n")
	if _, err := buildGo(ctx, cache, mod, mod); err == nil || !strings.Contains(err.Error(), "undefined") {
		t.Fatalf("broken package: %v, want the compiler's message", err)
	}
}

func TestLineWriter(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	w := &lineWriter{mu: &sync.Mutex{}, out: &out, prefix: []byte("[a] ")}
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o\n\nthree"))
	w.Write([]byte(strings.Repeat("x", maxLine)))
	want := "[a] one\n[a] two\n[a] three" + strings.Repeat("x", maxLine) + "\n"
	if out.String() != want {
		t.Fatalf("got %q", out.String())
	}
}

func TestIDs(t *testing.T) {
	t.Parallel()
	var s ids
	a, _ := s.alloc()
	b, _ := s.alloc()
	s.free(a)
	c, _ := s.alloc()
	if a != 1 || b != 2 || c != 3 {
		t.Fatalf("ids %d %d %d: a freed id must not come back before the others", a, b, c)
	}
	for range 65532 - 3 { // 65533..65535 are pool.OwnerJoined, OwnerShared, OwnerDaemon
		if _, err := s.alloc(); err != nil {
			t.Fatal(err)
		}
	}
	if id, err := s.alloc(); err != nil || id != a {
		t.Fatalf("after a full round: %d %v, want the freed %d", id, err, a)
	}
	if _, err := s.alloc(); err != errNoIDs {
		t.Fatalf("all used: %v", err)
	}
}
