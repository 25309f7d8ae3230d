package pool

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func extLayout(chunks uint32) Layout {
	return Layout{Buffers: 64, BufferSize: 4096, Functions: 1, Chains: 1, Slots: 1, Chunks: chunks}
}

// payload returns buffer idx's payload, whatever its pieces.
func payload(p *Pool, idx uint32) []byte {
	var out []byte
	for i := range p.Pieces(idx) {
		out = append(out, p.Piece(idx, i)...)
	}
	return out
}

// fillPattern writes a pattern into every piece of buffer idx and returns
// it: a byte's value depends on its offset in the payload and on seed.
func fillPattern(p *Pool, idx uint32, seed uint64) []byte {
	var want []byte
	x := seed*0x9e3779b97f4a7c15 | 1
	for i := range p.Pieces(idx) {
		s := p.Piece(idx, i)
		for k := 0; k < len(s); k += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			for j := k; j < min(k+8, len(s)); j++ {
				s[j] = byte(x >> (8 * (j - k)))
			}
		}
		want = append(want, s...)
	}
	return want
}

func checkEmpty(t *testing.T, p *Pool) {
	t.Helper()
	if p.FreeBuffers() != int(p.Buffers()) || !p.Audit() {
		t.Fatalf("free %d of %d buffers (audit %v)", p.FreeBuffers(), p.Buffers(), p.Audit())
	}
	if u := p.ExtentUsed(); u != 0 {
		t.Fatalf("%d bytes of extents still claimed", u)
	}
	if l := p.ExtentLeaks(); len(l) != 0 {
		t.Fatalf("leaked chunks %v", l)
	}
}

func TestReserve(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(64))
	for _, n := range []uint64{0, 1, 4096, 4097, ChunkSize, ChunkSize + 1, 10 * ChunkSize, 64 * ChunkSize} {
		b, _ := p.Alloc(1)
		if err := p.Reserve(b, n, false); err != nil {
			t.Fatalf("Reserve(%d): %v", n, err)
		}
		if got := p.Size(b); got != n {
			t.Fatalf("Size = %d, want %d", got, n)
		}
		if p.Pieces(b) != 1 || uint64(len(p.Data(b))) != n {
			t.Fatalf("Reserve(%d): %d pieces, Data %d bytes", n, p.Pieces(b), len(p.Data(b)))
		}
		if ext := n > 4096; p.Extended(b) != ext {
			t.Fatalf("Reserve(%d): Extended = %v", n, !ext)
		}
		want := fillPattern(p, b, n)
		if !bytes.Equal(payload(p, b), want) {
			t.Fatal("payload differs")
		}
		p.Free(b, 1)
	}
	checkEmpty(t, p)
	b, _ := p.Alloc(1)
	if err := p.Reserve(b, 64*ChunkSize+1, true); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("Reserve past the region: %v", err)
	}
	if err := p.Reserve(b, MaxPayload+1, true); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("Reserve past MaxPayload: %v", err)
	}
	p.Free(b, 1)
	checkEmpty(t, p)
}

// Runs of every length, in every alignment, never overlap and come back.
func TestClaimRuns(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(300)) // not a multiple of 64: the last word is partial
	r := rand.New(rand.NewPCG(1, 2))
	type run struct{ first, n uint32 }
	var held []run
	taken := make([]bool, 300)
	for step := 0; step < 5000; step++ {
		if len(held) > 0 && (r.IntN(2) == 0 || len(held) > 20) {
			k := r.IntN(len(held))
			h := held[k]
			held = append(held[:k], held[k+1:]...)
			p.release(h.first, h.n)
			for c := h.first; c < h.first+h.n; c++ {
				taken[c] = false
			}
			continue
		}
		n := uint32(1 + r.IntN(150))
		first, ok := p.claim(n)
		// A run must exist exactly when the reference says so.
		exists := false
		for s := 0; s+int(n) <= 300 && !exists; s++ {
			exists = true
			for c := s; c < s+int(n); c++ {
				if taken[c] {
					exists = false
					break
				}
			}
		}
		if ok != exists {
			t.Fatalf("claim(%d) = %v, a free run exists: %v", n, ok, exists)
		}
		if !ok {
			continue
		}
		for c := first; c < first+n; c++ {
			if c >= 300 || taken[c] {
				t.Fatalf("claim(%d) = %d overlaps chunk %d", n, first, c)
			}
			taken[c] = true
		}
		held = append(held, run{first, n})
	}
	for _, h := range held {
		p.release(h.first, h.n)
	}
	if p.ExtentUsed() != 0 {
		t.Fatal("chunks left")
	}
}

