package wasm

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// linearMemory is a guest's linear memory, outside the Go heap: a
// reservation of limit bytes of address space, of which the first size
// bytes are readable and writable and the rest are not mapped to anything
// (PROT_NONE). A clone starts as a private copy-on-write mapping of its
// function's snapshot image: it costs no copy, and pages it never writes
// stay shared with every other instance of the function.
//
// wazero checks every access against the current size itself; the
// reservation never moves, so the base address wazero holds stays valid
// when the memory grows.
type linearMemory struct {
	mem     []byte // the whole reservation
	size    uint64 // accessible bytes
	limit   uint64 // the most Reallocate grants
	refused atomic.Bool
}

// newLinearMemory reserves limit bytes (a multiple of the wasm page) and,
// with an image, maps it copy-on-write at the start.
func newLinearMemory(limit uint64, img *image) (*linearMemory, error) {
	mem, err := unix.Mmap(-1, 0, int(limit), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("wasm: reserve %d bytes of memory: %w", limit, err)
	}
	m := &linearMemory{mem: mem, limit: limit}
	if img != nil {
		if img.size > limit {
			m.Free()
			return nil, fmt.Errorf("wasm: the snapshot (%d bytes) is larger than the memory limit (%d)", img.size, limit)
		}
		_, err := unix.MmapPtr(img.fd, 0, unsafe.Pointer(&mem[0]), uintptr(img.size),
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED)
		if err != nil {
			m.Free()
			return nil, fmt.Errorf("wasm: map the snapshot: %w", err)
		}
		m.size = img.size
	}
	return m, nil
}

// Reallocate implements experimental.LinearMemory: it makes the first size
// bytes accessible, or returns nil past the limit (memory.grow then fails
// in the guest). A clone's first call returns its whole image even when
// the module asks for less.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.refused.Store(true)
		return nil
	}
	if size > m.size {
		if err := unix.Mprotect(m.mem[m.size:size], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			m.refused.Store(true)
			return nil
		}
		m.size = size
	}
	return m.mem[:m.size:m.size]
}

// Free implements experimental.LinearMemory.
func (m *linearMemory) Free() {
	if m.mem != nil {
		unix.Munmap(m.mem)
		m.mem = nil
	}
}

// bytes returns the accessible memory.
func (m *linearMemory) bytes() []byte { return m.mem[:m.size:m.size] }

const pageSize = 4096

// image is a function's memory after initialisation, in a sealed memfd
// that every clone maps copy-on-write.
type image struct {
	fd   int
	size uint64
	data uint64 // bytes actually stored (all-zero pages are left as holes)
}

// newImage writes mem into a sealed memfd, leaving all-zero pages as
// holes (they read as zeros and cost nothing).
func newImage(name string, mem []byte) (*image, error) {
	fd, err := unix.MemfdCreate("spry-wasm-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("wasm: memfd_create: %w", err)
	}
	img := &image{fd: fd, size: uint64(len(mem))}
	if err := unix.Ftruncate(fd, int64(len(mem))); err != nil {
		img.close()
		return nil, fmt.Errorf("wasm: size the snapshot: %w", err)
	}
	for off := 0; off < len(mem); off += pageSize {
		end := min(off+pageSize, len(mem))
		page := mem[off:end]
		if allZero(page) {
			continue
		}
		// Coalesce a run of non-zero pages into one write.
		for end < len(mem) && !allZero(mem[end:min(end+pageSize, len(mem))]) {
			end = min(end+pageSize, len(mem))
		}
		if _, err := unix.Pwrite(fd, mem[off:end], int64(off)); err != nil {
			img.close()
			return nil, fmt.Errorf("wasm: write the snapshot: %w", err)
		}
		img.data += uint64(end - off)
		off = end - pageSize
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		img.close()
		return nil, fmt.Errorf("wasm: seal the snapshot: %w", err)
	}
	return img, nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if *(*uint64)(unsafe.Pointer(&b[0])) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (img *image) close() {
	if img != nil && img.fd >= 0 {
		unix.Close(img.fd)
		img.fd = -1
	}
}
