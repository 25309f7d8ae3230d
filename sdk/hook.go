//go:build !wasip1

package sdk

import (
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/sdkhook"
)

func init() {
	sdkhook.Pool = func(req any) (*pool.Pool, uint16, uint32) {
		r := req.(*Request)
		return r.p, r.self(), r.buf
	}
	sdkhook.SetOutput = func(res any, buf uint32) {
		w := res.(*Response)
		if w.fresh {
			if w.filling {
				w.fill.Abort()
				w.filling = false
			}
			w.p.Free(w.out, w.self)
		}
		w.p.Header(buf).CopyMeta(w.p.Header(w.in))
		w.out, w.fresh = buf, true
	}
	sdkhook.Keeper = func(req any) func(int) {
		r := req.(*Request)
		if r.s == nil || r.s.st == nil {
			return func(int) {}
		}
		st, s := r.s.st, r.s
		return func(delta int) {
			st.Keeps.Add(int32(delta))
			s.look()
		}
	}
	sdkhook.Demand = func(req any) func(uint16, int) {
		r := req.(*Request)
		if r.s == nil || r.s.st == nil {
			return func(uint16, int) {}
		}
		st, s := r.s.st, r.s
		return func(fn uint16, n int) {
			if w := pool.DemandWord(fn, n); st.Demand.Swap(w) != w {
				s.look()
			}
		}
	}
}

// look tells the node that the instance's stats slot asks something new
// (keeps, demand): an idle node would see it only at a far tick.
func (s *instance) look() {
	s.c.Send(desc.Desc{Dst: s.p.Gateway(), Src: s.id, Buf: desc.CtlLook, Flags: desc.FlagControl})
}
