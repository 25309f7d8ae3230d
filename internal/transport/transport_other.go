//go:build !linux

package transport

import (
	"time"

	"github.com/spry-dev/spry/internal/pool"
)

func newUDSFabric(o Options) (Fabric, error) { return nil, ErrNotSupported }

func attachUDS(id uint16, fd int, dir string) (Conn, error) { return nil, ErrNotSupported }

func newSkmsgFabric(o Options) (Fabric, error) { return nil, ErrNotSupported }

func attachSkmsg(id uint16, fd int, ep uint32, p *pool.Pool) (Conn, error) {
	return nil, ErrNotSupported
}

func newRingFabric(name string, o Options) (Fabric, error) { return nil, ErrNotSupported }

func attachRing(name string, id uint16, ring uint32, p *pool.Pool, spin time.Duration) (Conn, error) {
	return nil, ErrNotSupported
}
