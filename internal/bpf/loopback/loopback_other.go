//go:build !linux

// Package loopback makes the connected loopback TCP socket pairs Spry puts
// into its sockmap (Linux only).
package loopback

import "errors"

// Pair is only supported on Linux.
func Pair() (a, b int, err error) {
	return -1, -1, errors.New("loopback: not supported on this platform")
}
