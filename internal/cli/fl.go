package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	ibench "github.com/spry-dev/spry/internal/bench"
	"github.com/spry-dev/spry/internal/fl"
)

// flCmd is `spry fl`: the federated-learning aggregation app.
func flCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fl",
		Short: "Federated-learning aggregation: the app that ships with Spry (see docs/fl.md)",
	}
	cmd.AddCommand(flConfigCmd())
	return cmd
}

func flConfigCmd() *cobra.Command {
	var (
		o      fl.AppOptions
		params string
	)
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print a spry.yaml that runs the aggregation app, its pool sized for a model",
		Example: `  spry fl config --params resnet18 > fl.yaml && spry up -f fl.yaml
  curl -X PUT localhost:8080/fl/mnist -d '{"params": 7850, "updates": 10}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n, ok := ibench.FLPresets[params]; ok {
				o.Params = n
			} else if n, err := strconv.Atoi(params); err == nil && n > 0 && n <= fl.MaxParams {
				o.Params = n
			} else {
				return exitError{2, fmt.Sprintf("--params %q: want a count of parameters (at most %d) or a preset (%s)", params, fl.MaxParams, presetNames())}
			}
			fmt.Fprint(cmd.OutOrStdout(), fl.AppYAML(o))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&params, "params", "resnet18", "the largest model's float32 parameters: a count, or resnet18, resnet152, small")
	f.StringVar(&o.Name, "app", "fl", "the app's name")
	f.IntVar(&o.Uploads, "uploads", 16, "updates in flight at once that the pool holds (more are answered 503 with Retry-After)")
	f.IntVar(&o.MaxLeaves, "leaves", 4, "the most leaf aggregators the control plane may run")
	f.DurationVar(&o.Idle, "idle", fl.DefaultTTL, "how long a job may go without a request (the top's scale.idle; a job's ttl may not be longer)")
	f.StringVar(&o.StateDir, "state", "", "a directory where the top aggregator keeps its jobs (spec, results, latest model) so that they survive its restart; writable by the app's uid (default: in its memory only)")
	return cmd
}
