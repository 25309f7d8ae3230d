//go:build !linux

package node

import (
	"fmt"
	"os"

	"github.com/spry-dev/spry/internal/transport"
)

func tryLock(f *os.File) (bool, error) {
	return false, fmt.Errorf("uid leases: %w", transport.ErrNotSupported)
}
