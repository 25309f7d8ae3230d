package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/cluster/kube"
)

const chainApp = `
app: shop
functions:
  front: {builtin: upper, instances: 2, limits: {cpu: 0.5, memory: 256MiB}}
  back:  {builtin: echo,  instances: 2, limits: {cpu: 0.5, memory: 256MiB}}
chains:
  buy: {route: /buy, steps: [front, back]}
`

// harness is one test's namespace and nodes on the shared control plane.
type harness struct {
	t     *testing.T
	ctx   context.Context
	ns    string
	nodes []string
}

func newHarness(t *testing.T) *harness { return newHarnessFor(t, 60*time.Second) }

// newHarnessFor is newHarness with a context that lasts d (tests with
// real agents: their steps wait on processes, which a loaded machine
// slows down).
func newHarnessFor(t *testing.T, d time.Duration) *harness {
	needK8s(t)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	h := &harness{t: t, ctx: ctx, ns: fmt.Sprintf("t-%d", time.Now().UnixNano()%1e9)}
	if err := testClient.Create(h.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: h.ns}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		// envtest runs no namespace controller: delete what the test made.
		_ = testClient.DeleteAllOf(ctx, &SpryApp{}, client.InNamespace(h.ns))
		for _, n := range h.nodes {
			_ = testClient.Delete(ctx, &SpryNode{ObjectMeta: metav1.ObjectMeta{Name: n}})
			_ = testClient.Delete(ctx, &SpryAssignment{ObjectMeta: metav1.ObjectMeta{Name: n}})
		}
		_ = testClient.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: h.ns}})
	})
	return h
}

// node registers a node and renews its lease as an agent does.
func (h *harness) node(name string, cpu, mem int64) {
	h.t.Helper()
	n := &SpryNode{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: api.NodeSpec{Gateway: name + ":8080", Peer: name + ":7946", Capacity: api.Capacity{CPUMillis: cpu, MemoryBytes: mem}}}
	if err := testClient.Create(h.ctx, n); err != nil {
		h.t.Fatal(err)
	}
	h.nodes = append(h.nodes, name)
	h.renew(name, time.Now())
}

// runManaged runs the controller under the manager (RunController, health
// and metrics on ephemeral ports) until the test ends, and fails the test
// if it ends with an error.
func (h *harness) runManaged(cfg ControllerConfig) {
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { done <- RunController(ctx, testCfg, cfg, RunOptions{HealthAddr: "0", MetricsAddr: "0"}) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("controller: %v", err)
		}
	})
}

// keepAlive renews the leases of the given nodes, as their agents would,
// until the test ends.
func (h *harness) keepAlive(names ...string) {
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	h.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, n := range names {
				l := &coordinationv1.Lease{}
				if testClient.Get(ctx, client.ObjectKey{Namespace: h.ns, Name: api.LeaseName(n)}, l) == nil {
					l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
					_ = testClient.Update(ctx, l)
				}
			}
		}
	}()
}

func (h *harness) renew(name string, at time.Time) {
	h.t.Helper()
	d := int32(10)
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: api.LeaseName(name), Namespace: h.ns}}
	err := testClient.Get(h.ctx, client.ObjectKeyFromObject(l), l)
	if apierrors.IsNotFound(err) {
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &d, RenewTime: &metav1.MicroTime{Time: at}}
		err = testClient.Create(h.ctx, l)
	} else if err == nil {
		l.Spec.RenewTime = &metav1.MicroTime{Time: at}
		err = testClient.Update(h.ctx, l)
	}
	if err != nil {
		h.t.Fatal(err)
	}
}

// heartbeat writes a node's counters as its agent does.
func (h *harness) heartbeat(name string, fc ...api.FunctionCounts) {
	h.t.Helper()
	n := &SpryNode{}
	if err := testClient.Get(h.ctx, client.ObjectKey{Name: name}, n); err != nil {
		h.t.Fatal(err)
	}
	n.Status = api.NodeStatus{Heartbeat: ptr(time.Now()), Boot: "b1", Functions: fc}
	if err := testClient.Status().Update(h.ctx, n); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) app(name, yml string) *SpryApp {
	h.t.Helper()
	spec, err := yaml.YAMLToJSON([]byte(yml))
	if err != nil {
		h.t.Fatal(err)
	}
	a := &SpryApp{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.ns}, Spec: spec}
	if err := testClient.Create(h.ctx, a); err != nil {
		h.t.Fatal(err)
	}
	return a
}

