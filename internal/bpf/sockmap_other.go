//go:build !linux

package bpf

import "fmt"

// Sockmap is only supported on Linux.
type Sockmap struct{}

// New reports that eBPF sockmaps need Linux.
func New() (*Sockmap, error) { return nil, fmt.Errorf("%w: eBPF sockmaps need Linux", ErrNotSupported) }

func (s *Sockmap) Register(id uint16, app uint32, fd int) error { return ErrNotSupported }
func (s *Sockmap) Unregister(id uint16) error                   { return ErrNotSupported }
func (s *Sockmap) Registered(id uint16) (uint32, bool)          { return 0, false }
func (s *Sockmap) Counters(id uint16) (Counters, error)         { return Counters{}, ErrNotSupported }
func (s *Sockmap) Each(fn func(id uint16, app uint32, c Counters)) error {
	return ErrNotSupported
}
func (s *Sockmap) Refused() uint64                      { return 0 }
func (s *Sockmap) MapIDs() (prog uint32, maps []uint32) { return 0, nil }
func (s *Sockmap) Close() error                         { return nil }
