package wasm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// GoBuildEnv is the environment (added to the caller's) that builds a Go
// package into a wasm function: WASI, as a reactor whose exports the SDK
// defines.
var GoBuildEnv = []string{"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"}

// GoBuildFlags are the go build flags for a wasm function.
var GoBuildFlags = []string{"-buildmode=c-shared"}

// BuildGo builds the Go package target (a main package calling sdk.Serve)
// from directory dir into out, a wasm module, and returns the module.
func BuildGo(ctx context.Context, target, dir, out string) ([]byte, error) {
	tmp := out + ".tmp" + fmt.Sprint(os.Getpid())
	args := append([]string{"build"}, GoBuildFlags...)
	args = append(args, "-o", tmp, target)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), GoBuildEnv...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("build %s for wasm: %w\n%s", target, err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	return os.ReadFile(out)
}
