//go:build linux

package transport

import (
	"testing"

	"github.com/spry-dev/spry/internal/desc"
)

// A process of the app writes an endpoint's id into an entry of the
// endpoint table that no endpoint has (a free one, earlier in the table
// than the endpoint's own). Repair takes it back: a sender looking the id
// up finds the endpoint's entry, and its descriptors arrive. (Before, the
// free entry stood in for the endpoint for good: a ring transport's
// senders pushed into a ring nobody reads, skmsg's reserved room nobody
// gave back, and TestHostileInstance's fan-out answered 504 after the
// attack.)
func TestRepairTakesBackFreeEntries(t *testing.T) {
	for _, m := range makers() {
		t.Run(m.name, func(t *testing.T) {
			f := fabric(t, m.mk, "a")
			r, ok := f.(Repairer)
			if !ok {
				t.Skip("no endpoint table in the pool")
			}
			gone := open(t, f, 9) // takes the first entry, then frees it
			a, b := open(t, f, 1), open(t, f, 5)
			var tab *table
			var own func(id uint16) uint32
			switch f := f.(type) {
			case *ringFabric:
				tab, own = f.v.tab, func(id uint16) uint32 { return f.ends[id] }
			case *skmsgFabric:
				tab, own = f.tab, func(id uint16) uint32 { return f.ends[id].ep }
			default:
				t.Fatalf("a Repairer of type %T", f)
			}
			free := own(9)
			gone.Close()
			if err := f.Remove(9); err != nil {
				t.Fatal(err)
			}
			if free >= own(5) {
				t.Fatalf("entry %d freed, endpoint 5 at %d: the stray must come first", free, own(5))
			}
			w := tab.word(free)
			w.Store(uint64(5)<<ownerShift | w.Load()&lowMask) // the scribble
			if i, _ := tab.find(5, true); i != free {
				t.Fatalf("a lookup of 5 finds entry %d, want the stray %d", i, free)
			}
			r.Repair()
			if i, ok := tab.find(5, true); !ok || i != own(5) {
				t.Fatalf("after Repair a lookup of 5 finds entry %d (%v), want its own %d", i, ok, own(5))
			}
			if o := ownerOf(w.Load()); o != 0 {
				t.Fatalf("the free entry still names %d", o)
			}
			if err := a.Send(desc.Desc{Dst: 5, Src: 1, Buf: 3}); err != nil {
				t.Fatal(err)
			}
			var ds [4]desc.Desc
			if n := recvWithin(t, b, ds[:]); n != 1 || ds[0].Buf != 3 {
				t.Fatalf("received %d: %v", n, ds[:n])
			}
		})
	}
}
