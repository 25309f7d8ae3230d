// Command wasmfn runs one of spry's builtins — the demo's steps and the
// benchmark workloads' handlers, the very functions the other modes run —
// as a wasm: function: the benchmark's wasm mode builds it for WASI and
// names the builtin in $BENCH_BUILTIN.
package main

import (
	"os"

	_ "github.com/spry-dev/spry/bench" // registers the workloads' handlers
	"github.com/spry-dev/spry/internal/builtin"
	"github.com/spry-dev/spry/sdk"
)

// EnvBuiltin names the builtin to run.
const EnvBuiltin = "BENCH_BUILTIN"

func main() {
	name := os.Getenv(EnvBuiltin)
	f, ok := builtin.Lookup(name)
	if !ok {
		sdk.Serve(func(*sdk.Request, *sdk.Response) error {
			return sdk.Errorf(500, "wasmfn: no builtin %q ($%s)", name, EnvBuiltin)
		})
		return
	}
	sdk.Serve(f.Handler)
}
