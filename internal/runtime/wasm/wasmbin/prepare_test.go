package wasmbin

import (
	"bytes"
	"errors"
	"testing"
)

// tiny is (module (memory 1) (global (mut i32) (i32.const 5))
//
//	(data (i32.const 16) "hi")
//	(func (export "f") (loop br 0)))
var tiny = []byte("\x00asm\x01\x00\x00\x00" +
	"\x01\x04\x01\x60\x00\x00" + // type () -> ()
	"\x03\x02\x01\x00" + // one function
	"\x05\x03\x01\x00\x01" + // memory 1
	"\x06\x06\x01\x7f\x01\x41\x05\x0b" + // global mut i32 = 5
	"\x07\x05\x01\x01f\x00\x00" + // export "f"
	"\x0a\x09\x01\x07\x00\x03\x40\x0c\x00\x0b\x0b" + // loop br 0 end end
	"\x0b\x08\x01\x00\x41\x10\x0b\x02hi") // data at 16

func TestPrepareTiny(t *testing.T) {
	p, err := Prepare(tiny)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Data) != 1 || p.Data[0].Offset != 16 || string(p.Data[0].Bytes) != "hi" {
		t.Errorf("data %+v", p.Data)
	}
	if len(p.Globals) != 1 || p.Globals[0].Export != "spry.g0" || p.Globals[0].Type != I32 {
		t.Errorf("globals %+v", p.Globals)
	}
	if p.NoSnapshot != "" || p.Start || p.Memory != (Limits{Min: 1}) {
		t.Errorf("prepared %+v", p)
	}
	// A safe point (memory.grow 0, then the interrupt flag, global 1) in
	// the entry check and in the loop's.
	safe := []byte{opI32Const, 0, opMemoryGrow, 0, opDrop, opGlobalGet, 1, opIf, blockEmpty, opUnreachable, opEnd}
	if n := bytes.Count(p.Binary, safe); n != 2 {
		t.Errorf("%d safe points, want 2", n)
	}
	// The loop counter is a new local: (1, i32) after the function's own
	// (none here).
	if !bytes.Contains(p.Binary, []byte{0x01, 0x01, I32, opI32Const}) {
		t.Error("no loop counter local")
	}
	for _, x := range []string{InterruptExport, FuelExport} {
		if !bytes.Contains(p.Binary, []byte(x)) {
			t.Errorf("no %s export", x)
		}
	}
	// A second preparation of the result is well formed too.
	if _, err := Prepare(p.Binary); err == nil || !errors.Is(err, ErrFormat) {
		// It exports spry names now: refused.
		t.Errorf("preparing twice: %v", err)
	}
}

func TestPrepareRefuses(t *testing.T) {
	for name, mod := range map[string][]byte{
		"empty":      {},
		"magic":      []byte("\x00wasm\x01\x00\x00\x00"),
		"version":    []byte("\x00asm\x02\x00\x00\x00"),
		"no memory":  []byte("\x00asm\x01\x00\x00\x00"),
		"truncated":  tiny[:len(tiny)-3],
		"bad length": append(append([]byte(nil), tiny[:8]...), 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f),
		"memory import": []byte("\x00asm\x01\x00\x00\x00" +
			"\x02\x0b\x01\x03env\x03mem\x02\x00\x01"),
	} {
		if _, err := Prepare(mod); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err %v, want ErrFormat", name, err)
		}
	}
}

func FuzzPrepare(f *testing.F) {
	f.Add(tiny)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Prepare(b)
		if err != nil {
			return
		}
		// Whatever it accepts, it can read back what it wrote (up to the
		// names it reserved).
		if len(p.Binary) < 8 {
			t.Fatal("short output")
		}
	})
}
