package desc

import (
	"bytes"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, d := range []Desc{
		{},
		{Dst: 1, Src: 2, Buf: 3, Gen: 4, Chain: 5, Hop: 6, Flags: FlagReply},
		{Dst: 0xffff, Src: 0xfffe, Buf: 0xffffffff, Gen: 0xfffffffe, Chain: 0xffff, Hop: 0xff, Flags: 0xff},
	} {
		a := d.Array()
		got, err := Decode(a[:])
		if err != nil || got != d {
			t.Fatalf("Decode(Encode(%v)) = %v, %v", d, got, err)
		}
	}
}

// The layout is a wire contract with the eBPF program: pin it byte by byte.
func TestLayout(t *testing.T) {
	t.Parallel()
	d := Desc{Dst: 0x0201, Src: 0x0403, Buf: 0x08070605, Gen: 0x0c0b0a09, Chain: 0x0e0d, Hop: 0x0f, Flags: 0x10}
	a := d.Array()
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	if !bytes.Equal(a[:], want) {
		t.Fatalf("encoded % x, want % x", a, want)
	}
}

func TestShort(t *testing.T) {
	t.Parallel()
	if _, err := Decode(make([]byte, Size-1)); err != ErrShort {
		t.Fatalf("Decode(15 bytes) err = %v, want ErrShort", err)
	}
}

func TestZeroAllocs(t *testing.T) {
	var b [Size]byte
	d := Desc{Dst: 7, Buf: 9}
	n := testing.AllocsPerRun(1000, func() {
		d.Encode(b[:])
		d, _ = Decode(b[:])
	})
	if n != 0 {
		t.Fatalf("encode+decode allocates %v times, want 0", n)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(make([]byte, Size))
	f.Add([]byte{1, 2, 3})
	f.Add(bytes.Repeat([]byte{0xff}, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Decode(b)
		if len(b) < Size {
			if err == nil {
				t.Fatalf("Decode(%d bytes) accepted", len(b))
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		a := d.Array()
		if !bytes.Equal(a[:], b[:Size]) {
			t.Fatalf("re-encode % x != input % x", a, b[:Size])
		}
	})
}

func BenchmarkEncodeDecode(b *testing.B) {
	b.ReportAllocs()
	var buf [Size]byte
	d := Desc{Dst: 7, Buf: 9, Gen: 3}
	for b.Loop() {
		d.Encode(buf[:])
		d, _ = Decode(buf[:])
	}
}
