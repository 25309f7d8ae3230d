package sdk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoSecret is returned by Secret for a name the app's secrets: lack.
var ErrNoSecret = errors.New("sdk: no such secret")

// Secret returns the value of the app's secret name (see secrets: in
// spry.yaml). Secrets are files in the directory $SPRY_SECRETS names,
// readable by this app's instances and no other app's; read them when you
// need them rather than keeping copies around.
func Secret(name string) ([]byte, error) {
	dir := os.Getenv(EnvSecrets)
	if dir == "" || name == "" || strings.ContainsAny(name, "/\x00") || name[0] == '.' {
		return nil, fmt.Errorf("%w: %q", ErrNoSecret, name)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrNoSecret, name)
	}
	return b, err
}
