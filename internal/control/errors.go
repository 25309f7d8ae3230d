package control

import (
	"errors"
	"strings"
)

// ErrInvalidConfig is wrapped by every configuration error of this package.
var ErrInvalidConfig = errors.New("invalid control config")

// ConfigError lists every problem found in a configuration, each prefixed
// with its field path (e.g. "mu.percentile: 1.5, want in [0.5, 1)").
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	return "control: " + strings.Join(e.Problems, "; ")
}

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }
