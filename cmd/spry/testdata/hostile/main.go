// Command hostile is a test function that attacks its own app's pool: once
// the file named by $HOSTILE_FLAG exists, and as long as it does, it writes random bytes and
// random words into every part of the pool it can map (the header, the
// routing table, the counters, the rings or endpoint table, the buffer
// headers, the payloads), with its own read-write mapping (the SDK's
// read-only view of the routing table is no obstacle to a process that
// maps the memfd again). Meanwhile it serves as an echo step. Without the
// file it is a plain echo function.
package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/sdk"
)

func main() {
	if flag := os.Getenv("HOSTILE_FLAG"); flag != "" {
		go func() {
			for {
				if _, err := os.Stat(flag); err == nil {
					scribble(flag)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error { return nil })
}

func scribble(flag string) {
	fd, err := strconv.Atoi(os.Getenv(sdk.EnvPoolFD))
	if err != nil {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return
	}
	// The regions, from the pool header (read before it is scribbled on).
	u64 := func(off int) uint64 { return binary.LittleEndian.Uint64(mem[off:]) }
	// route, stats, ring, hdr, arena, extmap (the extent bitmap), ext.
	edges := []uint64{0, 4096, u64(48), u64(56), u64(64), u64(72), u64(80), u64(88), u64(96), uint64(len(mem))}
	words := []uint64{0, 1, 2, 0xff, 0xffff, 1 << 16, 1 << 31, 1 << 32, 1<<48 | 1, ^uint64(0), ^uint64(0) >> 1}
	fmt.Fprintf(os.Stderr, "hostile: scribbling over %d bytes of the pool\n", len(mem))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
	for n := 0; ; n++ {
		if n%1024 == 0 {
			if _, err := os.Stat(flag); err != nil {
				return
			}
		}
		k := rng.IntN(len(edges) - 1)
		lo, hi := edges[k], edges[k+1]
		if hi <= lo+8 || hi > uint64(len(mem)) {
			continue
		}
		off := (lo + rng.Uint64N(hi-lo-8)) &^ 7
		switch rng.IntN(3) {
		case 0:
			binary.LittleEndian.PutUint64(mem[off:], rng.Uint64())
		case 1:
			binary.LittleEndian.PutUint64(mem[off:], words[rng.IntN(len(words))])
		default:
			mem[off+uint64(rng.IntN(8))] = byte(rng.Uint32())
		}
		if n%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}
