package pool

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
)

// fanOut shares buffer root (held by h) with n tokens, as a fan-out step
// does, and returns them.
func fanOut(t testing.TB, p *Pool, root uint32, h uint16, n int) []uint32 {
	t.Helper()
	var toks []uint32
	for i := range n {
		tok, ok := p.Token(root, h, i)
		if !ok {
			t.Fatal("Token: pool empty")
		}
		toks = append(toks, tok)
	}
	if !p.Publish(root, h, 1<<n-1) {
		t.Fatal("Publish")
	}
	return toks
}

func TestShare(t *testing.T) {
	t.Parallel()
	for _, size := range []uint64{100, 5 << 20} {
		p := newPool(t, extLayout(128))
		root, _ := p.Alloc(1)
		p.Reserve(root, size, false)
		want := fillPattern(p, root, 1)
		p.Header(root).SetReqID(42)
		toks := fanOut(t, p, root, 1, 3)
		if p.Header(root).Owner() != OwnerShared || !p.Shared(root) {
			t.Fatal("root not shared")
		}
		if p.Room(toks[0]) != nil {
			t.Fatal("a token may write the shared payload in place")
		}
		for i, tok := range toks {
			if !bytes.Equal(payload(p, tok), want) || p.Size(tok) != size {
				t.Fatalf("token %d reads another payload", i)
			}
			if p.Header(tok).ReqID() != 42 || !p.TokenLive(tok) {
				t.Fatalf("token %d: request %d, live %v", i, p.Header(tok).ReqID(), p.TokenLive(tok))
			}
		}
		// Tokens go different ways: one to another endpoint, one freed.
		gen, _ := p.Transfer(toks[1], 1, 2)
		if !p.Accept(toks[1], gen, 1, 2) {
			t.Fatal("Accept")
		}
		p.Free(toks[0], 1)
		p.Free(toks[1], 2)
		if p.Header(root).Owner() != OwnerShared {
			t.Fatal("root freed with a reader left")
		}
		rootGen := p.Header(root).Gen()
		p.Free(toks[2], 1)
		if p.Header(root).Gen() != rootGen+1 {
			t.Fatal("root not freed with its last reader")
		}
		checkEmpty(t, p)
	}
}

// A token freed twice (its holder died after dropping its reference and
// before freeing it; the daemon frees it again) drops its reference once.
func TestShareDropTwice(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(16))
	root, _ := p.Alloc(1)
	toks := fanOut(t, p, root, 1, 2)
	b := p.Header(toks[0])
	p.unref(b.ref-1, b.refGen, b.refBit, 1) // the holder dropped it, then died
	p.Reclaim(1, func(i uint32) {})
	if p.Header(root).Owner() != OwnerShared {
		t.Fatal("root freed while token 1 reads it")
	}
	p.Free(toks[0], OwnerDaemon) // drops again: nothing happens
	if p.Header(root).Owner() != OwnerShared {
		t.Fatal("second drop freed the root")
	}
	p.Free(toks[1], OwnerDaemon)
	checkEmpty(t, p)
}

// Tokens made but never published are not real: freeing them leaves the
// buffer alone, which its holder still has.
func TestShareUnpublished(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(16))
	root, _ := p.Alloc(1)
	a, _ := p.Token(root, 1, 0)
	b, _ := p.Token(root, 1, 1)
	if p.TokenLive(a) || p.Shared(root) {
		t.Fatal("an unpublished token is live")
	}
	// The holder dies here: the daemon takes all three back.
	var got []uint32
	p.Reclaim(1, func(i uint32) { got = append(got, i) })
	if len(got) != 3 {
		t.Fatalf("reclaimed %v", got)
	}
	p.Free(a, OwnerDaemon)
	p.Free(b, OwnerDaemon)
	if o := p.Header(root).Owner(); o != OwnerDaemon {
		t.Fatalf("root's holder %d", o)
	}
	p.Free(root, OwnerDaemon)
	checkEmpty(t, p)
}

// The holder died between storing the references and making the buffer
// shared: the daemon completes the sharing; the tokens go on.
func TestShareHalfPublished(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(16))
	root, _ := p.Alloc(1)
	a, _ := p.Token(root, 1, 0)
	b, _ := p.Token(root, 1, 1)
	rb := p.Header(root)
	rb.held.Store(uint64(rb.Gen())<<32 | 3) // Publish's first step
	p.Reclaim(1, func(uint32) {})
	if !p.Shared(root) || !p.TokenLive(a) || !p.TokenLive(b) {
		t.Fatal("the sharing is not recognised")
	}
	if !p.CompleteShare(root, OwnerDaemon) {
		t.Fatal("CompleteShare")
	}
	p.Free(a, OwnerDaemon)
	p.Free(b, OwnerDaemon)
	checkEmpty(t, p)
}

