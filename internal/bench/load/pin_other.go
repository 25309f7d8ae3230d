//go:build !linux

package load

import "errors"

func pinThreads([]int) (func(), error) {
	return nil, errors.New("load: pinning to CPUs needs Linux")
}
