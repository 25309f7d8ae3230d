package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/bench"
	ibench "github.com/spry-dev/spry/internal/bench"
	"github.com/spry-dev/spry/internal/bench/baseline"
	"github.com/spry-dev/spry/internal/transport"
)

// benchCommands are the benchmark verbs: bench, audit, and the hidden
// bench-proc that runs the baselines' processes.
func benchCommands() []*cobra.Command {
	return []*cobra.Command{benchCmd(), auditCmd(), benchProcCmd(), benchMQTTProcCmd()}
}

func benchCmd() *cobra.Command {
	var (
		o                  ibench.Options
		modes, out, chains string
		payload            string
		goBroker           bool
		systemCPUs         string
	)
	cmd := &cobra.Command{
		Use:   "bench WORKLOAD",
		Short: "Benchmark a workload on Spry's transports against Knative-style, HTTP and gRPC baselines",
		Long: `Benchmark a workload (` + strings.Join(bench.Names, ", ") + `) on every mode given: each Spry
transport of this build (` + strings.Join(transport.Names, ", ") + `), wasm (the steps as wasm: functions in
the app's sandbox host, on the transport auto picks; wasm-TRANSPORT for another), and the
baselines knative (function + sidecar per instance, a broker on every hop), http
(functions call each other over HTTP/1.1) and grpc (over gRPC). Every process runs separately; their CPU, context switches
and read/write syscalls are read from /proc. Writes report.json, report.md and plots to --out.
See docs/benchmarks.md.`,
		Example: `  spry bench chain --steps 2 --payload 64 --modes uds,knative,http,grpc --duration 30s --out results/chain
  spry bench chain --steps 2 --nodes 2 --out results/chain-nodes      # one node beside a local 2-node cluster
  spry bench boutique --chains home --connections 32 --out results/home
  spry bench boutique --chains home,checkout --modes skmsg,skmsg+calls,knative,grpc
  spry bench fanout --branches 8 --cpu 200us --modes skmsg,skmsg+seq,http
  spry bench parking --scale 0.05 --duration 60s`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Workload = args[0]
			o.Modes = splitList(modes)
			if len(o.Modes) == 0 {
				o.Modes = ibench.DefaultModes()
				if o.Nodes > 1 {
					// The chain on one node beside the chain across nodes.
					o.Modes = o.Modes[:1]
				}
			}
			if o.Nodes > 1 && !slices.Contains(o.Modes, ibench.ModeCluster) && !slices.Contains(o.Modes, ibench.ModeSpread) {
				o.Modes = append(o.Modes, ibench.ModeCluster, ibench.ModeSpread)
			}
			o.Shape.Chains = splitList(chains)
			if payload != "" {
				n, err := parseBytes(payload)
				if err != nil {
					return exitError{2, fmt.Sprintf("--payload %q: want a size like 64, 64B, 4KiB, 1MiB", payload)}
				}
				o.Shape.Payload = int(n)
			}
			ibench.ForceGoBroker = goBroker
			for _, c := range splitList(systemCPUs) {
				n, err := strconv.Atoi(c)
				if err != nil || n < 0 {
					return exitError{2, fmt.Sprintf("--system-cpus %q: want CPU numbers, e.g. 0 or 0,1", systemCPUs)}
				}
				ibench.SystemCPUs = append(ibench.SystemCPUs, n)
			}
			o.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := ibench.Run(ctx, o)
			if err != nil {
				return err
			}
			return printReport(cmd.OutOrStdout(), rep, out, rep.Modes)
		},
	}
	cmd.AddCommand(benchAutoscaleCmd(), benchColdStartCmd(), benchAsyncCmd(), benchMQTTCmd(), benchFLCmd(), benchRecoveryCmd())
	f := cmd.Flags()
	f.StringVar(&modes, "modes", "", "modes to compare, the first is the reference (default: this machine's auto transport, knative, http, grpc; all: "+strings.Join(ibench.ModeNames(), ",")+"; a Spry transport with +VARIANT runs the workload shaped otherwise: boutique +calls, fanout +seq)")
	f.DurationVar(&o.Duration, "duration", 30*time.Second, "measured time per mode (split over the rounds)")
	f.DurationVar(&o.Warmup, "warmup", 2*time.Second, "warm-up before each measurement")
	f.IntVar(&o.Rounds, "rounds", 3, "the modes take turns this many times, so drift hits all alike")
	f.IntVarP(&o.Connections, "connections", "c", 8, "connections of the load generator")
	f.StringVar(&o.Proto, "proto", "http1", "what the load generator speaks to Spry's gateway: http1, h2c, tls (HTTP/1.1 over TLS), h2 (over TLS), grpc (the baselines are driven over HTTP/1.1)")
	f.Float64Var(&o.Rate, "rate", 0, "open loop at this many requests/s (0: closed loop)")
	f.BoolVar(&o.Poisson, "poisson", false, "open loop with Poisson arrivals instead of a constant rate")
	f.DurationVar(&o.Idle, "idle", 2*time.Second, "window with no traffic in which idle CPU is measured")
	f.StringVarP(&out, "out", "o", "", "directory for report.json, report.md and the plots")
	f.IntVar(&o.Shape.Steps, "steps", 0, "chain: number of steps, 1..10 (default 2)")
	f.StringVar(&payload, "payload", "", "chain, fanout: payload size, up to 256MiB (default 64B, fanout 4KiB; past 1MiB in the pool's large-extent region)")
	f.IntVar(&o.Shape.Branches, "branches", 0, "fanout: branches of the fan-out, 2..16 (default 8)")
	f.StringVar(&systemCPUs, "system-cpus", "", "run the processes under test on these `CPUS` (e.g. 0); under taskset -c 1 spry bench … the load generator keeps a core of its own")
	f.DurationVar(&o.Shape.StepCPU, "cpu", 0, "extra CPU per step (boutique, chain), e.g. 50us")
	f.Float64Var(&o.Shape.Scale, "scale", 0, "motion, parking: multiply the steps' costs (default 1 and 0.05)")
	f.StringVar(&chains, "chains", "", "boutique: only these chains (home,product,viewcart,addcart,setcurrency,checkout)")
	f.DurationVar(&o.Shape.BurstEvery, "burst-every", 0, "motion, parking: time between bursts (default 2s, 10s)")
	f.IntVar(&o.Shape.BurstSize, "burst-size", 0, "motion, parking: requests per burst (default 40, 8)")
	f.IntVar(&o.Shape.Instances, "instances", 1, "instances of every function")
	f.IntVar(&o.Nodes, "nodes", 0, "also run mode cluster: a local cluster of this many nodes (spry-controller local: etcd, kube-apiserver, controller, agents; needs spry-controller beside spry and KUBEBUILDER_ASSETS or deploy/kubernetes/testbin.sh's cache) with the steps placed on different nodes, the load sent to the first step's node; and mode cluster-spread: every node runs the whole chain, the load spread over every gateway")
	f.StringVar(&o.Dir, "workdir", "", "keep the processes' configs and logs in this directory (default: a temporary one, removed)")
	f.BoolVar(&goBroker, "go-broker", false, "knative: use the Go broker even when nginx is installed")
	return cmd
}

