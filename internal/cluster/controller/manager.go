package controller

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Scheme returns a scheme with Spry's types and the Kubernetes types the
// controller and agents use (leases), and nothing else.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = AddToScheme(s)
	_ = coordinationv1.AddToScheme(s)
	return s
}

// RunOptions are the process-level options of `spry controller`.
type RunOptions struct {
	LeaderElection bool   // one active controller among replicas (default in `spry controller`)
	HealthAddr     string // liveness/readiness probes ("0" to disable)
	MetricsAddr    string // controller-runtime's metrics ("0" to disable)
}

// RunController runs the controller under controller-runtime's manager:
// with leader election, only the elected replica runs rounds; a SpryApp
// change starts a round at once.
func RunController(ctx context.Context, rc *rest.Config, cfg ControllerConfig, opts RunOptions) error {
	cfg.fill()
	ctrl.SetLogger(logr.FromSlogHandler(cfg.Logger.Handler()))
	if opts.HealthAddr == "" {
		opts.HealthAddr = "0"
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "0"
	}
	mgr, err := ctrl.NewManager(rc, ctrl.Options{
		Scheme:                  Scheme(),
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        "spry-controller",
		LeaderElectionNamespace: cfg.Namespace,
		// A new leader must not act on a stale view: release on exit so
		// a restart takes over at once.
		LeaderElectionReleaseOnCancel: true,
		HealthProbeBindAddress:        opts.HealthAddr,
		Metrics:                       metricsserver.Options{BindAddress: opts.MetricsAddr},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{cfg.Namespace: {}}},
		}},
	})
	if err != nil {
		return fmt.Errorf("cluster: manager: %w", err)
	}
	if opts.HealthAddr != "0" {
		_ = mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil })
		_ = mgr.AddReadyzCheck("ping", func(*http.Request) error { return nil })
	}
	c, err := NewController(mgr.GetClient(), cfg)
	if err != nil {
		return err
	}
	c.reader = mgr.GetAPIReader()
	poke, wake := make(chan struct{}, 1), make(chan struct{}, 1)
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		cfg.Logger.Info("cluster controller leading", "namespace", cfg.Namespace, "placement", c.fleet.Placer().Strategy())
		return c.Run(ctx, poke, wake)
	})); err != nil {
		return err
	}
	skip := true // a process may run the manager more than once (tests)
	// A heartbeat saying requests wait for a function with no instance
	// (a node asking for a scale from zero) runs a wake round at once.
	err = ctrl.NewControllerManagedBy(mgr).For(&SpryNode{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
		n, ok := o.(*SpryNode)
		return ok && Waiting(n)
	}))).Named("sprynode-wake").
		WithOptions(crcontroller.Options{SkipNameValidation: &skip}).
		Complete(nudge(wake))
	if err != nil {
		return err
	}
	// Only a change of an app's spec (its generation) starts a round at
	// once: the controller writes every app's status each round, and a
	// round started by that write wrote the status again, and so on —
	// rounds back to back, each seeing a sliver of the heartbeats'
	// arrivals, which is no rate to size on.
	err = ctrl.NewControllerManagedBy(mgr).For(&SpryApp{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).Named("spryapp").
		WithOptions(crcontroller.Options{SkipNameValidation: &skip}).
		Complete(nudge(poke))
	if err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// nudge is a reconciler that only signals ch (a round to run), without
// waiting: one signal pending is enough.
func nudge(ch chan<- struct{}) reconcile.Func {
	return func(context.Context, reconcile.Request) (reconcile.Result, error) {
		select {
		case ch <- struct{}{}:
		default:
		}
		return reconcile.Result{}, nil
	}
}