func (h *harness) controller() *Controller {
	h.t.Helper()
	c, err := NewController(testClient, ControllerConfig{Namespace: h.ns})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) round(c *Controller) {
	h.t.Helper()
	if err := c.Round(h.ctx); err != nil {
		h.t.Fatal(err)
	}
}

// assigned returns "fn=n" per app function on a node, sorted by app order.
func (h *harness) assigned(node string) string {
	h.t.Helper()
	a := &SpryAssignment{}
	if err := testClient.Get(h.ctx, client.ObjectKey{Name: node}, a); err != nil {
		h.t.Fatal(err)
	}
	var parts []string
	for _, app := range a.Spec.Apps {
		for _, in := range app.Instances {
			parts = append(parts, fmt.Sprintf("%s/%s=%d", app.Name[strings.Index(app.Name, "/")+1:], in.Function, in.N))
		}
	}
	slices.Sort(parts) // the spec is JSON: its functions come in key order
	return strings.Join(parts, " ")
}

func (h *harness) status(name string) api.AppStatus {
	h.t.Helper()
	a := &SpryApp{}
	if err := testClient.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, a); err != nil {
		h.t.Fatal(err)
	}
	return a.Status
}

// TestControllerPlaces: a two-step chain on two nodes — each node gets one
// instance of each step (co-located, spread), the status says what is
// wanted, placed and ready, and heartbeats make it ready.
func TestControllerPlaces(t *testing.T) {
	h := newHarness(t)
	h.node("n1", 4000, 8<<30)
	h.node("n2", 4000, 8<<30)
	h.keepAlive("n1", "n2") // a loaded machine may take longer than a lease between the rounds
	h.app("shop", chainApp)
	c := h.controller()
	h.round(c)
	for _, n := range []string{"n1", "n2"} {
		if got := h.assigned(n); got != "shop/back=1 shop/front=1" {
			t.Errorf("%s runs %q, want one of each step", n, got)
		}
	}
	s := h.status("shop")
	if s.Ready != "0/4" || s.NodeCount != 2 || s.RouteList != "/buy" || (api.FindCondition(s.Conditions, "Valid") == nil || api.FindCondition(s.Conditions, "Valid").Status != "True") {
		t.Errorf("status %+v", s)
	}
	for _, n := range []string{"n1", "n2"} {
		h.heartbeat(n,
			api.FunctionCounts{App: h.ns + "/shop", Function: "front", Ready: 1, Arrivals: 10, Completions: 10, SLOMet: 10},
			api.FunctionCounts{App: h.ns + "/shop", Function: "back", Ready: 1, Arrivals: 10, Completions: 10, SLOMet: 9})
	}
	h.round(c)
	if s := h.status("shop"); s.Ready != "4/4" || s.SLOAttainment != "95.0%" {
		t.Errorf("after heartbeats: ready %q slo %q", s.Ready, s.SLOAttainment)
	}
}

