package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/internal/contract"
)

// contractCmd is `spry contract test -- PROGRAM [ARGS]`: the function
// contract's conformance suite against a program (an SDK's contract
// handler; see internal/contract).
func contractCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "contract",
		Short: "The function contract (docs/contract.md): test an implementation of it",
	}
	var tg contract.Target
	test := &cobra.Command{
		Use:   "test [flags] -- PROGRAM [ARGS]",
		Short: "Run the contract's conformance suite against PROGRAM, which runs the contract handler",
		Example: `  spry contract test -- python3 -m spry ./contract_fn.py
  spry contract test --adapter -- spry runtime http -- ./server`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tg.Argv = append([]string{contract.Abs(args[0])}, args[1:]...)
			// The program gets the caller's environment (PYTHONPATH, say),
			// without spry's own variables, then --env.
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "SPRY_") {
					tg.Env = append([]string{kv}, tg.Env...)
				}
			}
			report, ok := contract.Report(contract.Run(tg))
			fmt.Fprint(cmd.OutOrStdout(), report)
			if !ok {
				return exitError{1, "the program does not follow the contract"}
			}
			return nil
		},
	}
	f := test.Flags()
	f.StringArrayVar(&tg.Env, "env", nil, "KEY=value added to the program's environment (repeat)")
	f.BoolVar(&tg.NoFresh, "adapter", false, "the program is an adapter: its output always goes into the input buffer (skips the fresh-buffer case)")
	f.BoolVar(&tg.NoConcurrency, "one-at-a-time", false, "the program runs one handler at a time (skips the concurrency case)")
	cmd.AddCommand(test)
	return cmd
}
