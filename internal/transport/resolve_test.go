//go:build linux

package transport

import (
	"errors"
	"strings"
	"testing"

	"github.com/spry-dev/spry/internal/pool"
)

func TestResolve(t *testing.T) {
	noBPF := errors.New("missing CAP_BPF")
	yes := func() error { return nil }
	no := func() error { return noBPF }
	for _, c := range []struct {
		name   string
		canBPF func() error
		want   string
		err    error
	}{
		{"auto", yes, "skmsg", nil},
		{"auto", no, "uds", nil},
		{"", no, "uds", nil},
		{"skmsg", yes, "skmsg", nil},
		{"skmsg", no, "", noBPF},
		{"uds", no, "uds", nil},
		{"poll", no, "poll", nil},
		{"adaptive", no, "adaptive", nil},
		{"carrier-pigeon", yes, "", ErrUnknown},
	} {
		got, why, err := Resolve(c.name, c.canBPF)
		if got != c.want || !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("Resolve(%q) = %q, %q, %v; want %q, %v", c.name, got, why, err, c.want, c.err)
		}
		if err == nil && why == "" {
			t.Errorf("Resolve(%q): no reason", c.name)
		}
		if c.name == "auto" && got == "uds" && !strings.Contains(why, noBPF.Error()) {
			t.Errorf("auto fell back without saying why: %q", why)
		}
	}
}

// Every transport's PoolLayout makes a pool it accepts.
func TestPoolLayout(t *testing.T) {
	for _, name := range Names {
		eps, rb := PoolLayout(name, 100)
		l := pool.Layout{Buffers: 2, BufferSize: pool.MinBufferSize, Functions: 1, Chains: 1, Slots: 99, Endpoints: eps, RingBytes: rb}
		p, err := pool.Create("layout", l)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "poll" || name == "adaptive" {
			if _, err := New(name, Options{Pool: p}); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if v, _ := ringViewOf(p); v.cap != Depth {
				t.Errorf("%s: ring capacity %d, want %d", name, v.cap, Depth)
			}
		}
		if name == "skmsg" {
			if _, err := newTable(p, skmsgEntryBytes); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		p.Close()
	}
}

func TestPollers(t *testing.T) {
	if Pollers("poll", 5) != 5 || Pollers("adaptive", 5) != 0 || Pollers("skmsg", 5) != 0 || Pollers("uds", 5) != 0 {
		t.Fatal("Pollers")
	}
}
