package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	ibench "github.com/spry-dev/spry/internal/bench"
)

func benchAsyncCmd() *cobra.Command {
	var (
		o   ibench.AsyncOptions
		out string
	)
	cmd := &cobra.Command{
		Use:   "async",
		Short: "Measure asynchronous invocation: accepted/s (durable) against sync req/s, completion latency, the recorder's cost",
		Long: `Measure asynchronous invocation on one node and chain (upper → reverse), in one run:
the synchronous req/s; the Prefer: respond-async invocations accepted per second (each 202 is
sent once the activation is stored durably); how fast the backlog completes; the end-to-end
completion latency (accepted → finished, from the activation records) at half the sync rate;
and the sync req/s of a twin node whose chain records nothing (record: none), for the cost of
the default recorder. Phases take turns for --rounds rounds; medians are reported.`,
		Example: `  spry bench async --duration 10s --rounds 3 --out results/async`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := ibench.RunAsync(ctx, o)
			if err != nil {
				return err
			}
			if out != "" {
				if err := ibench.WriteAsyncReport(out, rep); err != nil {
					return err
				}
			}
			m := rep.Median
			fmt.Fprintf(cmd.OutOrStdout(), "sync %.0f req/s (record none %.0f: ratio %.3f); async accepted %.0f/s = %.2fx sync; completed %.0f/s; completion p50 %.2f ms p99 %.2f ms at %.0f/s\n",
				m.SyncRPS, m.SyncNoRecRPS, rep.RecorderRatio, m.AcceptedPS, rep.AsyncToSync, m.CompletedPS, m.CompletionP50, m.CompletionP99, m.LatencyRate)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per phase and round")
	f.IntVar(&o.Rounds, "rounds", 3, "rounds (medians are reported)")
	f.IntVarP(&o.Connections, "connections", "c", 32, "client connections")
	f.IntVar(&o.Payload, "payload", 64, "body bytes")
	f.StringVarP(&out, "out", "o", "", "directory for report.json and report.md")
	f.StringVar(&o.Dir, "workdir", "", "keep the nodes' configs, logs and stores here (default: a temporary one, removed)")
	return cmd
}

func benchMQTTCmd() *cobra.Command {
	var (
		o   ibench.MQTTOptions
		out string
		qos []int
	)
	cmd := &cobra.Command{
		Use:   "mqtt",
		Short: "Measure MQTT publish → chain → reply against steps that talk through a broker",
		Long: `Measure MQTT publish → upper → reverse → reply: on Spry (the embedded broker, a trigger,
the payload into the pool once, descriptors between the steps) and on the baseline MQTT
connectors build (each step a process subscribed to a broker, republishing its output to the
next step's topic; the same mochi-mqtt broker, alone). Messages/s, p50/p99 from PUBLISH to
reply, CPU per message of every process of the system under test, at QoS 0 and 1.`,
		Example: `  spry bench mqtt --duration 10s --rounds 3 --out results/mqtt`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, q := range qos {
				if q != 0 && q != 1 {
					return exitError{2, fmt.Sprintf("--qos %d: want 0 or 1", q)}
				}
				o.QoS = append(o.QoS, byte(q))
			}
			o.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := ibench.RunMQTT(ctx, o)
			if err != nil {
				return err
			}
			if out != "" {
				if err := ibench.WriteMQTTReport(out, rep); err != nil {
					return err
				}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(map[string]any{"median": rep.Median, "speedup": rep.Speedup, "cpuRatio": rep.CPU})
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per mode, QoS and round")
	f.IntVar(&o.Rounds, "rounds", 3, "rounds (medians are reported)")
	f.IntVarP(&o.Clients, "clients", "c", 16, "publishers, one message out each")
	f.IntVar(&o.Payload, "payload", 64, "payload bytes")
	f.IntSliceVar(&qos, "qos", []int{0, 1}, "QoS levels")
	f.StringVarP(&out, "out", "o", "", "directory for report.json and report.md")
	f.StringVar(&o.Dir, "workdir", "", "keep configs and logs here (default: a temporary one, removed)")
	return cmd
}

// benchMQTTProcCmd runs the baseline's processes for spry bench mqtt.
func benchMQTTProcCmd() *cobra.Command {
	var listen, broker, in, out, fn, qos string
	cmd := &cobra.Command{
		Use:    "bench-mqtt broker|step",
		Short:  "A process of spry bench mqtt's baseline (the bench starts it)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "broker":
				return ibench.RunMQTTBroker(listen)
			case "step":
				q, err := strconv.Atoi(qos)
				if err != nil || q < 0 || q > 1 {
					return exitError{2, "--qos: want 0 or 1"}
				}
				return ibench.RunMQTTStep(broker, in, out, fn, byte(q))
			}
			return exitError{2, "want broker or step"}
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:1883", "broker: address")
	f.StringVar(&broker, "broker", "", "step: the broker's address")
	f.StringVar(&in, "in", "", "step: the topic filter it subscribes to")
	f.StringVar(&out, "out", "", "step: the topic it publishes to")
	f.StringVar(&fn, "fn", "", "step: upper or reverse")
	f.StringVar(&qos, "qos", "0", "step: QoS")
	return cmd
}
