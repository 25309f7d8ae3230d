package node

import (
	"fmt"
	"net"
	"time"

	"github.com/spry-dev/spry/internal/cluster/peer"
	"github.com/spry-dev/spry/internal/control"
	"github.com/spry-dev/spry/internal/gateway"
	"github.com/spry-dev/spry/internal/pool"
)

// A node of a cluster hands a request to another node when the next step
// (or the first) has no ready instance here and another node runs it
// (internal/cluster/peer has the protocol). This file wires that into the
// node: each function has one more slot in its app's routing table, its
// remote slot, which holds the app's peer endpoint while the function has
// no ready instance here and a node it has an up link to does; the app's
// peer endpoint takes the requests sent to it there on to that node.

// PeerConfig is a cluster node's side of the hops between nodes.
type PeerConfig struct {
	// Name is the node's name in the cluster; empty: no hops between
	// nodes.
	Name string
	// Listen is where the node takes the links other nodes dial (spry up
	// --peer-listen).
	Listen string
	// Token is the cluster's shared secret (nil: links are taken only from
	// the nodes' own addresses).
	Token []byte
	// Keepalive is the links' ping period (default 1 s).
	Keepalive time.Duration
}

// remoteSlot is a function's slot for its instances on other nodes.
type remoteSlot struct {
	slot uint32
}

// listenPeers takes the node's peer address (Start, before anything is
// built, like the other ports).
func (n *Node) listenPeers() error {
	if !n.cfg.Cluster || n.cfg.Peers.Name == "" {
		return nil
	}
	ln, err := listen("peer links", "--peer-listen", n.cfg.Peers.Listen)
	if err != nil {
		return err
	}
	n.peerLn = ln
	return nil
}

// startHub starts the node's hub once the gateway exists, and joins the
// apps already running.
func (n *Node) startHub() error {
	if n.peerLn == nil {
		return nil
	}
	h, err := peer.NewHub(peer.HubConfig{Name: n.cfg.Peers.Name, Token: n.cfg.Peers.Token, Gateway: n.gw,
		Keepalive: n.cfg.Peers.Keepalive, Log: n.log, OnLinks: n.linksChanged})
	if err != nil {
		return err
	}
	n.hub = h
	go func() {
		if err := h.Serve(n.peerLn); err != nil && err != peer.ErrClosed {
			n.failed <- fmt.Errorf("node: peer links: %w", err)
		}
	}()
	for _, a := range n.serving() {
		if err := a.joinPeers(); err != nil {
			return err
		}
	}
	return nil
}

// PeerAddr returns the address the node takes peer links on (nil: none).
func (n *Node) PeerAddr() net.Addr {
	if n.peerLn == nil {
		return nil
	}
	return n.peerLn.Addr()
}

// SetPeers replaces the other nodes of the cluster (their names and peer
// addresses): links to new ones are dialed, links to gone ones dropped.
func (n *Node) SetPeers(peers []peer.Peer) {
	if n.hub != nil {
		n.hub.SetPeers(peers)
	}
}

