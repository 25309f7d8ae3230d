//go:build !wasip1

package sdk

import (
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
		st := r.s.st
		return func(delta int) { st.Keeps.Add(int32(delta)) }
	}
	sdkhook.Demand = func(req any) func(uint16, int) {
		r := req.(*Request)
		if r.s == nil || r.s.st == nil {
			return func(uint16, int) {}
		}
		st := r.s.st
		return func(fn uint16, n int) { st.Demand.Store(pool.DemandWord(fn, n)) }
	}
}
