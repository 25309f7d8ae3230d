package activation

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// walRead opens the log in dir and returns the payloads it replays, in
// order, checking their sequence numbers grow.
func walRead(t *testing.T, dir string, floor uint64) (*wal, []string) {
	t.Helper()
	var got []string
	var prev uint64
	w, _, err := openWAL(dir, floor, func(r walRecord) error {
		if r.seq <= prev {
			t.Fatalf("sequence %d after %d", r.seq, prev)
		}
		prev = r.seq
		got = append(got, string(r.payload))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return w, got
}

// walAppend appends one group and flushes it; it returns the frames'
// sequence numbers.
func walAppend(t *testing.T, w *wal, payloads ...string) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, p := range payloads {
		seq, err := w.frame([]byte(p))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	if err := w.sync(); err != nil {
		t.Fatal(err)
	}
	return seqs
}

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: replayed\n  %q\nwant\n  %q", what, got, want)
	}
}

// A write torn by a crash (its pages reached the disk only in part) ends
// the log: what came before it is replayed, it and anything after it never
// are, and the log goes on after the last whole frame.
func TestWALTornWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w, got := walRead(t, dir, 0)
	equal(t, "empty log", got, nil)
	walAppend(t, w, "a1", "a2", "a3")
	walAppend(t, w, "b1")
	tornAt := w.cur.pos
	name := w.cur.f.Name()
	walAppend(t, w, "c1-torn", "c2-torn")
	w.close()

	w, got = walRead(t, dir, 0)
	equal(t, "clean reopen", got, []string{"a1", "a2", "a3", "b1", "c1-torn", "c2-torn"})
	w.close()

	// Tear the third group: its first frame's payload is half old bytes.
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XX"), tornAt+frameHeader+1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	w, got = walRead(t, dir, 0)
	equal(t, "after a torn write", got, []string{"a1", "a2", "a3", "b1"})
	walAppend(t, w, "d1")
	w.close()
	// The torn group's second frame is whole and its checksum right, but
	// it lies past the end the reopen set: never read again.
	w, got = walRead(t, dir, 0)
	equal(t, "appended after the tear", got, []string{"a1", "a2", "a3", "b1", "d1"})
	w.close()
}

// Segments roll over, are retired once applied and reused; a reused one
// still holds the frames of its former life, which are never replayed.
func TestWALSegments(t *testing.T) {
	// Not parallel: it shrinks the segment size for its own log.
	defer func(n int64) { walSegment = n }(walSegment)
	walSegment = 4096
	dir := t.TempDir()
	w, _ := walRead(t, dir, 0)
	var all []string
	var seqs []uint64
	payload := func(i int) string { return fmt.Sprintf("%04d-%0400d", i, i) }
	next := 0
	write := func(groups int) {
		for range groups {
			var g []string
			for range 1 + next%3 {
				g = append(g, payload(next))
				next++
			}
			seqs = append(seqs, walAppend(t, w, g...)...)
			all = append(all, g...)
		}
	}
	write(30)
	if w.segments() < 5 {
		t.Fatalf("%d segments for %d frames of 400 bytes in 4 KiB segments", w.segments(), len(all))
	}
	// Everything but the last 5 frames is applied.
	appliedAt := len(seqs) - 6
	applied := seqs[appliedAt]
	if err := w.retire(applied); err != nil {
		t.Fatal(err)
	}
	free, _ := listFree(dir)
	if len(free) != maxFree {
		t.Fatalf("%d retired segments kept for reuse, want %d", len(free), maxFree)
	}
	// More segments: the retired ones are reused, stale frames and all.
	write(20)
	if free, _ := listFree(dir); len(free) >= maxFree {
		t.Fatalf("retired segments not reused: %v", free)
	}
	w.close()

	w, got := walRead(t, dir, applied)
	// The replay starts in the first segment not retired: some frames
	// at or below applied come back (the caller skips them), then every
	// frame after it, in order, and nothing else.
	from := -1
	for i, p := range all {
		if len(got) > 0 && p == got[0] {
			from = i
		}
	}
	if from < 0 || from > appliedAt+1 {
		t.Fatalf("replay starts at %q", got[:1])
	}
	equal(t, "after rollovers and reuse", got, all[from:])
	// And it goes on from there.
	walAppend(t, w, "last")
	w.close()
	w, got = walRead(t, dir, applied)
	if got[len(got)-1] != "last" || len(got) != len(all)-from+1 {
		t.Fatalf("after reopening twice: %d records ending in %q", len(got), got[len(got)-1])
	}
	w.close()
}

// Once every segment is retired (all applied), the log starts again
// after the sequence number the store has applied, not at 1.
func TestWALFloor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w, _ := walRead(t, dir, 0)
	walAppend(t, w, "x")
	w.close()
	for _, name := range mustList(t, dir) {
		os.Remove(filepath.Join(dir, name))
	}
	w, got := walRead(t, dir, 1000)
	equal(t, "emptied log", got, nil)
	if s := walAppend(t, w, "y"); s[0] <= 1000 {
		t.Fatalf("sequence %d after floor 1000", s[0])
	}
	w.close()
}

func mustList(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// crashTuning lets the crash test's child apply lazily and roll small
// segments, so a kill lands with much of what was acknowledged only in
// the log, across segments that roll, retire and are reused.
func crashTuning() {
	if v := os.Getenv(crashEnv + "_APPLY_MS"); v != "" {
		n, _ := strconv.Atoi(v)
		applyEvery = time.Duration(n) * time.Millisecond
	}
	if v := os.Getenv(crashEnv + "_SEGMENT"); v != "" {
		n, _ := strconv.ParseInt(v, 10, 64)
		walSegment = n
	}
}
