package peer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/gateway"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// The rig: nodes in this process, each a gateway in front of one app
// ("shop") whose chain "buy" (route /buy) has two steps, "upper" (upper-
// cases the body in place) and "rev" (reverses it), played by test
// instances on locked threads. Each node runs the instances the test
// gives it, and a hub with links to the others over loopback TCP. The
// remote slot of a function is made ready, as the node does it, when the
// node has no instance of it and a linked node does.

const (
	fnUpper = 0
	fnRev   = 1
	// slots: per function one local and one remote.
	gwEP = 1
	xEP  = 2
)

var fnNames = []string{"upper", "rev"}

type tnode struct {
	t       testing.TB
	name    string
	p       *pool.Pool
	fab     transport.Fabric
	gwc, xc transport.Conn
	gw      *gateway.App
	g       *gateway.Gateway
	ch      *gateway.Chain
	hub     *Hub
	app     *App
	addr    string // HTTP
	paddr   string // hub
	runs    [2]bool
	hold    chan desc.Desc // rev's requests, when holding
	holding bool
	graph   bool // the chain is a graph: instances leave routing to the gateway
	stopped sync.Once
	done    []chan struct{}
	conns   []transport.Conn
}

type nodeOpts struct {
	runs      [2]bool // which steps this node has an instance of
	holdRev   bool    // rev hands its requests to the test
	inflight  int
	timeout   time.Duration
	keepalive time.Duration
	token     []byte
	graph     []pool.Node // the chain's graph (nil: the line upper → rev)
}

