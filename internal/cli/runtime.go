package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	rthttp "github.com/spry-dev/spry/internal/runtime/http"
	rtlambda "github.com/spry-dev/spry/internal/runtime/lambda"
)

// runtimeCmd is how the node runs an instance of an adapter kind:
// `spry runtime KIND [flags] -- PROGRAM [ARGS]` (see internal/runtime).
func runtimeCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "runtime KIND [flags] -- PROGRAM [ARGS]",
		Short:              "Run an instance adapter for an http: or lambda: function (the node does this)",
		Hidden:             true,
		DisableFlagParsing: true,
		Args:               cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			run, ok := adapters[args[0]]
			if !ok {
				return exitError{2, fmt.Sprintf("no runtime %q (known: http, lambda)", args[0])}
			}
			if err := run(args[1:], cmd); err != nil {
				return exitError{2, args[0] + " function: " + err.Error()}
			}
			return nil
		},
	}
}

// adapters are the instance runners of the kinds that are not programs
// speaking the contract themselves.
var adapters = map[string]func(args []string, cmd *cobra.Command) error{
	"http":   func(args []string, cmd *cobra.Command) error { return rthttp.Main(args, cmd.ErrOrStderr()) },
	"lambda": func(args []string, cmd *cobra.Command) error { return rtlambda.Main(args, cmd.ErrOrStderr()) },
}
