package wasm

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/pool"
)

// Large payloads are not copied into a guest: the pages of the pool buffer
// that hold the payload are mapped over the guest's input window for the
// step (MAP_SHARED of the pool's memfd, at the same offset in the window
// as in the buffer), and the window's own memory is put back after it.
// The guest sees those pages and nothing else of the pool; the parts of
// the first and last page outside the payload (another request's leftover
// bytes) are cleared first. In-place output lands in the buffer directly;
// only output the guest writes outside the mapped pages is copied back.

// mapping is a buffer's pages mapped into an instance's input window.
type mapping struct {
	start, end int // the mapped part of the window, page-aligned
}

// canMap reports whether buffer buf of p can be mapped into a window: the
// pool's buffers are whole pages.
func canMap(p *pool.Pool) bool {
	return p.BufferSize()%pageSize == 0 && p.BufferOffset(0)%pageSize == 0
}

// mapIn maps the pages of buf that hold [off, off+n) over the same range
// of the window win.
func mapIn(p *pool.Pool, buf uint32, win []byte, off, n int) (mapping, error) {
	start := off &^ (pageSize - 1)
	end := (off + n + pageSize - 1) &^ (pageSize - 1)
	b := p.Buffer(buf)
	// Leftovers of earlier requests in the first and last page.
	clear(b[start:off])
	clear(b[off+n : min(end, len(b))])
	_, err := unix.MmapPtr(p.Fd(), p.BufferOffset(buf)+int64(start), unsafe.Pointer(&win[start]), uintptr(end-start),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_FIXED|unix.MAP_POPULATE)
	if err != nil {
		return mapping{}, err
	}
	return mapping{start: start, end: end}, nil
}

// mapOut puts the window's own (zeroed) memory back over m.
func mapOut(win []byte, m mapping) error {
	_, err := unix.MmapPtr(-1, 0, unsafe.Pointer(&win[m.start]), uintptr(m.end-m.start),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED)
	return err
}
