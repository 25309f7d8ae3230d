//go:build !linux

package transport

import (
	"os"
)

func dupFile(fd int, name string) (*os.File, error) { return nil, ErrNotSupported }

func checkLeaks(run func() int, cleanup func()) int {
	code := run()
	cleanup()
	return code
}
