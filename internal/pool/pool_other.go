//go:build !linux

package pool

// Create is only supported on Linux.
func Create(name string, l Layout) (*Pool, error) { return nil, ErrNotSupported }

// Attach is only supported on Linux.
func Attach(fd int) (*Pool, error) { return nil, ErrNotSupported }

// Close releases nothing off Linux.
func (p *Pool) Close() error { return nil }