func benchAutoscaleCmd() *cobra.Command {
	var (
		o             ibench.AutoscaleOptions
		policies, out string
		seed          uint64
	)
	cmd := &cobra.Command{
		Use:   "autoscale --trace azure_workload_1|azure_workload_2|FILE|bursty|idlegaps|ramp|diurnal[:SEED]",
		Short: "Replay a request-rate trace against a CPU-bound step on a real node, once per autoscaling policy",
		Long: `Replay a request-rate trace (azure_workload_1 or azure_workload_2, built in; a file in the
{"rps": [...], "interval": 1} format; or a generated one: ` + strings.Join(ibench.GeneratorNames, ", ") + `, each with an
optional :SEED) against a one-step
chain whose step burns --cpu of CPU per request, on a fresh node per policy, one after
the other. Reports per policy the SLO violation seconds, the share of requests over the
SLO, instance-seconds, scale events and p50/p99, and plots rate, prediction and
instances over time. Time is compressed --speedup times (the rate is not). Writes
report.json, report.md, autoscale.png, a timeline and the node's log per policy to --out.
With --nodes N, each policy runs on a fresh local cluster of N node agents (the cluster
controller's autoscaler on the agents' heartbeats, then placement), the load split over
every node's gateway, and nodes-POLICY.csv has the instances on each node over time.
See docs/benchmarks.md.`,
		Example: `  spry bench autoscale --trace azure_workload_1 --out results/azure1
  spry bench autoscale --trace bursty:7 --policy mu,kpa,fixed --speedup 5 --out results/bursty
  spry bench autoscale --trace ramp --length 120 --speedup 2 --slo 20ms --cpu 2ms
  spry bench autoscale --trace azure_workload_1 --nodes 3 --out results/azure1-cluster`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Trace == "" {
				return exitError{2, "--trace: required (azure_workload_1, azure_workload_2, a trace file, or " + strings.Join(ibench.GeneratorNames, ", ") + ")"}
			}
			o.Policies = splitList(policies)
			o.Seed = seed
			o.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := ibench.RunAutoscale(ctx, o)
			if err != nil {
				return err
			}
			return printReport(cmd.OutOrStdout(), rep, out, rep.Policies)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Trace, "trace", "", "azure_workload_1, azure_workload_2, a trace file, or bursty, idlegaps, ramp, diurnal (optionally :SEED)")
	f.StringVar(&policies, "policy", "mu,kpa", "policies to replay, one node each: mu, kpa, fixed")
	f.Float64Var(&o.Speedup, "speedup", ibench.DefaultSpeedup, "trace seconds per second of wall time (the rate is not scaled)")
	f.Float64Var(&o.RateScale, "rate-scale", 0, "multiply the trace's rates (default: the peak needs 60% of the machine's cores at --cpu)")
	f.DurationVar(&o.SLO, "slo", ibench.DefaultSLO, "the step's SLO (scale.slo)")
	f.Float64Var(&o.Attainment, "attainment", 0, "mu's scale.attainment: the share of SLO windows to meet the SLO (default 0.99)")
	f.DurationVar(&o.StepCPU, "cpu", ibench.DefaultStepCPU, "CPU the step burns per request")
	f.IntVar(&o.Length, "length", 1440, "generated traces: length in seconds")
	f.IntVar(&o.Min, "min", 0, "scale.min")
	f.IntVar(&o.Max, "max", 10, "scale.max")
	f.IntVar(&o.Fixed, "fixed-instances", 0, "the fixed policy's instances (default: the peak at 70% per instance)")
	f.IntVarP(&o.Connections, "connections", "c", 128, "load generator connections (open loop: enough for the queue to form at the node)")
	f.DurationVar(&o.Warmup, "warmup", 5*time.Second, "wall time at the trace's first rate before it starts (not measured)")
	f.BoolVar(&o.Uniform, "uniform", false, "evenly spaced arrivals instead of Poisson")
	f.Uint64Var(&seed, "seed", 1, "seed of the Poisson arrivals")
	f.StringVarP(&out, "out", "o", "", "directory for report.json, report.md, the plot, timelines and node logs")
	f.StringVar(&o.Dir, "workdir", "", "keep the nodes' configs and logs in this directory (default: a temporary one, removed)")
	f.IntVar(&o.Nodes, "nodes", 0, "replay on a local cluster of this many node agents (spry-controller local: needs spry-controller beside spry and kube-apiserver/etcd, see docs/cluster.md); the load is split over their gateways")
	return cmd
}