// A fragmented region gives one payload several extents when asked to
// split, and none when it must be contiguous.
func TestReserveSplit(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(64))
	var pins []uint32
	for range 8 { // 8 pins of 1 chunk, 7 free chunks between each
		b, _ := p.Alloc(1)
		pins = append(pins, b)
		if err := p.Reserve(b, ChunkSize, false); err != nil {
			t.Fatal(err)
		}
		g, _ := p.Alloc(1)
		p.Reserve(g, 7*ChunkSize, false)
		defer p.Free(g, 1)
	}
	// Free the gaps: runs of 7 free chunks only.
	for i := range p.bufs {
		if o := p.bufs[i].Own(); o.Holder == 1 && p.Size(uint32(i)) == 7*ChunkSize {
			p.Free(uint32(i), 1)
		}
	}
	b, _ := p.Alloc(1)
	if err := p.Reserve(b, 20*ChunkSize, false); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("contiguous reserve in a fragmented region: %v", err)
	}
	if err := p.Reserve(b, 20*ChunkSize, true); err != nil {
		t.Fatalf("split reserve: %v", err)
	}
	if p.Pieces(b) < 3 {
		t.Fatalf("%d pieces", p.Pieces(b))
	}
	want := fillPattern(p, b, 7)
	if got := payload(p, b); !bytes.Equal(got, want) || len(got) != 20*ChunkSize {
		t.Fatalf("split payload: %d bytes", len(got))
	}
	p.Free(b, 1)
	for _, x := range pins {
		p.Free(x, 1)
	}
}

func TestFiller(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(256)) // 16 MiB
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{0, 100, 4096, 4097, 1 << 20, 5<<20 + 3} {
		b, _ := p.Alloc(1)
		f := p.Fill(b, 16<<20)
		var want []byte
		for len(want) < size {
			room, err := f.Room()
			if err != nil {
				t.Fatalf("size %d at %d: %v", size, len(want), err)
			}
			k := min(len(room), 1+r.IntN(70000), size-len(want))
			for i := range k {
				room[i] = byte(r.Uint32())
			}
			want = append(want, room[:k]...)
			f.Wrote(k)
		}
		f.Done()
		if got := payload(p, b); !bytes.Equal(got, want) {
			t.Fatalf("size %d: payload of %d bytes differs", size, len(got))
		}
		if used := p.ExtentUsed(); used != 0 && used > uint64(size)+ChunkSize*uint64(p.Pieces(b)) {
			t.Fatalf("size %d: %d bytes of extents after Done", size, used)
		}
		p.Free(b, 1)
	}
	checkEmpty(t, p)
	// Past the limit, and past the region.
	b, _ := p.Alloc(1)
	f := p.Fill(b, 10000)
	for {
		room, err := f.Room()
		if err != nil {
			if !errors.Is(err, ErrPayloadTooLarge) || f.Len() != 10000 {
				t.Fatalf("at %d: %v", f.Len(), err)
			}
			break
		}
		f.Wrote(len(room))
	}
	f.Abort()
	f = p.Fill(b, 1<<30)
	for {
		room, err := f.Room()
		if err != nil {
			if !errors.Is(err, ErrNoRoom) {
				t.Fatalf("at %d: %v", f.Len(), err)
			}
			break
		}
		f.Wrote(len(room))
	}
	f.Abort()
	p.Free(b, 1)
	checkEmpty(t, p)
}

// Extents claimed by many goroutines at once never overlap.
func TestExtentsConcurrent(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(512))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for i := range 40 {
				b, ok := p.Alloc(uint16(g + 1))
				if !ok {
					continue
				}
				n := uint64(1 + r.IntN(1<<20))
				if err := p.Reserve(b, n, r.IntN(2) == 0); err != nil {
					p.Free(b, uint16(g+1))
					continue
				}
				want := fillPattern(p, b, uint64(g*1000+i))
				if !bytes.Equal(payload(p, b), want) {
					errs <- errors.New("overwritten")
				}
				p.Free(b, uint16(g+1))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkEmpty(t, p)
}