// TestControllerNodeLost: a node whose lease expires keeps what it runs
// for the lost grace while its instances are placed on the others too,
// then loses them (keeping the app and the live peers); when it comes back it is used again; a restarted
// controller takes the placement back from the assignments without
// moving anything.
func TestControllerNodeLost(t *testing.T) {
	h := newHarness(t)
	h.node("m1", 4000, 8<<30)
	h.node("m2", 4000, 8<<30)
	h.app("shop", chainApp)
	c := h.controller()
	h.round(c)
	had := h.assigned("m1")
	if had == "" {
		t.Fatal("m1 runs nothing to begin with")
	}
	// m1 stops renewing: its lease ran out 50 s ago. Within the grace it
	// keeps what it runs (a stalled node goes on serving), while its
	// instances are placed on m2 as well.
	h.renew("m1", time.Now().Add(-time.Minute))
	c.cfg.LostGrace = time.Hour
	h.round(c)
	if got := h.assigned("m1"); got != had {
		t.Errorf("lost node within the grace runs %q, want what it had: %q", got, had)
	}
	if got := h.assigned("m2"); got != "shop/back=2 shop/front=2" {
		t.Errorf("survivor runs %q, want everything", got)
	}
	// The grace over, it runs nothing.
	c.cfg.LostGrace = 10 * time.Second
	h.round(c)
	if got := h.assigned("m1"); got != "" {
		t.Errorf("lost node still runs %q", got)
	}
	// It keeps the app (its gateway serves the routes through the live
	// node) with the survivor as its only peer.
	lost := &SpryAssignment{}
	if err := testClient.Get(h.ctx, client.ObjectKey{Name: "m1"}, lost); err != nil {
		t.Fatal(err)
	}
	if len(lost.Spec.Apps) != 1 || len(lost.Spec.Peers) != 1 || lost.Spec.Peers[0].Node != "m2" {
		t.Errorf("lost node's assignment: %d apps, peers %+v; want the app, peer m2", len(lost.Spec.Apps), lost.Spec.Peers)
	}
	if got := h.assigned("m2"); got != "shop/back=2 shop/front=2" {
		t.Errorf("survivor runs %q, want everything", got)
	}
	// The controller restarts: nothing moves.
	c2 := h.controller()
	h.round(c2)
	if got := h.assigned("m2"); got != "shop/back=2 shop/front=2" {
		t.Errorf("after controller restart m2 runs %q", got)
	}
	// m1 comes back, and growth uses it.
	h.renew("m1", time.Now())
	a := &SpryApp{}
	if err := testClient.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: "shop"}, a); err != nil {
		t.Fatal(err)
	}
	spec, _ := yaml.YAMLToJSON([]byte(strings.ReplaceAll(chainApp, "instances: 2", "instances: 4")))
	a.Spec = spec
	if err := testClient.Update(h.ctx, a); err != nil {
		t.Fatal(err)
	}
	h.round(c2)
	if got := h.assigned("m1"); got != "shop/back=2 shop/front=2" {
		t.Errorf("returning node runs %q, want the new instances", got)
	}
}

// TestControllerInvalidApp: a spec that is not a valid spry.yaml app is
// reported in the status with its field path, and nothing is placed.
func TestControllerInvalidApp(t *testing.T) {
	h := newHarness(t)
	h.node("v1", 4000, 8<<30)
	h.app("bad", "app: bad\nfunctions:\n  f: {builtin: echo}\nchains:\n  c: {route: /c, steps: [f, nope]}\n")
	c := h.controller()
	h.round(c)
	s := h.status("bad")
	cond := api.FindCondition(s.Conditions, "Valid")
	if cond == nil || cond.Status != "False" || !strings.Contains(cond.Message, `chains.c.steps[1]: unknown function "nope"`) {
		t.Errorf("condition %+v", cond)
	}
	if got := h.assigned("v1"); got != "" {
		t.Errorf("invalid app placed: %q", got)
	}
}

// TestControllerLeaderElection runs two controllers under the manager:
// one leads and places; when it stops, the other takes over.
func TestControllerLeaderElection(t *testing.T) {
	h := newHarness(t)
	h.node("l1", 4000, 8<<30)
	h.keepAlive("l1", "l2")
	run := func() (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(h.ctx)
		done := make(chan error, 1)
		go func() {
			done <- RunController(ctx, testCfg, ControllerConfig{Namespace: h.ns, Period: 200 * time.Millisecond}, RunOptions{LeaderElection: true})
		}()
		return cancel, done
	}
	cancel1, done1 := run()
	h.app("shop", chainApp)
	waitFor(t, 20*time.Second, func() bool { return h.assignedOK("l1") == "shop/back=2 shop/front=2" }, "first controller places")
	cancel2, done2 := run()
	defer func() { cancel2(); <-done2 }()
	cancel1()
	if err := <-done1; err != nil {
		t.Fatalf("first controller: %v", err)
	}
	// The second takes over (the first released its lease on exit) and
	// acts on a change.
	h.node("l2", 4000, 8<<30)
	a := &SpryApp{}
	_ = testClient.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: "shop"}, a)
	spec, _ := yaml.YAMLToJSON([]byte(strings.ReplaceAll(chainApp, "instances: 2", "instances: 4")))
	a.Spec = spec
	if err := testClient.Update(h.ctx, a); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return h.assignedOK("l2") != "" }, "second controller places on the new node")
}

