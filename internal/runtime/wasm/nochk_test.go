package wasm

import (
	"os"
	"testing"

	"github.com/spry-dev/spry/internal/runtime/wasm/wasmbin"
)

func init() {
	if os.Getenv("NOCHECKS") != "" {
		wasmbin.NoChecks = true
	}
}

var _ = testing.Short
