//go:build !linux

package load

import "time"

func dial(addr string, timeout time.Duration) (conn, error) { return dialNet(addr, timeout) }
