package cli

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	ibench "github.com/spry-dev/spry/internal/bench"
)

func benchRecoveryCmd() *cobra.Command {
	var (
		o   ibench.RecoveryOptions
		out string
	)
	cmd := &cobra.Command{
		Use:   "recovery",
		Short: "Measure how long traffic takes to recover after a node of a cluster is killed",
		Long: `Measure recovery after a node loss on a local cluster (spry-controller local: needs
spry-controller beside spry and kube-apiserver/etcd, see docs/cluster.md): the 2-step chain
with its steps on two nodes and a spare node, an open-loop load to the first step's node,
then SIGKILL of the second step's node's agent (its instances go with it). Reports per run
the requests that failed, when the step was ready again on another node and when every
request was answered again, all from the kill; then the medians. Each run is a fresh
cluster. The lease (how long a silent node counts as up) is the floor of every recovery.`,
		Example: `  spry bench recovery --runs 3 --out results/recovery
  spry bench recovery --lease 10s --rate 1000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := ibench.RunRecovery(ctx, o)
			if err != nil {
				return err
			}
			if out != "" {
				if err := ibench.WriteRecovery(out, rep); err != nil {
					return err
				}
			}
			_, err = cmd.OutOrStdout().Write([]byte(rep.Markdown()))
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", 3, "node agents (at least 3: two for the chain, a spare)")
	f.IntVar(&o.Runs, "runs", 3, "kills, each on a fresh cluster (medians are reported)")
	f.Float64Var(&o.Rate, "rate", 500, "requests per second (open loop, constant)")
	f.DurationVar(&o.Before, "before", 2*time.Second, "load before the kill (and after the recovery)")
	f.DurationVar(&o.Lease, "lease", 2*time.Second, "the agents' lease (whole seconds)")
	f.DurationVar(&o.Heartbeat, "heartbeat", 250*time.Millisecond, "the agents' heartbeat and the controller's period")
	f.DurationVar(&o.Timeout, "timeout", time.Minute, "give up on a run this long after the kill")
	f.StringVarP(&out, "out", "o", "", "directory for report.json and report.md")
	f.StringVar(&o.Dir, "workdir", "", "keep the clusters' state and logs here (default: a temporary one, removed)")
	return cmd
}
