package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/internal/node"
)

// TopRow is one function in `spry top`.
type TopRow struct {
	App        string  `json:"app"`
	Function   string  `json:"function"`
	Policy     string  `json:"policy"`
	RPS        float64 `json:"rps"`
	Predicted  float64 `json:"predictedRps"`
	Ready      int     `json:"ready"`
	Desired    int     `json:"desired"`
	Queue      int     `json:"queue"`
	P50Millis  float64 `json:"p50Millis"`
	P99Millis  float64 `json:"p99Millis"`
	SLOMillis  float64 `json:"sloMillis,omitempty"`
	Attainment float64 `json:"sloAttainment"`
	Reason     string  `json:"reason"`
}

func topRows(s *node.Status) []TopRow {
	var rows []TopRow
	for _, a := range s.Apps {
		for _, f := range a.Functions {
			sc := f.Scale
			rows = append(rows, TopRow{
				App: a.Name, Function: f.Name, Policy: sc.Policy, RPS: sc.RPS, Predicted: sc.Predicted,
				Ready: sc.Ready, Desired: sc.Desired, Queue: sc.Queue, P50Millis: sc.P50Millis, P99Millis: sc.P99Millis,
				SLOMillis: sc.SLOMillis, Attainment: sc.Attainment, Reason: sc.Reason,
			})
		}
	}
	return rows
}

func printTop(w io.Writer, s *node.Status, rows []TopRow) {
	fmt.Fprintf(w, "spry top — node pid %d, http %s, up %s — %s\n\n", s.Node.PID, s.Node.Listen,
		(time.Duration(s.Node.Uptime) * time.Second).String(), time.Now().Format("15:04:05"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "APP\tFUNCTION\tPOLICY\tRPS\tPREDICTED\tINSTANCES\tQUEUE\tP50 ms\tP99 ms\tSLO ms\tWITHIN SLO\tREASON\t")
	for _, r := range rows {
		slo, within := "-", "-"
		if r.SLOMillis > 0 {
			slo = fmt.Sprintf("%.1f", r.SLOMillis)
			within = fmt.Sprintf("%.1f%%", 100*r.Attainment)
			if r.P99Millis > r.SLOMillis {
				within += " !"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%.1f\t%d/%d\t%d\t%.2f\t%.2f\t%s\t%s\t%s\t\n", r.App, r.Function, r.Policy,
			r.RPS, r.Predicted, r.Ready, r.Desired, r.Queue, r.P50Millis, r.P99Millis, slo, within, r.Reason)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nINSTANCES is ready/desired; latencies are of one step (queueing + execution) over the last second.")
}

func topCmd() *cobra.Command {
	var (
		admin, output string
		once          bool
		interval      time.Duration
		cl            clusterStatusFlags
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Watch each function's load, instances and latency against its SLO, live",
		Example: `  spry top
  spry top --once -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return exitError{2, fmt.Sprintf("-o %q: want table or json", output)}
			}
			out := cmd.OutOrStdout()
			for cl.on {
				// Cluster-wide: nodes and apps with each function's
				// placement, ready and wanted instances, refreshed.
				var b strings.Builder
				if !once && output == "table" {
					b.WriteString("\x1b[H\x1b[2J")
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
				err := clusterStatus(ctx, &b, cl, output)
				cancel()
				if err != nil {
					return err
				}
				io.WriteString(out, b.String())
				if once {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
			for {
				ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
				s, err := fetchStatus(ctx, admin)
				cancel()
				if err != nil {
					return err
				}
				rows := topRows(s)
				if output == "json" {
					enc := json.NewEncoder(out)
					if once {
						enc.SetIndent("", "  ")
					}
					if err := enc.Encode(struct {
						Functions []TopRow `json:"functions"`
					}{rows}); err != nil {
						return err
					}
				} else {
					var b strings.Builder
					if !once {
						b.WriteString("\x1b[H\x1b[2J") // home, clear
					}
					printTop(&b, s, rows)
					io.WriteString(out, b.String())
				}
				if once {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&admin, "admin", DefaultAdmin, "the node's admin API address")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	f.BoolVar(&once, "once", false, "print once and exit")
	f.DurationVar(&interval, "interval", time.Second, "refresh period")
	cl.flags(f)
	return cmd
}