// A shared buffer whose last reference is gone but which was not freed (its
// freer died) is found by the audit.
func TestUnusedShares(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(16))
	root, _ := p.Alloc(1)
	toks := fanOut(t, p, root, 1, 2)
	if len(p.UnusedShares()) != 0 {
		t.Fatal("a read buffer reported unused")
	}
	// Both tokens die without dropping their references (their frees lost).
	for _, tok := range toks {
		b := p.Header(tok)
		b.own.Store(ownWord(Own{Gen: b.Gen() + 1}))
		b.ref = 0
	}
	u := p.UnusedShares()
	if len(u) != 1 || u[0].Idx != root {
		t.Fatalf("UnusedShares = %v", u)
	}
	if !p.FreeShared(u[0]) || p.FreeShared(u[0]) {
		t.Fatal("FreeShared")
	}
	p.Rebuild(func(uint32, Own) bool { return false }) // the tokens' lost pushes
	checkEmpty(t, p)
}

// A token of a token: a branch that fans out again.
func TestShareNested(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(64))
	root, _ := p.Alloc(1)
	p.Reserve(root, 3<<20, false)
	want := fillPattern(p, root, 3)
	toks := fanOut(t, p, root, 1, 2)
	inner := fanOut(t, p, toks[0], 1, 3)
	for _, tok := range inner {
		if !bytes.Equal(payload(p, tok), want) {
			t.Fatal("nested token reads another payload")
		}
	}
	p.Free(toks[1], 1)
	for _, tok := range inner {
		p.Free(tok, 1)
	}
	checkEmpty(t, p)
}

// Fan-outs and frees from many goroutines, with tokens passed between
// endpoints: every buffer and chunk comes back, none twice.
func TestShareConcurrent(t *testing.T) {
	t.Parallel()
	p := newPool(t, Layout{Buffers: 512, BufferSize: 4096, Functions: 1, Chains: 1, Slots: 1, Chunks: 256})
	var wg sync.WaitGroup
	type handoff struct {
		tok, gen uint32
		from     uint16
	}
	hand := make(chan handoff, 1024) // tokens handed to whichever goroutine takes them
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			self := uint16(g + 1)
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 400 {
				select {
				case h := <-hand:
					// Taken by whoever reads it: the sender named
					// itself as the destination too (any process may
					// be it; Accept is the same CAS either way).
					if p.Accept(h.tok, h.gen, h.from, h.from) {
						p.Free(h.tok, h.from)
					}
				default:
				}
				root, ok := p.Alloc(self)
				if !ok {
					continue
				}
				if r.IntN(2) == 0 {
					p.Reserve(root, uint64(r.IntN(1<<20)), true)
				}
				n := 1 + r.IntN(6)
				var toks []uint32
				for i := range n {
					tok, ok := p.Token(root, self, i)
					if !ok {
						break
					}
					toks = append(toks, tok)
				}
				if len(toks) == 0 || !p.Publish(root, self, 1<<len(toks)-1) {
					for _, tok := range toks {
						p.Free(tok, self)
					}
					p.Free(root, self)
					continue
				}
				r.Shuffle(len(toks), func(i, j int) { toks[i], toks[j] = toks[j], toks[i] })
				for _, tok := range toks {
					if r.IntN(2) == 0 {
						if gen, ok := p.Transfer(tok, self, self); ok {
							select {
							case hand <- handoff{tok, gen, self}:
								continue
							default:
								p.Cancel(tok, gen, self, self)
							}
						}
					}
					p.Free(tok, self)
				}
			}
		}()
	}
	wg.Wait()
	close(hand)
	for h := range hand {
		if p.Accept(h.tok, h.gen, h.from, h.from) {
			p.Free(h.tok, h.from)
		}
	}
	checkEmpty(t, p)
}

func TestShareZeroAllocs(t *testing.T) {
	p := newPool(t, extLayout(16))
	n := testing.AllocsPerRun(500, func() {
		root, _ := p.Alloc(1)
		var toks [4]uint32
		for i := range toks {
			toks[i], _ = p.Token(root, 1, i)
		}
		p.Publish(root, 1, 15)
		for _, tok := range toks {
			p.Free(tok, 1)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// A shared buffer read only by itself (a scribbled header: its own token)
// is unused; one read by a token that is shared again and read (nested) is
// not.
func TestUnusedSharesSelf(t *testing.T) {
	t.Parallel()
	p := newPool(t, extLayout(16))
	root, _ := p.Alloc(1)
	toks := fanOut(t, p, root, 1, 1)
	inner := fanOut(t, p, toks[0], 1, 1)
	if u := p.UnusedShares(); len(u) != 0 {
		t.Fatalf("nested shares reported unused: %v", u)
	}
	s, _ := p.Alloc(1)
	p.Publish(s, 1, 1)
	b := p.Header(s)
	b.ref, b.refGen, b.refBit = s+1, b.Gen(), 0 // reads itself
	u := p.UnusedShares()
	if len(u) != 1 || u[0].Idx != s || !p.FreeShared(u[0]) {
		t.Fatalf("UnusedShares = %v, want %d", u, s)
	}
	p.Free(inner[0], 1)
	checkEmpty(t, p)
}
