package transport

import (
	"os"

	"golang.org/x/sys/unix"
)

// dupFile returns a new *os.File for a duplicate of fd (fd stays open and
// owned by its owner).
func dupFile(fd int, name string) (*os.File, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(d), name), nil
}