func (h *harness) assignedOK(node string) string {
	a := &SpryAssignment{}
	if err := testClient.Get(h.ctx, client.ObjectKey{Name: node}, a); err != nil {
		return ""
	}
	return h.assigned(node)
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, what string) {
	t.Helper()
	end := time.Now().Add(d)
	for !ok() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKubectl: `kubectl get spryapps` shows the printer columns, and every
// manifest in deploy/kubernetes passes the apiserver's server-side dry run.
func TestKubectl(t *testing.T) {
	h := newHarness(t)
	h.node("k1", 4000, 8<<30)
	h.app("shop", chainApp)
	h.round(h.controller())
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	user, err := testEnv.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(h.ctx, filepath.Join(testAssets, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := kubectl("get", "spryapps", "-n", h.ns)
	for _, want := range []string{"READY", "NODES", "ROUTES", "SLO", "VALID", "shop", "0/4", "/buy", "True"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get spryapps lacks %q:\n%s", want, out)
		}
	}
	// The agents' and the CLI's own client (no client-go) with the same
	// kubeconfig: create, conflict, update, not found.
	kc2, err := kube.FromKubeconfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := yaml.YAMLToJSON([]byte(chainApp))
	var got api.SpryApp
	if err := kc2.Create(h.ctx, kube.AppsPath(h.ns), kube.NewApp(h.ns, "shop2", spec), &got); err != nil {
		t.Fatal(err)
	}
	if err := kc2.Create(h.ctx, kube.AppsPath(h.ns), kube.NewApp(h.ns, "shop2", spec), nil); !errors.Is(err, kube.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	stale := got
	got.Spec = json.RawMessage(strings.Replace(string(spec), `"instances":2`, `"instances":3`, 1))
	if err := kc2.Update(h.ctx, kube.AppPath(h.ns, "shop2"), &got, &got); err != nil || got.Metadata.Generation != 2 {
		t.Errorf("update: %v, generation %d", err, got.Metadata.Generation)
	}
	if err := kc2.Update(h.ctx, kube.AppPath(h.ns, "shop2"), &stale, nil); !errors.Is(err, kube.ErrConflict) {
		t.Errorf("stale update: %v, want ErrConflict", err)
	}
	if err := kc2.Get(h.ctx, kube.AppPath(h.ns, "nope"), &got); !errors.Is(err, kube.ErrNotFound) {
		t.Errorf("get missing: %v, want ErrNotFound", err)
	}

	// The manifests: the namespace for real, then everything dry-run.
	kubectl("apply", "--server-side", "-f", "../../../deploy/kubernetes/namespace.yaml")
	out = kubectl("apply", "--server-side", "--dry-run=server", "-f", "../../../deploy/kubernetes/")
	t.Logf("dry run:\n%s", out)
	for _, want := range []string{"daemonset.apps/spry-agent", "deployment.apps/spry-controller", "service/spry-gateway", "clusterrole.rbac.authorization.k8s.io/spry-controller", "clusterrole.rbac.authorization.k8s.io/spry-agent"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run did not cover %s", want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestControllerConflicts: every node runs every app, so an app with the
// name or a route of another (earlier by namespace/name) is not placed;
// its status says why; once the other is gone it is placed.
func TestControllerConflicts(t *testing.T) {
	h := newHarness(t)
	h.node("c1", 4000, 8<<30)
	h.app("a-shop", chainApp)
	h.app("b-shop", strings.Replace(chainApp, "app: shop", "app: shop2", 1)) // same route /buy
	c := h.controller()
	h.round(c)
	cond := api.FindCondition(h.status("b-shop").Conditions, "Valid")
	if cond == nil || cond.Status != "False" || cond.Reason != "Conflict" || !strings.Contains(cond.Message, "/buy is already served by app \"shop\"") {
		t.Fatalf("the second app's condition: %+v", cond)
	}
	a := &SpryAssignment{}
	if err := testClient.Get(h.ctx, client.ObjectKey{Name: "c1"}, a); err != nil {
		t.Fatal(err)
	}
	if len(a.Spec.Apps) != 1 || !strings.HasSuffix(a.Spec.Apps[0].Name, "/a-shop") {
		t.Fatalf("assigned apps %+v", a.Spec.Apps)
	}
	if err := testClient.Delete(h.ctx, &SpryApp{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "a-shop"}}); err != nil {
		t.Fatal(err)
	}
	h.round(c)
	h.round(c)
	if got := h.assigned("c1"); got != "b-shop/back=2 b-shop/front=2" {
		t.Fatalf("after the first app went: %q", got)
	}
	if cond := api.FindCondition(h.status("b-shop").Conditions, "Valid"); cond.Status != "True" {
		t.Fatalf("condition %+v", cond)
	}
}

// TestControllerWakeRound: under the manager, a heartbeat saying a request
// waits for a function no node runs makes the controller place one
// instance of it, and of the next step of its chain, at once: the period
// here is a minute, so only the wake round can have placed them.
func TestControllerWakeRound(t *testing.T) {
	h := newHarness(t)
	h.node("w1", 4000, 8<<30)
	h.keepAlive("w1")
	h.app("lazy", `
app: lazy
functions:
  front: {builtin: upper, scale: {min: 0, max: 4, policy: mu}}
  back:  {builtin: echo,  scale: {min: 0, max: 4, policy: mu}}
  other: {builtin: echo,  scale: {min: 0, max: 4, policy: mu}}
chains:
  lazy:  {route: /lazy, steps: [front, back]}
  other: {route: /other, steps: [other]}
`)
	h.runManaged(ControllerConfig{Namespace: h.ns, Period: time.Minute})
	// The first round: the app on the node, nothing placed (min 0).
	waitFor(t, 30*time.Second, func() bool {
		a := &SpryAssignment{}
		return testClient.Get(h.ctx, client.ObjectKey{Name: "w1"}, a) == nil && len(a.Spec.Apps) == 1
	}, "the first round's assignment")
	if got := h.assigned("w1"); got != "" {
		t.Fatalf("placed before any request: %q", got)
	}
	fc := func(fn string, queued int32) api.FunctionCounts {
		return api.FunctionCounts{App: h.ns + "/lazy", Function: fn, Queued: queued}
	}
	h.heartbeat("w1", fc("front", 1), fc("back", 0), fc("other", 0))
	waitFor(t, 30*time.Second, func() bool { return h.assigned("w1") == "lazy/back=1 lazy/front=1" }, "the wake round places front and back")
	time.Sleep(500 * time.Millisecond) // nothing else follows
	if got := h.assigned("w1"); got != "lazy/back=1 lazy/front=1" {
		t.Fatalf("after the wake: %q", got)
	}
}

// TestControllerStatusFollows: under the manager (its client reads from a
// cache), the app's status follows every round's decision while the rate
// moves: each round writes a new status, and a write that meets the
// cache's older copy is not dropped.
func TestControllerStatusFollows(t *testing.T) {
	h := newHarness(t)
	h.node("s1", 4000, 8<<30)
	h.keepAlive("s1")
	h.app("busy", `
app: busy
functions:
  f: {builtin: upper, scale: {min: 1, max: 8, policy: mu, slo: 50ms}}
chains:
  c: {route: /busy, steps: [f]}
`)
	h.runManaged(ControllerConfig{Namespace: h.ns, Period: 200 * time.Millisecond})
	seen := map[string]bool{}
	var arrivals uint64
	for i := 0; i < 60 && len(seen) < 4; i++ {
		arrivals += uint64(20 * (i%5 + 1)) // a rate that keeps moving
		h.heartbeat("s1", api.FunctionCounts{App: h.ns + "/busy", Function: "f", Ready: 1,
			Arrivals: arrivals, Completions: arrivals, BusyNanos: arrivals * 2e6})
		time.Sleep(250 * time.Millisecond)
		if fs := h.status("busy").Functions; len(fs) == 1 && fs[0].Predicted != "" {
			seen[fs[0].Predicted] = true
		}
	}
	if len(seen) < 4 {
		t.Fatalf("the status showed %d predicted rates in 15 s of moving load: %v", len(seen), seen)
	}
}
