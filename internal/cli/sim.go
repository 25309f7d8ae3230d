package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/internal/control/sim"
)

func simCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate Spry's control plane beyond this machine",
	}
	cmd.AddCommand(simClusterCmd())
	return cmd
}

func simClusterCmd() *cobra.Command {
	var cfg sim.ClusterConfig
	var out string
	cmd := &cobra.Command{
		Use:   "cluster --nodes N --functions M [--out DIR]",
		Short: "Run the cluster controller (mu autoscaling, placement) on simulated nodes; compare placement policies",
		Long: `Runs the cluster controller's own logic — mu autoscaling on cluster-wide
observations, then placement — once per placement policy (drf-alignment,
drf-worstfit, drf-bestfit and the Kubernetes-like spread baseline) on one
generated workload: heterogeneous nodes, functions in chains of 1–4 steps
with heterogeneous sizes, speeds and diurnal, bursty load whose peaks want
more than the cluster has. Writes DIR/report.json and prints a summary.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := sim.Cluster(cfg)
			if err != nil {
				return exitError{2, "sim cluster: " + err.Error()}
			}
			if out != "" {
				if err := os.MkdirAll(out, 0o755); err != nil {
					return err
				}
				b, _ := json.MarshalIndent(rep, "", "  ")
				if err := os.WriteFile(filepath.Join(out, "report.json"), append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(cmd.OutOrStdout(), "%d nodes, %d functions in %d chains, %d ticks\n", rep.Nodes, rep.Functions, rep.Chains, rep.Ticks)
			fmt.Fprintln(w, "policy\tunfairness\tjain\theld\tlocal hops\tslo met\tunplaced\tdecision p50 ms\tp99 ms\tmemory MiB\t")
			for _, p := range rep.Policies {
				fmt.Fprintf(w, "%s\t%.3f\t%.4f\t%.3f\t%.3f\t%.3f\t%.3f\t%.2f\t%.2f\t%.1f\t\n", p.Policy, p.Unfairness, p.JainFairness,
					p.ResourcesHeld, p.LocalHopFraction, p.SLOMetFraction, p.UnplacedFraction, p.DecisionMsP50, p.DecisionMsP99, float64(p.MemoryBytes)/(1<<20))
			}
			w.Flush()
			if out != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "report: %s\n", filepath.Join(out, "report.json"))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Nodes, "nodes", 100, "simulated nodes")
	f.IntVar(&cfg.Functions, "functions", 1000, "functions (grouped in chains of 1–4 steps)")
	f.IntVar(&cfg.Ticks, "ticks", 300, "control periods (1 s each) to simulate")
	f.Float64Var(&cfg.Overcommit, "overcommit", 1.25, "peak demand over capacity of the scarcer resource")
	f.Uint64Var(&cfg.Seed, "seed", 1, "workload seed")
	f.StringVar(&out, "out", "", "directory for report.json")
	return cmd
}
