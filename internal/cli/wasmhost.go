package cli

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/internal/runtime/wasm"
)

// wasmHostCmd is how the node runs an app's sandbox host, the process that
// holds the app's wasm: instances (internal/runtime/wasm).
func wasmHostCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "wasm-host",
		Short:  "Run an app's sandbox host for its wasm: functions (the node does this)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := wasm.ServeHost(os.Getenv, cmd.ErrOrStderr()); err != nil {
				return exitError{2, "sandbox host: " + err.Error()}
			}
			return nil
		},
	}
}
