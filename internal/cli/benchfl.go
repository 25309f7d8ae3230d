package cli

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	ibench "github.com/spry-dev/spry/internal/bench"
)

func benchFLCmd() *cobra.Command {
	var (
		o             ibench.FLOptions
		modes, params string
		out, sweep    string
	)
	cmd := &cobra.Command{
		Use:   "fl",
		Short: "Federated-learning aggregation: Spry's app against a serverful gRPC aggregator and the same hierarchy as Knative functions",
		Long: `Run a federated-learning job on each mode: --clients simulated clients send updates of
--params float32 parameters (or a preset: resnet18 = 11.7M, resnet152 = 60.2M, small = 100k)
for --rounds rounds, fetching the global model each round. Modes: spry (Spry's aggregation
app: leaves fold updates where the gateway wrote them, in the shared-memory pool), serverful
(one long-running aggregator receiving updates over gRPC, as Flower's and Flame's servers do),
knative (the same hierarchy as HTTP functions behind Knative-style sidecars and a broker: a
local emulation). Reports per mode the median round time, the median time from the last
update's arrival to the model (aggregate), CPU-seconds per round, peak memory and errors,
and writes report.json, report.md and plots to --out. See docs/fl.md.`,
		Example: `  spry bench fl --clients 100 --params resnet18 --rounds 5 --out results/fl-resnet18
  spry bench fl --clients 8 --params resnet152 --rounds 3 --concurrency 4 --out results/fl-resnet152
  spry bench fl --clients 20 --params small --pattern stragglers:0.2 --modes spry,serverful`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Modes = splitList(modes)
			if n, ok := ibench.FLPresets[params]; ok {
				o.Params, o.Preset = n, params
			} else if n, err := strconv.Atoi(params); err == nil && n > 0 {
				o.Params = n
			} else {
				return exitError{2, fmt.Sprintf("--params %q: want a count of parameters or a preset (%s)", params, presetNames())}
			}
			o.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if sweep != "" {
				var s ibench.FLSweep
				for _, c := range splitList(sweep) {
					n, err := strconv.Atoi(c)
					if err != nil || n < 1 {
						return exitError{2, fmt.Sprintf("--sweep %q: want client counts like 10,25,50,100", sweep)}
					}
					o.Clients = n
					rep, err := ibench.RunFL(ctx, o)
					if err != nil {
						return err
					}
					s.Reports = append(s.Reports, rep)
					for _, m := range rep.Modes {
						fmt.Fprintf(cmd.OutOrStdout(), "%4d clients  %s\n", n, m)
					}
				}
				if out == "" {
					return nil
				}
				if err := s.Write(out); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "sweep: %s/sweep.json, %s/fl-round-vs-clients.png\n", out, out)
				return nil
			}
			rep, err := ibench.RunFL(ctx, o)
			if err != nil {
				return err
			}
			return printReport(cmd.OutOrStdout(), rep, out, rep.Modes)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Clients, "clients", 100, "simulated clients, each sending one update a round")
	f.StringVar(&params, "params", "resnet18", "the model's float32 parameters: a count, or resnet18, resnet152, small")
	f.IntVar(&o.Rounds, "rounds", 5, "rounds measured")
	f.StringVar(&modes, "modes", strings.Join(ibench.FLModes, ","), "modes to run, one after the other")
	f.StringVar(&o.Pattern, "pattern", "all", "when clients send: all (at once), spread:D (over D), stragglers:F (a fraction F sends after the round closed)")
	f.IntVar(&o.Concurrency, "concurrency", 16, "updates in flight at once (the clients' shared link; 0: every client at once)")
	f.BoolVar(&o.NoFetch, "no-fetch", false, "clients do not fetch the global model each round")
	f.IntVar(&o.Leaves, "leaves", 0, "the baselines' partial sums (serverful: fold slots; knative: leaf functions); default: the cores, 2..4")
	f.DurationVar(&o.Idle, "idle", 2*time.Second, "the window after the last measured round (the job still open for one more) in which idle CPU and wake-ups are measured")
	f.StringVarP(&out, "out", "o", "", "directory for report.json, report.md and the plots")
	f.StringVar(&sweep, "sweep", "", "run once per client count (e.g. 10,25,50,100) instead of --clients: a report each in --out/clients-N, and round time and CPU against clients plotted")
	f.StringVar(&o.Dir, "workdir", "", "keep the processes' configs and logs in this directory (default: a temporary one, removed)")
	return cmd
}

func presetNames() string {
	return "resnet18, resnet152, small"
}
