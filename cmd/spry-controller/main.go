// Command spry-controller is Spry's cluster controller (also started as
// `spry controller`): mu autoscaling and DRF placement over the node
// agents, on Kubernetes with controller-runtime. It is a binary of its own
// so that spry, the node binary, links no client-go. See docs/cluster.md.
//
//	spry-controller [--kubeconfig F] [--placement drf-alignment] ...   the controller
//	spry-controller local --nodes 3                                   a whole cluster on this machine
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spry-dev/spry/internal/builtin"
	"github.com/spry-dev/spry/internal/cluster/controller"
	"github.com/spry-dev/spry/internal/control"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "local" {
		os.Exit(local(os.Args[2:]))
	}
	fs := flag.NewFlagSet("spry-controller", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default $KUBECONFIG, in-cluster, ~/.kube/config)")
	ns := fs.String("namespace", "spry-system", "namespace of the node leases and the leader-election lease")
	placement := fs.String("placement", control.StrategyAlignment, "placement: drf-alignment, drf-worstfit, drf-bestfit or spread")
	period := fs.Duration("period", time.Second, "control period")
	grace := fs.Duration("lost-grace", 30*time.Second, "how long a node whose lease expired keeps its instances (a stalled or cut-off node goes on serving them); negative: none")
	health := fs.String("health", "0", "address of /healthz and /readyz (0: off)")
	noElect := fs.Bool("no-leader-election", false, "act without electing a leader (one replica only)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	_ = fs.Parse(os.Args[1:])
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "spry-controller: --log-level %q: want debug, info, warn or error\n", *logLevel)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	rc, err := restConfig(*kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "spry-controller:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := controller.ControllerConfig{Namespace: *ns, Period: *period, LostGrace: *grace, Logger: log,
		Placement: control.PlacementConfig{Strategy: *placement},
		Builtins:  func(name string) bool { _, ok := builtin.Lookup(name); return ok }}
	if err := controller.RunController(ctx, rc, cfg, controller.RunOptions{LeaderElection: !*noElect, HealthAddr: *health}); err != nil {
		fmt.Fprintln(os.Stderr, "spry-controller:", err)
		os.Exit(1)
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig == "" {
		if c, err := rest.InClusterConfig(); err == nil {
			return c, nil
		}
		home, _ := os.UserHomeDir()
		kubeconfig = home + "/.kube/config"
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}
