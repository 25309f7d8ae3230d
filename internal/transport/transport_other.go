//go:build !linux

package transport

func newUDSFabric(o Options) (Fabric, error) { return nil, ErrNotSupported }

func attachUDS(id uint16, fd int, dir string) (Conn, error) { return nil, ErrNotSupported }
