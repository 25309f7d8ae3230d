package controller

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/cluster/kube"
	"github.com/spry-dev/spry/internal/node"
)

// Each node fits one instance (250m of 300m): a chain's two steps cannot
// share a node, so every request crosses from the first step's node to
// the second's, and the third node runs nothing (its gateway hands every
// request on: ingress anywhere).
const splitApp = `
app: split
functions:
  front: {builtin: upper, instances: 1}
  back:  {builtin: reverse, instances: 1}
chains:
  buy: {route: /buy, steps: [front, back], timeout: 5s}
`

// labNode is one node agent in its network namespace.
type labNode struct {
	name, ns, addr string
	proc           *agentProc
}

type lab struct {
	t          *testing.T
	h          *harness
	net        *netLab
	kubeconfig string
	nodes      []*labNode
	client     *http.Client
	path       string              // what post and load post to (default /buy)
	want       func(string) string // the right answer to a body (default reversedUpper)
}

// startLabAgent runs `spry up --cluster` inside node i's namespace.
func (l *lab) start(i int) *labNode {
	t := l.t
	bin, err := spryBin()
	if err != nil {
		t.Fatalf("build spry: %v", err)
	}
	n := l.nodes[i]
	cmd := exec.Command("ip", "netns", "exec", n.ns, bin, "up", "--cluster", "--node-name", n.name, "--namespace", l.h.ns,
		"--kubeconfig", l.kubeconfig, "--advertise", n.addr, "--listen", ":8080", "--admin", "127.0.0.1:8081",
		"--peer-listen", ":7946", "--heartbeat", "300ms", "--lease", "2s",
		"--capacity-cpu", "300", "--capacity-memory", "1GiB", "--data-dir", t.TempDir(), "--drain-timeout", "2s")
	n.proc = runAgent(t, n.name, cmd)
	return n
}