// SetPlacement says where the cluster runs app's functions (by function
// name: nodes and instances; this node's own entry is ignored): a step
// with no instance here goes to those nodes.
func (n *Node) SetPlacement(app string, byFn map[string][]peer.NodeCount) error {
	for _, a := range n.serving() {
		if a.cfg.Name == app {
			a.remoteMu.Lock()
			p := a.peer
			a.remoteMu.Unlock()
			if p != nil {
				p.SetPlacement(byFn)
				a.syncRemote()
			}
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrNoFunction, app)
}

// linksChanged runs when a link to another node came up or went down.
func (n *Node) linksChanged() {
	for _, a := range n.serving() {
		a.syncRemote()
	}
}

// Links returns the node's links to other nodes (nil when it has none).
func (n *Node) Links() []peer.LinkStatus {
	if n.hub == nil {
		return nil
	}
	return n.hub.Links()
}

// remoteSlots is how many routing-table slots the remote slots of an
// app's functions take: one per function on a node of a cluster.
func (n *Node) remoteSlots() int {
	if n.cfg.Cluster && n.cfg.Peers.Name != "" {
		return 1
	}
	return 0
}

// joinPeers opens the app's peer endpoint and registers it with the hub.
func (a *app) joinPeers() error {
	n := a.n
	if n.hub == nil || a.peer != nil {
		return nil
	}
	id, err := n.ids.alloc()
	if err != nil {
		return err
	}
	c, err := a.fab.Open(id)
	if err != nil {
		n.ids.free(id)
		return fmt.Errorf("app %s: peer endpoint: %w", a.cfg.Name, err)
	}
	cfg := peer.AppConfig{Name: a.cfg.Name, Pool: a.pool, Conn: c,
		Deliver: a.gw.Deliver, Fail: a.gw.Fail, Redispatch: a.gw.Redispatch,
		Chain: func(i int) *gateway.Chain {
			chs := a.chains()
			if i < 0 || i >= len(chs) {
				return nil
			}
			return chs[i]
		}}
	for _, cc := range a.cfg.Chains {
		cfg.Chains = append(cfg.Chains, cc.Name)
	}
	for _, f := range a.fns {
		cfg.Functions = append(cfg.Functions, f.cfg.Name)
		cfg.Remote = append(cfg.Remote, f.remote.slot)
	}
	p, err := n.hub.Add(cfg)
	if err != nil {
		c.Close()
		n.ids.free(id)
		return err
	}
	a.remoteMu.Lock()
	a.peerConn, a.peer, a.peerID = c, p, id
	a.remoteMu.Unlock()
	a.peerDone = make(chan struct{})
	a.gw.SetRemote(id)
	go func() {
		defer close(a.peerDone)
		if err := p.Run(); err != nil {
			n.log.Error("peer endpoint stopped", "app", a.cfg.Name, "err", err)
		}
	}()
	return nil
}

// leavePeers closes the app's peer endpoint (before its gateway side).
func (a *app) leavePeers() {
	if a.peerConn == nil {
		return
	}
	a.remoteMu.Lock()
	p := a.peer
	a.peer = nil
	a.remoteMu.Unlock()
	a.gw.SetRemote(0)
	a.peerConn.Close()
	<-a.peerDone
	p.Close()
	a.n.ids.free(a.peerConn.ID())
}

// syncRemote makes each function's remote slot ready when the function
// has no ready instance here and a node with an up link runs it, and
// takes it out of the routing table otherwise: a chain's steps run on this
// node whenever it can run them.
func (a *app) syncRemote() {
	a.remoteMu.Lock()
	defer a.remoteMu.Unlock()
	if a.peer == nil {
		return
	}
	woke := false
	for _, f := range a.fns {
		if f.remote == nil {
			continue
		}
		s := f.remote.slot
		want := !f.anyReady() && a.peer.Remote(int(f.cfg.Index))
		st := a.pool.SlotState(s)
		switch {
		case want && st != pool.SlotReady:
			if a.pool.SlotID(s) != a.peer.ID() {
				a.pool.StartSlot(s, a.peer.ID(), control.CapacityScale)
			}
			a.pool.SetSlotState(s, pool.SlotReady)
			woke = true
		case !want && st == pool.SlotReady:
			a.pool.SetSlotState(s, pool.SlotDraining)
		}
	}
	if woke {
		a.gw.InstanceReady() // requests waiting for an instance go now
	}
}

// anyReady reports whether one of f's instances here is ready.
func (f *function) anyReady() bool {
	for _, in := range f.insts {
		if f.a.pool.SlotState(in.slot) == pool.SlotReady {
			return true
		}
	}
	return false
}

// remoteState is what /v1/status shows of a function's instances on other
// nodes.
func (f *function) remoteState() *RemoteStatus {
	a := f.a
	a.remoteMu.Lock()
	p := a.peer
	a.remoteMu.Unlock()
	if p == nil || f.remote == nil {
		return nil
	}
	st := a.pool.Stats(f.remote.slot)
	return &RemoteStatus{Active: a.pool.SlotState(f.remote.slot) == pool.SlotReady,
		Nodes: p.RemoteNodes(int(f.cfg.Index)), Inflight: int(st.InFlight.Load()), Sent: st.Arrivals.Load()}
}

// RemoteStatus is a function's instances on other nodes, as this node
// sees them.
type RemoteStatus struct {
	// Active: this node has no ready instance of the function and sends
	// its requests to the nodes below.
	Active   bool              `json:"active"`
	Nodes    []peer.RemoteNode `json:"nodes,omitempty"`
	Inflight int               `json:"inflight"`
	Sent     uint64            `json:"sent"` // requests sent to other nodes
}
