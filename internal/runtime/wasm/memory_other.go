//go:build !linux

package wasm

import "github.com/spry-dev/spry/internal/pool"

const supported = false

type linearMemory struct {
	mem     []byte
	size    uint64
	limit   uint64
	refused atomicBool
}

type atomicBool struct{}

func (atomicBool) Load() bool { return false }
func (atomicBool) Store(bool) {}

type image struct{ size, data uint64 }

func newLinearMemory(uint64, *image) (*linearMemory, error) { return nil, ErrNotSupported }
func (m *linearMemory) Reallocate(uint64) []byte            { return nil }
func (m *linearMemory) Free()                               {}
func (m *linearMemory) bytes() []byte                       { return nil }
func newImage(string, []byte) (*image, error)               { return nil, ErrNotSupported }
func (img *image) close()                                   {}

type mapping struct{ start, end int }

func canMap(*pool.Pool) bool { return false }
func mapIn(*pool.Pool, uint32, []byte, int, int) (mapping, error) {
	return mapping{}, ErrNotSupported
}
func mapOut([]byte, mapping) error { return nil }