func newTNode(t testing.TB, name string, o nodeOpts) *tnode {
	t.Helper()
	if o.inflight == 0 {
		o.inflight = 128
	}
	if o.timeout == 0 {
		o.timeout = 10 * time.Second
	}
	n := &tnode{t: t, name: name, runs: o.runs, hold: make(chan desc.Desc, 256), holding: o.holdRev}
	var err error
	n.p, err = pool.Create("peertest-"+name, pool.Layout{Buffers: 256, BufferSize: 4096, Functions: 2, Chains: 1, Slots: 4})
	if err != nil {
		t.Fatal(err)
	}
	n.p.SetFunction(fnUpper, 0, 2)
	n.p.SetFunction(fnRev, 2, 2)
	if o.graph != nil {
		n.graph = true
		if err := n.p.SetGraph(0, o.graph); err != nil {
			t.Fatal(err)
		}
	} else {
		n.p.SetChain(0, []uint16{fnUpper, fnRev})
	}
	n.fab, err = transport.New("uds", transport.Options{App: "shop", Dir: t.TempDir(), UID: -1})
	if err != nil {
		t.Fatal(err)
	}
	if n.gwc, err = n.fab.Open(gwEP); err != nil {
		t.Fatal(err)
	}
	if n.gw, err = gateway.NewApp(gateway.AppConfig{Name: "shop", Pool: n.p, Conn: n.gwc, Inflight: o.inflight}); err != nil {
		t.Fatal(err)
	}
	gwDone := make(chan struct{})
	go func() { n.gw.Run(); close(gwDone) }()
	n.ch = &gateway.Chain{Name: "buy", Route: "/buy", App: n.gw, Index: 0, First: fnUpper, FirstName: "upper",
		Methods: []string{"POST"}, Timeout: o.timeout}
	if n.g, err = gateway.New(gateway.Config{Chains: []*gateway.Chain{n.ch}}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	go n.g.Serve(ln)

	keep := o.keepalive
	if keep == 0 {
		keep = time.Second
	}
	n.hub, err = NewHub(HubConfig{Name: name, Gateway: n.g, Keepalive: keep, Token: o.token, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.paddr = pln.Addr().String()
	go n.hub.Serve(pln)
	if n.xc, err = n.fab.Open(xEP); err != nil {
		t.Fatal(err)
	}
	n.app, err = n.hub.Add(AppConfig{Name: "shop", Pool: n.p, Conn: n.xc, Chains: []string{"buy"}, Functions: fnNames,
		Remote: []uint32{1, 3}, Deliver: n.gw.Deliver, Fail: n.gw.Fail, Redispatch: n.gw.Redispatch,
		Chain: func(i int) *gateway.Chain {
			if i == 0 {
				return n.ch
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	n.gw.SetRemote(xEP)
	xDone := make(chan struct{})
	go func() { n.app.Run(); close(xDone) }()
	for fn, run := range o.runs {
		if run {
			n.startInstance(fn)
		}
	}
	t.Cleanup(func() {
		n.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.g.Shutdown(ctx)
		n.xc.Close()
		<-xDone
		n.app.Close()
		for _, c := range n.conns {
			c.Close()
		}
		for _, d := range n.done {
			<-d
		}
		n.gw.Close()
		n.gwc.Close()
		<-gwDone
		n.fab.Close()
		n.p.Close()
	})
	return n
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// stop takes the node's hub down (as if the node died: its links break).
func (n *tnode) stop() { n.stopped.Do(n.hub.Close) }

// connect makes the nodes know each other.
func connect(nodes ...*tnode) {
	var peers []Peer
	for _, n := range nodes {
		peers = append(peers, Peer{Name: n.name, Address: n.paddr})
	}
	for _, n := range nodes {
		n.hub.SetPeers(peers)
	}
	// Placement: every node runs what its runs say, one instance each.
	byFn := map[string][]NodeCount{}
	for _, n := range nodes {
		for fn, run := range n.runs {
			if run {
				byFn[fnNames[fn]] = append(byFn[fnNames[fn]], NodeCount{Node: n.name, Instances: 1})
			}
		}
	}
	for _, n := range nodes {
		n.app.SetPlacement(byFn)
	}
	for _, n := range nodes {
		n.waitLinks(len(nodes) - 1)
		n.syncRemote()
	}
}

func (n *tnode) waitLinks(k int) {
	n.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(*n.hub.links.Load()) < k {
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: %d links up, want %d", n.name, len(*n.hub.links.Load()), k)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncRemote makes each function's remote slot ready when the node does
// not run it and another node does (what the node does on every change).
func (n *tnode) syncRemote() {
	for fn, slot := range []uint32{1, 3} {
		if !n.runs[fn] && n.app.Remote(fn) {
			if n.p.SlotID(slot) != xEP {
				n.p.StartSlot(slot, xEP, 1)
			}
			n.p.SetSlotState(slot, pool.SlotReady)
		} else if n.p.SlotID(slot) == xEP {
			n.p.SetSlotState(slot, pool.SlotDraining)
		}
	}
	n.gw.InstanceReady()
}

// startInstance runs function fn's instance (slot 0 or 2) on a locked
// thread.
func (n *tnode) startInstance(fn int) {
	slot := uint32(2 * fn)
	id := uint16(10 + fn)
	c, err := n.fab.Open(id)
	if err != nil {
		n.t.Fatal(err)
	}
	n.conns = append(n.conns, c)
	done := make(chan struct{})
	n.done = append(n.done, done)
	go n.instance(c, slot, fn, done)
	n.p.StartSlot(slot, id, 1)
	n.p.SetSlotState(slot, pool.SlotReady)
}

func (n *tnode) instance(c transport.Conn, slot uint32, fn int, done chan struct{}) {
	defer close(done)
	runtime.LockOSThread()
	var ds [transport.MaxBatch]desc.Desc
	var rot uint32
	for {
		k, err := c.Recv(ds[:])
		if err != nil {
			return
		}
		for _, d := range ds[:k] {
			n.p.Stats(slot).Queue.Add(-1)
			if !n.p.Accept(d.Buf, d.Gen, d.Src, c.ID()) {
				continue
			}
			if d.Is(desc.FlagCall) {
				n.callStep(c, fn, d)
				continue
			}
			if fn == fnRev && n.holding {
				n.hold <- d
				continue
			}
			n.step(c, fn, d, &rot)
		}
	}
}

// step runs function fn on d's buffer and sends it on.
func (n *tnode) step(c transport.Conn, fn int, d desc.Desc, rot *uint32) {
	if n.graph {
		n.graphStep(c, fn, d)
		return
	}
	h := n.p.Header(d.Buf)
	h.HopStart(int(d.Hop), mono.Now())
	b := n.p.Data(d.Buf)
	if fn == fnUpper {
		for i, c := range b {
			if 'a' <= c && c <= 'z' {
				b[i] = c - 'a' + 'A'
			}
		}
	} else {
		for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
			b[i], b[j] = b[j], b[i]
		}
		h.SetReplyContentType("text/x-rev")
		h.AddRespHeader("X-Rev-Node", n.name)
	}
	h.HopEnd(int(d.Hop), mono.Now())
	if next, ok := n.p.Step(d.Chain, int(d.Hop)+1); ok {
		*rot++
		if err := transport.Forward(n.p, c, next, desc.Desc{Buf: d.Buf, Chain: d.Chain, Hop: d.Hop + 1}, *rot); err != nil {
			n.reply(c, d)
		}
		return
	}
	n.reply(c, d)
}

func (n *tnode) reply(c transport.Conn, d desc.Desc) {
	transport.Pass(n.p, c, desc.Desc{Dst: gwEP, Buf: d.Buf, Chain: d.Chain, Hop: d.Hop, Flags: desc.FlagReply})
}

// release runs the held rev steps.
func (n *tnode) release(d desc.Desc) {
	var rot uint32
	n.step(n.conns[len(n.conns)-1], fnRev, d, &rot)
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

// post sends one request to the node's gateway.
func (n *tnode) post(body string) (int, string, http.Header) {
	resp, err := client.Post("http://"+n.addr+"/buy", "text/plain", strings.NewReader(body))
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// waitIdle waits until every buffer of the node is free and nothing is in
// flight or out at another node.
func (n *tnode) waitIdle() { n.waitIdleT(n.t) }

func (n *tnode) waitIdleT(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := 0
		for i := range n.app.out {
			if n.app.out[i].word.Load()&7 != stFree {
				out++
			}
		}
		if n.p.FreeBuffers() == int(n.p.Buffers()) && n.gw.Inflight() == 0 && out == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d buffers free, %d in flight, %d out at other nodes", n.name, n.p.FreeBuffers(), n.p.Buffers(), n.gw.Inflight(), out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func want(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// graphStep plays a step of a graph chain: a branch answers
// "fn@node", a join what its inputs hold ("status:body" each, "-" for one
// that did not arrive, joined by "|"), a line step upper-cases or reverses
// in place; the output goes to the gateway, which routes it on.
func (n *tnode) graphStep(c transport.Conn, fn int, d desc.Desc) {
	p := n.p
	h := p.Header(d.Buf)
	_, inBranch := h.TopFrame()
	switch {
	case h.Kind() == pool.KindJoin:
		var parts []string
		for i := range p.Inputs(d.Buf).Width {
			b, ok := p.Input(d.Buf, i)
			if !ok {
				parts = append(parts, "-")
				continue
			}
			parts = append(parts, fmt.Sprintf("%d:%s", p.Header(b).Status(), p.Data(b)))
		}
		p.DropInputs(d.Buf, c.ID())
		p.Clear(d.Buf, c.ID())
		h.SetData(0, uint32(copy(p.Buffer(d.Buf), strings.Join(parts, "|"))))
	case inBranch:
		p.Clear(d.Buf, c.ID())
		h.SetData(0, uint32(copy(p.Buffer(d.Buf), fnNames[fn]+"@"+n.name)))
	default:
		b := p.Data(d.Buf)
		if fn == fnUpper {
			copy(b, strings.ToUpper(string(b)))
		} else {
			slices.Reverse(b)
		}
	}
	h.SetPlace(d.Hop, pool.PhaseDone)
	transport.Pass(p, c, desc.Desc{Dst: gwEP, Buf: d.Buf, Chain: d.Chain, Hop: d.Hop, Flags: desc.FlagRoute})
}

// callStep answers a call of function fn: "fn@node(depth D):payload",
// back to the caller.
func (n *tnode) callStep(c transport.Conn, fn int, d desc.Desc) {
	p := n.p
	h := p.Header(d.Buf)
	out := fmt.Sprintf("%s@%s(depth %d):%s", fnNames[fn], n.name, h.Call().Depth, p.Data(d.Buf))
	p.Clear(d.Buf, c.ID())
	h.SetData(0, uint32(copy(p.Buffer(d.Buf), out)))
	h.SetPlace(pool.CallNode, pool.PhaseDone)
	transport.Pass(p, c, desc.Desc{Dst: h.Call().Caller, Buf: d.Buf, Chain: d.Chain, Hop: pool.CallNode, Flags: desc.FlagReturn})
}