func benchColdStartCmd() *cobra.Command {
	var (
		o   ibench.ColdStartOptions
		out string
	)
	cmd := &cobra.Command{
		Use:   "coldstart",
		Short: "Measure the cold start of a builtin, a go:, an exec: and a wasm: function (scaled from zero)",
		Long: `Measure cold starts: the same function (bench/startprobe) as a builtin, as a go:
function, prebuilt as an exec: function and built for WASI as a wasm: function (in the
app's sandbox host), each on its own node at zero instances
(min: 0), woken --runs times by a request. Reports the time from the gateway's receipt of
the request to the new instance's handler, the client's latency, the instance's
startMillis and a warm request's latency. Run it from the repository (or give --go).`,
		Example: `  spry bench coldstart --runs 20 --out results/coldstart`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := ibench.RunColdStart(ctx, o)
			if err != nil {
				return err
			}
			return printReport(cmd.OutOrStdout(), rep, out, rep.Kinds)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Runs, "runs", 10, "cold starts per kind")
	f.StringVar(&o.GoDir, "go", "", "the go: function's package directory (default ./bench/startprobe/fn)")
	f.StringVarP(&out, "out", "o", "", "directory for report.json and report.md")
	f.StringVar(&o.Dir, "workdir", "", "keep the nodes' configs and logs in this directory (default: a temporary one, removed)")
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func auditCmd() *cobra.Command {
	var (
		o       ibench.AuditOptions
		data    string
		headers []string
	)
	cmd := &cobra.Command{
		Use:   "audit ROUTE",
		Short: "Measure a running node's chain hop by hop: copies, context switches, syscalls, protocol processing, (de)serializations",
		Example: `  spry audit /hello -d 'spry'
  spry audit /hello -d @body.txt -n 10000 -c 8`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Route = args[0]
			if !strings.HasPrefix(o.Route, "/") {
				o.Route = "/" + o.Route
			}
			if cmd.Flags().Changed("data") {
				b, err := readData(data, cmd.InOrStdin())
				if err != nil {
					return exitError{2, err.Error()}
				}
				o.Body = b
			}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return exitError{2, fmt.Sprintf("-H %q: want 'Name: value'", h)}
				}
				o.Header = append(o.Header, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			_, err := ibench.AuditNode(ctx, o, cmd.OutOrStdout())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Admin, "admin", DefaultAdmin, "the node's admin API address")
	f.StringVarP(&data, "data", "d", "", "request body: text, @FILE, or @- for stdin (makes the method POST)")
	f.StringVarP(&o.Method, "request", "X", "", "HTTP method (default GET, or POST with -d)")
	f.StringArrayVarP(&headers, "header", "H", nil, "extra request header, 'Name: value' (repeatable)")
	f.IntVarP(&o.Requests, "requests", "n", 2000, "requests to send")
	f.IntVarP(&o.Connections, "connections", "c", 4, "connections at once")
	return cmd
}

// benchProcCmd runs one process of a baseline (the bench starts these).
func benchProcCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "bench-proc [ROLE]",
		Short:  "Run one process of a benchmark baseline (spry bench does this)",
		Hidden: true,
		Args:   cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				// A role without a config (httpfn: the chain step as a
				// plain HTTP server on $PORT, run as an http: function).
				os.Setenv(baseline.EnvConfig, `{"role":"`+args[0]+`"}`)
			}
			if err := baseline.Main(); err != nil {
				return exitError{2, err.Error()}
			}
			return nil
		},
	}
}

// parseBytes reads a size: a number with an optional unit B, K/KB/KiB,
// M/MB/MiB (all binary).
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, err
	}
	switch strings.ToLower(strings.TrimSpace(s[i:])) {
	case "", "b":
		return n, nil
	case "k", "kb", "kib":
		return n << 10, nil
	case "m", "mb", "mib":
		return n << 20, nil
	case "g", "gb", "gib":
		return n << 30, nil
	}
	return 0, fmt.Errorf("unknown unit")
}

// printReport prints a report's summary, a line per item, and with out
// set writes the report into that directory.
func printReport[T fmt.Stringer](w io.Writer, rep interface{ Write(dir string) error }, out string, items []T) error {
	for _, it := range items {
		fmt.Fprintln(w, it.String())
	}
	if out == "" {
		return nil
	}
	if err := rep.Write(out); err != nil {
		return err
	}
	fmt.Fprintf(w, "report: %s/report.md\n", out)
	return nil
}