// Chunks claimed and never recorded (a process died in between) are found
// and given back.
func TestExtentLeaks(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(200))
	b, _ := p.Alloc(1)
	p.Reserve(b, 3*ChunkSize, false)
	if !p.claimAt(100, 70) || !p.claimAt(190, 10) {
		t.Fatal("claimAt")
	}
	leaks := p.ExtentLeaks()
	lost := make([]bool, 200)
	for _, l := range leaks {
		for c := l.First; c < l.First+l.Count; c++ {
			lost[c] = true
		}
	}
	for c := range lost {
		if want := c >= 100 && c < 170 || c >= 190; lost[c] != want {
			t.Fatalf("chunk %d: lost %v, want %v (leaks %v)", c, lost[c], want, leaks)
		}
	}
	p.ReleaseLeaks(leaks)
	p.Free(b, 1)
	checkEmpty(t, p)
}

// The region costs memory only where it is written.
// Not parallel: it fstats the pool's fd, whose number a parallel test
// closing a stale fd of its own could hit.
func TestExtentsLazy(t *testing.T) {
	p := newPool(t, extLayout(1<<14)) // 1 GiB
	blocks := func() int64 {
		var st unix.Stat_t
		if err := unix.Fstat(p.Fd(), &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	before := blocks()
	if before > 16<<20 {
		t.Fatalf("a fresh pool with a 1 GiB region uses %d bytes", before)
	}
	b, _ := p.Alloc(1)
	p.Reserve(b, 16<<20, false)
	if blocks() > before+1<<20 {
		t.Fatal("reserving committed memory")
	}
	fillPattern(p, b, 1)
	// Written pages are committed (the machine may page some out at once:
	// ask for a part of them only).
	if got := blocks(); got < before+4<<20 {
		t.Fatalf("writing 16 MiB: %d bytes used", got-before)
	}
	p.Free(b, 1)
}

// Payloads one after another reuse the same chunks (first fit): the
// region commits what is held at once, not what went through it.
func TestExtentsReuse(t *testing.T) {
	p := newPool(t, extLayout(1<<12)) // 256 MiB
	for i := range 64 {
		b, _ := p.Alloc(1)
		if err := p.Reserve(b, 8<<20, false); err != nil {
			t.Fatal(err)
		}
		if s := p.bufs[b].segsOf(); len(s) != 1 || s[0].First != 0 {
			t.Fatalf("payload %d in chunks %+v, want the first ones again", i, s)
		}
		fillPattern(p, b, uint64(i))
		p.Free(b, 1)
	}
	var st unix.Stat_t
	if err := unix.Fstat(p.Fd(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 32<<20 {
		t.Fatalf("64 payloads of 8 MiB one after another committed %d bytes", st.Blocks*512)
	}
}

func TestExtentZeroAllocs(t *testing.T) {
	p := newPool(t, extLayout(256))
	n := testing.AllocsPerRun(500, func() {
		b, _ := p.Alloc(1)
		p.Reserve(b, 5<<20, true)
		p.Free(b, 1)
		b, _ = p.Alloc(1)
		f := p.Fill(b, 1<<20)
		for {
			room, err := f.Room()
			if err != nil {
				break
			}
			f.Wrote(len(room))
		}
		f.Done()
		p.Free(b, 1)
	})
	if n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// Another process sees a payload in the extent region where it was written.
func TestExtentsAcrossMappings(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(64))
	q := attachCopy(t, p)
	b, _ := p.Alloc(1)
	p.Reserve(b, 2<<20, false)
	want := fillPattern(p, b, 5)
	if !bytes.Equal(payload(q, b), want) {
		t.Fatal("the other mapping sees another payload")
	}
	// And claims from there do not overlap ours.
	c, _ := q.Alloc(2)
	q.Reserve(c, 2<<20, false)
	fillPattern(q, c, 6)
	if !bytes.Equal(payload(p, b), want) {
		t.Fatal("overwritten from the other mapping")
	}
	q.Free(c, 2)
	p.Free(b, 1)
	checkEmpty(t, p)
}

func BenchmarkReserveFree(b *testing.B) {
	p := newPool(b, extLayout(1<<14))
	b.ReportAllocs()
	for b.Loop() {
		i, _ := p.Alloc(1)
		p.Reserve(i, 64<<20, false)
		p.Free(i, 1)
	}
}