// post sends one request to node i's gateway from the lab's switch.
func (l *lab) post(ctx context.Context, i int, body string) (int, string) {
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+l.nodes[i].addr+":8080"+l.path, strings.NewReader(body))
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// status reads node i's /v1/status from inside its namespace.
func (l *lab) status(ctx context.Context, i int) (*node.Status, error) {
	c, err := dialIn(ctx, l.nodes[i].ns, "127.0.0.1:8081")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s node.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

// idle reports whether node i holds nothing: every buffer of every app
// free, nothing in flight, nothing out at other nodes.
func (l *lab) idle(ctx context.Context, i int) string {
	s, err := l.status(ctx, i)
	if err != nil {
		return err.Error()
	}
	for _, a := range s.Apps {
		if a.Pool.Free != int(a.Pool.Buffers) || a.Requests.Inflight != 0 {
			return fmt.Sprintf("app %s: %d of %d buffers free, %d in flight", a.Name, a.Pool.Free, a.Pool.Buffers, a.Requests.Inflight)
		}
		for _, f := range a.Functions {
			if f.Remote != nil && f.Remote.Inflight != 0 {
				return fmt.Sprintf("app %s: %d requests of %s out at other nodes", a.Name, f.Remote.Inflight, f.Name)
			}
		}
	}
	return ""
}

// where returns the nodes running each function of the app, from its
// status: fn → node names.
func (l *lab) where(app string) map[string][]string {
	out := map[string][]string{}
	for _, f := range l.h.status(app).Functions {
		for _, ni := range f.Nodes {
			if ni.Instances > 0 {
				out[f.Name] = append(out[f.Name], ni.Node)
			}
		}
	}
	return out
}

func (l *lab) index(name string) int {
	for i, n := range l.nodes {
		if n.name == name {
			return i
		}
	}
	l.t.Fatalf("no node %s", name)
	return -1
}

// load runs clients that post to the nodes in turn until stop, and counts
// the answers by status.
type load struct {
	mu     sync.Mutex
	codes  map[int]int
	bad    []string
	done   sync.WaitGroup
	stop   chan struct{}
	counts atomic.Int64
}

func (l *lab) load(ctx context.Context, clients int, nodes []int) *load {
	ld := &load{codes: map[int]int{}, stop: make(chan struct{})}
	for c := range clients {
		ld.done.Add(1)
		go func() {
			defer ld.done.Done()
			for k := 0; ; k++ {
				select {
				case <-ld.stop:
					return
				default:
				}
				s := fmt.Sprintf("c%d-r%d", c, k)
				rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				code, body := l.post(rctx, nodes[(c+k)%len(nodes)], s)
				cancel()
				ld.counts.Add(1)
				ld.mu.Lock()
				ld.codes[code]++
				if code == 200 && body != l.want(s) || code != 200 && code != 502 && code != 503 && code != 504 {
					if len(ld.bad) < 5 {
						ld.bad = append(ld.bad, fmt.Sprintf("%q -> %d %q", s, code, body))
					}
				}
				ld.mu.Unlock()
			}
		}()
	}
	return ld
}

func (ld *load) end() (map[int]int, []string) {
	close(ld.stop)
	ld.done.Wait()
	return ld.codes, ld.bad
}

func reversedUpper(s string) string {
	b := []byte(strings.ToUpper(s))
	slices.Reverse(b)
	return string(b)
}

// TestClusterAcrossNodes: three real node agents, each in a network
// namespace of its own, joined into one cluster by the controller on a
// real API server. A chain's two steps are placed on different nodes
// (each fits one instance): every request crosses a real interface from
// the first step's node to the second's, and back; the third node's
// gateway hands every request on. Under 64 clients every answer is right
// and no node keeps a buffer. kill -9 of the second step's node under
// load: its requests end 502 at the origin, its instance is placed on the
// third node, traffic recovers. The controller killed and restarted:
// nothing moves, nothing fails. The killed node comes back and is used
// when the app grows.
// newLab makes the lab: three network namespaces on a switch, each
// reaching the API server at its own address, a client that posts from the
// switch, and a way to run the controller. ctx bounds the test.
func newLab(t *testing.T) (*lab, context.Context, func() func()) {
	h := newHarness(t)
	nl := newNetLab(t, 3)
	user, err := testEnv.AddUser(envtest.User{Name: "lab-agent", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, h: h, net: nl, kubeconfig: filepath.Join(t.TempDir(), "kubeconfig"), path: "/buy", want: reversedUpper}
	if err := os.WriteFile(l.kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(testCfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	for i, ns := range nl.nodes {
		// The API server is reached at the same address inside the
		// namespace: the kubeconfig (and its certificate) stay valid.
		forward(t, ns, u.Host)
		l.nodes = append(l.nodes, &labNode{name: fmt.Sprintf("x%d", i+1), ns: ns, addr: nl.addr(i + 1)})
	}
	l.client = &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 128,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialIn(ctx, nl.sw, addr)
		},
	}}
	t.Cleanup(l.client.CloseIdleConnections)
	runController := func() func() {
		ctl, err := NewController(testClient, ControllerConfig{Namespace: h.ns, Period: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(h.ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = ctl.Run(ctx, nil, nil) }()
		return func() { cancel(); <-done }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 170*time.Second)
	t.Cleanup(cancel)
	return l, ctx, runController
}

// startAll starts the three agents and waits until they registered and
// beat.
func (l *lab) startAll(ctx context.Context) {
	t, h := l.t, l.h
	for i := range l.nodes {
		l.start(i)
		h.nodes = append(h.nodes, l.nodes[i].name)
	}
	h.ctx = ctx
	waitFor(t, 60*time.Second, func() bool {
		for _, n := range l.nodes {
			var sn SpryNode
			if testClient.Get(ctx, client.ObjectKey{Name: n.name}, &sn) != nil || sn.Status.Heartbeat == nil {
				return false
			}
		}
		return true
	}, "three agents register and beat")
}

func TestClusterAcrossNodes(t *testing.T) {
	l, ctx, runController := newLab(t)
	h := l.h
	stopCtl := runController()
	defer func() { stopCtl() }()
	l.startAll(ctx)

	kcl, err := kube.FromKubeconfig(l.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := yaml.YAMLToJSON([]byte(splitApp))
	if err := kcl.Create(ctx, kube.AppsPath(h.ns), kube.NewApp(h.ns, "split", spec), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { return h.status("split").Ready == "2/2" }, "both steps ready")
	w := l.where("split")
	if len(w["front"]) != 1 || len(w["back"]) != 1 || w["front"][0] == w["back"][0] {
		t.Fatalf("placement %v: want the steps on different nodes", w)
	}
	front, back := l.index(w["front"][0]), l.index(w["back"][0])
	spare := 3 - front - back
	t.Logf("front on %s, back on %s, %s runs nothing", l.nodes[front].name, l.nodes[back].name, l.nodes[spare].name)
	for i := range l.nodes {
		waitFor(t, 30*time.Second, func() bool {
			code, body := l.post(ctx, i, "spry")
			return code == 200 && body == "YRPS"
		}, "the chain answers on "+l.nodes[i].name)
	}

	// 64 clients over the three gateways: every answer right.
	const clients = 64
	began := time.Now()
	ld := l.load(ctx, clients, []int{0, 1, 2})
	time.Sleep(4 * time.Second)
	codes, bad := ld.end()
	n := ld.counts.Load()
	t.Logf("64 clients, 3 gateways, every request crossing nodes: %d requests in %v (%v)", n, time.Since(began).Round(time.Millisecond), codes)
	if codes[200] != int(n) || len(bad) > 0 {
		t.Fatalf("answers %v, bad %v", codes, bad)
	}
	for i := range l.nodes {
		waitFor(t, 10*time.Second, func() bool { return l.idle(ctx, i) == "" }, "node "+l.nodes[i].name+" holds nothing: "+l.idle(ctx, i))
	}
	if s, err := l.status(ctx, front); err != nil || len(s.Node.Links) == 0 {
		t.Fatalf("front's links: %v %+v", err, s)
	}

	// kill -9 of the second step's node under load.
	ld = l.load(ctx, clients, []int{front, spare})
	time.Sleep(time.Second)
	killed := time.Now()
	l.nodes[back].proc.kill()
	waitFor(t, 30*time.Second, func() bool {
		w := l.where("split")
		return len(w["back"]) == 1 && w["back"][0] == l.nodes[spare].name && h.status("split").Ready == "2/2"
	}, "back re-placed on the spare node")
	replaced := time.Since(killed)
	// Recovered: answers are 200 again.
	waitFor(t, 30*time.Second, func() bool {
		code, body := l.post(ctx, front, "again")
		return code == 200 && body == "NIAGA"
	}, "traffic recovers")
	recovered := time.Since(killed)
	time.Sleep(time.Second)
	codes, bad = ld.end()
	t.Logf("kill -9 of %s under load: re-placed after %v, answering again after %v; answers %v",
		l.nodes[back].name, replaced.Round(10*time.Millisecond), recovered.Round(10*time.Millisecond), codes)
	if len(bad) > 0 {
		t.Fatalf("wrong answers: %v", bad)
	}
	if codes[502] == 0 {
		s, err := l.status(ctx, front)
		t.Errorf("no 502 for the requests the killed node held (answers %v); front's links %v %+v", codes, err, s.Node.Links)
	}
	for _, i := range []int{front, spare} {
		waitFor(t, 15*time.Second, func() bool { return l.idle(ctx, i) == "" }, "node "+l.nodes[i].name+" holds nothing after the loss: "+l.idle(ctx, i))
	}

	// The controller killed and restarted under load: nothing moves, no
	// request fails.
	before := map[string]string{}
	for _, n := range l.nodes {
		before[n.name] = h.assignedOK(n.name)
	}
	ld = l.load(ctx, 8, []int{front, spare})
	stopCtl()
	time.Sleep(time.Second)
	stopCtl = runController()
	time.Sleep(2 * time.Second)
	codes, bad = ld.end()
	for _, n := range l.nodes {
		if got := h.assignedOK(n.name); got != before[n.name] {
			t.Errorf("after the controller's restart %s runs %q, before %q", n.name, got, before[n.name])
		}
	}
	if len(bad) > 0 || codes[200] == 0 || len(codes) != 1 {
		t.Fatalf("across the controller's restart: answers %v, bad %v", codes, bad)
	}

	// The killed node comes back, and takes the instance the app grows by.
	l.start(back)
	var cur api.SpryApp
	if err := kcl.Get(ctx, kube.AppPath(h.ns, "split"), &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec, _ = yaml.YAMLToJSON([]byte(strings.Replace(splitApp, "back:  {builtin: reverse, instances: 1}", "back:  {builtin: reverse, instances: 2}", 1)))
	if err := kcl.Update(ctx, kube.AppPath(h.ns, "split"), &cur, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool {
		return slices.Contains(l.where("split")["back"], l.nodes[back].name) && h.status("split").Ready == "3/3"
	}, "the returning node runs the new instance")
	for i := range l.nodes {
		if code, body := l.post(ctx, i, "back"); code != 200 || body != "KCAB" {
			t.Fatalf("node %s: %d %q", l.nodes[i].name, code, body)
		}
		waitFor(t, 10*time.Second, func() bool { return l.idle(ctx, i) == "" }, "node "+l.nodes[i].name+" holds nothing: "+l.idle(ctx, i))
	}
}

// Each node fits one instance (250m of 300m), so up, rev and mix run on
// three nodes. The fan-out (step split, function up) is on up's node: its
// branch r goes to rev's node, and the join, whose state is on up's node,
// goes to mix's with its inputs. A request that arrives at rev's or mix's
// node crosses to up's as a step of the line first. split is not the
// first step by name: the API server sorts the spec's keys.
const fanApp = `
app: fan
functions:
  up:  {builtin: upper}
  rev: {builtin: reverse}
  mix: {builtin: concat}
chains:
  fan:
    route: /fan
    timeout: 5s
    steps:
      split: {function: up, next: [u, r]}
      u: {function: up, next: m}
      r: {function: rev, next: m}
      m: {function: mix, join: all}
`

// caller and callee fit one per node: on different nodes.
const callApp = `
app: calls
functions:
  caller: {builtin: call}
  callee: {builtin: reverse}
chains:
  call: {route: /call, steps: [caller], timeout: 5s}
`

func upperTwice(s string) string {
	u := []byte(strings.ToUpper(s))
	r := slices.Clone(u)
	slices.Reverse(r)
	return string(u) + string(r)
}

// TestGraphsAcrossNodes: three real node agents in network namespaces. A
// fan-out's branch whose function runs on another node runs there and its
// output comes back to the node that fanned out; the join, whose function
// runs on a third node, goes there with its inputs; 16 clients over the
// three gateways: every answer right, no node keeps a buffer. kill -9 of
// the branch's node under load: its requests end 502 (the join fails as
// its input failed) or 200, none hangs, the nodes left hold nothing. A
// req.Call of a function on another node is answered there.
func TestGraphsAcrossNodes(t *testing.T) {
	l, ctx, runController := newLab(t)
	h := l.h
	defer runController()()
	l.startAll(ctx)
	kcl, err := kube.FromKubeconfig(l.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	deploy := func(name, app string) {
		spec, _ := yaml.YAMLToJSON([]byte(app))
		if err := kcl.Create(ctx, kube.AppsPath(h.ns), kube.NewApp(h.ns, name, spec), nil); err != nil {
			t.Fatal(err)
		}
	}
	deploy("fan", fanApp)
	waitFor(t, 60*time.Second, func() bool { return h.status("fan").Ready == "3/3" }, "the fan app ready")
	w := l.where("fan")
	if len(w["up"]) != 1 || len(w["rev"]) != 1 || len(w["mix"]) != 1 {
		t.Fatalf("placement %v: want one instance each", w)
	}
	up, rev, mix := l.index(w["up"][0]), l.index(w["rev"][0]), l.index(w["mix"][0])
	t.Logf("the fan-out on %s, branch r on %s, the join on %s", l.nodes[up].name, l.nodes[rev].name, l.nodes[mix].name)
	l.path, l.want = "/fan", upperTwice
	for i := range l.nodes {
		waitFor(t, 30*time.Second, func() bool {
			code, body := l.post(ctx, i, "spry")
			return code == 200 && body == "SPRYYRPS"
		}, "the graph answers on "+l.nodes[i].name)
	}
	ld := l.load(ctx, 16, []int{0, 1, 2})
	time.Sleep(3 * time.Second)
	codes, bad := ld.end()
	t.Logf("16 clients, 3 gateways, a branch and the join crossing nodes: %d requests (%v)", ld.counts.Load(), codes)
	if codes[200] != int(ld.counts.Load()) || len(bad) > 0 {
		t.Fatalf("answers %v, bad %v", codes, bad)
	}
	for i := range l.nodes {
		waitFor(t, 10*time.Second, func() bool { return l.idle(ctx, i) == "" }, "node "+l.nodes[i].name+" holds nothing: "+l.idle(ctx, i))
	}
	s, err := l.status(ctx, up)
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]uint64{}
	for _, a := range s.Apps {
		for _, f := range a.Functions {
			if f.Remote != nil {
				sent[f.Name] = f.Remote.Sent
			}
		}
	}
	if sent["rev"] == 0 || sent["mix"] == 0 {
		t.Fatalf("the fan-out's node sent %v to other nodes: want branches of rev and joins of mix", sent)
	}

	// kill -9 of the branch's node under load at the fan-out's node.
	ld = l.load(ctx, 8, []int{up})
	time.Sleep(time.Second)
	l.nodes[rev].proc.kill()
	time.Sleep(1500 * time.Millisecond)
	codes, bad = ld.end()
	t.Logf("kill -9 of %s (branch r) under load: answers %v", l.nodes[rev].name, codes)
	if len(bad) > 0 {
		t.Fatalf("wrong answers: %v", bad)
	}
	if codes[502] == 0 {
		t.Errorf("no 502 for the branches the killed node held (answers %v)", codes)
	}
	for _, i := range []int{up, mix} {
		waitFor(t, 15*time.Second, func() bool { return l.idle(ctx, i) == "" }, "node "+l.nodes[i].name+" holds nothing after the loss: "+l.idle(ctx, i))
	}

	// Calls, on the two nodes left once the fan app is gone.
	if err := kcl.Delete(ctx, kube.AppPath(h.ns, "fan")); err != nil {
		t.Fatal(err)
	}
	deploy("calls", callApp)
	waitFor(t, 90*time.Second, func() bool { return h.status("calls").Ready == "2/2" }, "the calls app ready")
	cw := l.where("calls")
	if len(cw["caller"]) != 1 || len(cw["callee"]) != 1 || cw["caller"][0] == cw["callee"][0] {
		t.Fatalf("placement %v: want caller and callee on different nodes", cw)
	}
	t.Logf("caller on %s, callee on %s", cw["caller"][0], cw["callee"][0])
	l.path = "/call?fn=callee"
	for _, i := range []int{up, mix} {
		waitFor(t, 30*time.Second, func() bool {
			code, body := l.post(ctx, i, "spry")
			return code == 200 && body == "yrps"
		}, "the call answers on "+l.nodes[i].name)
		waitFor(t, 10*time.Second, func() bool { return l.idle(ctx, i) == "" }, "node "+l.nodes[i].name+" holds nothing: "+l.idle(ctx, i))
	}
}
