// Command spry-fn is the runner of builtin function instances: what
// `spry fn NAME` does, in a binary that carries only the builtins, the SDK
// and the data plane (a few MB, against spry's tens), so an instance
// starts in a fraction of the time. A node uses it for its builtins when
// it lies beside the spry executable and comes from the same build (see
// --identify); otherwise builtins run as `spry fn NAME`.
//
//	go build -o bin/ ./cmd/spry ./cmd/spry-fn
package main

import (
	"fmt"
	"os"

	_ "github.com/spry-dev/spry/bench" // the benchmark workloads' builtins
	"github.com/spry-dev/spry/internal/builtin"
	_ "github.com/spry-dev/spry/internal/fl" // the federated-learning app's builtins
	"github.com/spry-dev/spry/sdk"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: spry-fn NAME | --identify (the node runs this: see `spry builtins`)")
		os.Exit(2)
	}
	if os.Args[1] == "--identify" {
		fmt.Println(builtin.Identity())
		return
	}
	f, ok := builtin.Lookup(os.Args[1])
	if !ok {
		fmt.Fprintf(os.Stderr, "spry-fn: no builtin function %q (see spry builtins)\n", os.Args[1])
		os.Exit(2)
	}
	if err := sdk.Run(f.Handler); err != nil {
		fmt.Fprintf(os.Stderr, "spry: function %s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
}
