package wasm

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkNew is the start of an instance: a clone of the function's
// snapshot, ready to run.
func BenchmarkNew(b *testing.B) {
	r := newRig(&testing.T{}, FunctionConfig{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		in, err := r.f.New(ctx)
		if err != nil {
			b.Fatal(err)
		}
		in.Close()
	}
}

// BenchmarkStep is one step on a payload of each size: copy in, call, copy
// out. With two instances in turn it is a wasm-to-wasm hop in the host.
func BenchmarkStep(b *testing.B) {
	t := &testing.T{}
	r := newRig(t, FunctionConfig{})
	ctx := context.Background()
	a, c := r.instance(), r.instance()
	for _, size := range []int{64, 1 << 10, 16 << 10, 64 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			buf := r.request("POST", "/", string(make([]byte, size)))
			defer r.p.Free(buf, self)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				in := a
				if i++; i%2 == 0 {
					in = c
				}
				if _, _, err := in.Step(ctx, r.p, self, buf, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
