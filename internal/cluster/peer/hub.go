package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spry-dev/spry/internal/gateway"
)

// HubConfig configures a node's hub.
type HubConfig struct {
	// Name is this node's name in the cluster.
	Name string
	// Token, when set, is the cluster's shared secret: links are taken
	// only from nodes that prove they hold it. Without one, a link is
	// taken only from a node the cluster map names, from its address.
	Token []byte
	// Gateway admits the requests other nodes hand over.
	Gateway *gateway.Gateway
	// Keepalive is how often a link is pinged (default 1 s); a link on
	// which nothing arrived for three times as long is down.
	Keepalive time.Duration
	// OnLinks is told (in a goroutine of its own) when a link to a node
	// came up or went down.
	OnLinks func()
	Log     *slog.Logger
}

// Peer is another node: its name and the address of its hub.
type Peer struct {
	Name    string
	Address string
}

// Hub is a node's side of the hops between nodes: it keeps a link to
// every other node of the cluster map up (dialing again with back-off
// after a failure), takes the links other nodes dial to it, and holds the
// node's apps (App), through which requests leave for other nodes and by
// name of which the requests of other nodes are admitted.
type Hub struct {
	cfg HubConfig

	mu      sync.Mutex
	peers   map[string]string // name → address
	dialers map[string]*dialer
	in      map[*link]struct{}
	lns     []net.Listener
	closed  bool
	wg      sync.WaitGroup

	links atomic.Pointer[map[string]*link] // up out-links by node

	amu    sync.Mutex
	apps   atomic.Pointer[map[uint16]*App] // by index (tags carry it)
	byName atomic.Pointer[map[string]*App] // the newest app of each name
	nextID uint16
}

// NewHub returns a hub; Serve takes links, SetPeers makes it dial.
func NewHub(cfg HubConfig) (*Hub, error) {
	if cfg.Name == "" || len(cfg.Name) > 255 {
		return nil, fmt.Errorf("peer: node name %q: want 1 to 255 bytes", cfg.Name)
	}
	if cfg.Gateway == nil {
		return nil, errors.New("peer: a gateway is required")
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	h := &Hub{cfg: cfg, peers: map[string]string{}, dialers: map[string]*dialer{}, in: map[*link]struct{}{}}
	h.links.Store(&map[string]*link{})
	h.apps.Store(&map[uint16]*App{})
	h.byName.Store(&map[string]*App{})
	return h, nil
}

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("peer: hub closed")

// Serve takes links other nodes dial to ln until Close.
func (h *Hub) Serve(ln net.Listener) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	h.lns = append(h.lns, ln)
	h.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			h.mu.Lock()
			closed := h.closed
			h.mu.Unlock()
			if closed {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("peer: accept: %w", err)
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.accept(nc)
		}()
	}
}

// accept runs a link another node dialed.
func (h *Hub) accept(nc net.Conn) {
	name, err := handshake(nc, h.cfg.Name, h.cfg.Token, false)
	if err == nil {
		err = h.admissible(name, nc.RemoteAddr())
		if werr := writeVerdict(nc, err == nil); err == nil {
			err = werr
		}
	}
	if err != nil {
		h.cfg.Log.Warn("peer link refused", "from", nc.RemoteAddr(), "node", name, "err", err)
		nc.Close()
		return
	}
	l := newLink(h, name, nc, false)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		nc.Close()
		return
	}
	h.in[l] = struct{}{}
	h.mu.Unlock()
	h.cfg.Log.Info("peer link in", "node", name, "from", nc.RemoteAddr())
	err = l.run()
	h.mu.Lock()
	delete(h.in, l)
	h.mu.Unlock()
	h.cfg.Log.Info("peer link in closed", "node", name, "err", err)
}

// admissible says whether node name, connected from addr, may link to
// this one: it must be in the cluster map, and without a token connect
// from the host of its address there.
func (h *Hub) admissible(name string, from net.Addr) error {
	h.mu.Lock()
	addr, ok := h.peers[name]
	h.mu.Unlock()
	if !ok {
		return fmt.Errorf("node %s is not in this node's cluster map", name)
	}
	if len(h.cfg.Token) > 0 {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("node %s: address %q: %w", name, addr, err)
	}
	ta, ok := from.(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("node %s: not a TCP connection", name)
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.Equal(ta.IP) {
			return nil
		}
	} else if ips, err := net.LookupIP(host); err == nil {
		for _, ip := range ips {
			if ip.Equal(ta.IP) {
				return nil
			}
		}
	}
	return fmt.Errorf("node %s connected from %s, not from its address %s (without a cluster token, links are taken only from the nodes' own addresses)", name, ta.IP, host)
}

// SetPeers replaces the cluster map: links to nodes no longer in it go
// down, links to new ones are dialed.
func (h *Hub) SetPeers(peers []Peer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	want := map[string]string{}
	for _, p := range peers {
		if p.Name != h.cfg.Name && p.Name != "" && p.Address != "" {
			want[p.Name] = p.Address
		}
	}
	h.peers = want
	for name, d := range h.dialers {
		if addr, ok := want[name]; !ok || addr != d.addr {
			d.stop()
			delete(h.dialers, name)
		}
	}
	for l := range h.in {
		if _, ok := want[l.peer]; !ok {
			l.close()
		}
	}
	for name, addr := range want {
		if h.dialers[name] == nil {
			d := &dialer{h: h, name: name, addr: addr, quit: make(chan struct{})}
			h.dialers[name] = d
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				d.run()
			}()
		}
	}
}

// dialer keeps this node's link to one other node up.
type dialer struct {
	h          *Hub
	name, addr string
	quit       chan struct{}
	stopped    atomic.Bool
	mu         sync.Mutex
	cur        *link
}

func (d *dialer) stop() {
	if d.stopped.Swap(true) {
		return
	}
	close(d.quit)
	d.mu.Lock()
	if d.cur != nil {
		d.cur.close()
	}
	d.mu.Unlock()
}

func (d *dialer) run() {
	h := d.h
	wait := time.Duration(0)
	logged := false
	for {
		if wait > 0 {
			select {
			case <-d.quit:
				return
			case <-time.After(wait):
			}
		}
		wait = min(max(2*wait, 50*time.Millisecond), 2*time.Second)
		nc, err := net.DialTimeout("tcp", d.addr, 2*time.Second)
		var name string
		if err == nil {
			name, err = handshake(nc, h.cfg.Name, h.cfg.Token, true)
			if err == nil && name != d.name {
				err = fmt.Errorf("%w: %s answers as node %s", ErrHandshake, d.addr, name)
			}
			if err == nil {
				err = readVerdict(nc, name)
			}
			if err != nil {
				nc.Close()
			}
		}
		if err != nil {
			if !logged {
				h.cfg.Log.Warn("peer link: dial", "node", d.name, "address", d.addr, "err", err)
				logged = true
			}
			continue
		}
		logged = false
		l := newLink(h, d.name, nc, true)
		d.mu.Lock()
		if d.stopped.Load() {
			d.mu.Unlock()
			nc.Close()
			return
		}
		d.cur = l
		d.mu.Unlock()
		h.setLink(d.name, l)
		h.cfg.Log.Info("peer link up", "node", d.name, "address", d.addr)
		up := time.Now()
		err = l.run()
		d.mu.Lock()
		d.cur = nil
		d.mu.Unlock()
		if !d.stopped.Load() {
			h.cfg.Log.Warn("peer link down", "node", d.name, "err", err)
		}
		if time.Since(up) > 2*time.Second {
			wait = 0 // a link that lived: dial again at once; one that died young backs off
		}
	}
}

// setLink publishes l as the up link to node name (nil: none).
func (h *Hub) setLink(name string, l *link) {
	h.mu.Lock()
	m := make(map[string]*link, len(*h.links.Load())+1)
	for k, v := range *h.links.Load() {
		m[k] = v
	}
	if l != nil {
		m[name] = l
	} else {
		delete(m, name)
	}
	h.links.Store(&m)
	h.mu.Unlock()
	if f := h.cfg.OnLinks; f != nil {
		go f()
	}
}

// link returns the up link to node name, or nil.
func (h *Hub) link(name string) *link { return (*h.links.Load())[name] }

// Up reports whether the link to node name is up.
func (h *Hub) Up(name string) bool { return h.link(name) != nil }

// lost is called when out-link l went down: it is no longer used, and
// every request that waited on it is answered 502.
func (h *Hub) lost(l *link, err error) {
	h.mu.Lock()
	cur := (*h.links.Load())[l.peer]
	h.mu.Unlock()
	if cur == l {
		h.setLink(l.peer, nil)
	}
	msg := "spry: node " + l.peer + " went away while it ran the request"
	if isTimeout(err) {
		msg = "spry: node " + l.peer + " stopped answering (cut off?) while it ran the request"
	}
	for _, a := range *h.apps.Load() {
		l.failed.Add(uint64(a.failLink(l, msg)))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Close takes every link down and waits for the hub's goroutines.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	for _, ln := range h.lns {
		ln.Close()
	}
	for _, d := range h.dialers {
		d.stop()
	}
	for l := range h.in {
		l.close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// register adds an app and returns its index.
func (h *Hub) register(a *App) error {
	h.amu.Lock()
	defer h.amu.Unlock()
	cur := *h.apps.Load()
	if len(cur) >= 1<<16-1 {
		return errors.New("peer: too many apps")
	}
	for {
		h.nextID++
		if _, used := cur[h.nextID]; !used && h.nextID != 0 {
			break
		}
	}
	a.idx = h.nextID
	m := make(map[uint16]*App, len(cur)+1)
	for k, v := range cur {
		m[k] = v
	}
	m[a.idx] = a
	h.apps.Store(&m)
	n := make(map[string]*App, len(*h.byName.Load())+1)
	for k, v := range *h.byName.Load() {
		n[k] = v
	}
	n[a.name] = a
	h.byName.Store(&n)
	return nil
}

// unregister removes an app.
func (h *Hub) unregister(a *App) {
	h.amu.Lock()
	defer h.amu.Unlock()
	m := map[uint16]*App{}
	for k, v := range *h.apps.Load() {
		if v != a {
			m[k] = v
		}
	}
	h.apps.Store(&m)
	n := map[string]*App{}
	for k, v := range *h.byName.Load() {
		if v != a {
			n[k] = v
		}
	}
	// Another app of the same name (a reload's predecessor) takes over.
	for _, v := range m {
		if v.name == a.name && (n[v.name] == nil || n[v.name].idx < v.idx) {
			n[v.name] = v
		}
	}
	h.byName.Store(&n)
}

// entry returns the app and entry a reply's tag names, with the app's
// fill lock held for reading (the caller releases it), or nil.
func (h *Hub) entry(tag uint64) (*App, *entry, uint16) {
	a := (*h.apps.Load())[uint16(tag>>48)]
	if a == nil {
		return nil, nil, 0
	}
	buf := uint32(tag)
	if buf >= uint32(len(a.out)) {
		return nil, nil, 0
	}
	a.fill.RLock()
	if a.closed {
		a.fill.RUnlock()
		return nil, nil, 0
	}
	return a, &a.out[buf], uint16(tag >> 32)
}

// resolve finds the chain a request from another node continues, and
// checks that step hop runs function fn here too (the same spec); it
// returns fn's index.
func (h *Hub) resolve(app, chain, fn []byte, hop uint8, g *graphPart) (*gateway.Chain, uint16, string) {
	a := (*h.byName.Load())[string(app)]
	if a == nil {
		return nil, 0, "node " + h.cfg.Name + " does not run app " + string(app)
	}
	return a.resolve(chain, fn, hop, g)
}

// loadReport appends the load of every app's functions (a frameLoad
// body).
func (h *Hub) loadReport(dst []byte) []byte {
	for _, a := range *h.byName.Load() {
		dst = append(dst, byte(len(a.name)))
		dst = append(dst, a.name...)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(a.fns)))
		for fn := range a.fns {
			w, r := a.localLoad(fn)
			dst = binary.LittleEndian.AppendUint32(dst, w)
			dst = binary.LittleEndian.AppendUint16(dst, r)
			dst = binary.LittleEndian.AppendUint16(dst, 0)
		}
	}
	return dst
}

// LinkStatus is one link, for status.
type LinkStatus struct {
	Node     string  `json:"node"`
	Out      bool    `json:"out"` // dialed by this node (its requests go out on it)
	Up       bool    `json:"up"`
	Seconds  float64 `json:"upSeconds"`
	Sent     uint64  `json:"framesSent"`
	Received uint64  `json:"framesReceived"`
	Failed   uint64  `json:"failed"` // requests answered 502 when it went down
}

// Links returns the hub's links: every node of the cluster map (its
// out-link, up or not) and the links other nodes dialed in.
func (h *Hub) Links() []LinkStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []LinkStatus
	ups := *h.links.Load()
	for name := range h.peers {
		s := LinkStatus{Node: name, Out: true}
		if l := ups[name]; l != nil {
			s.Up, s.Seconds = true, time.Since(l.since).Seconds()
			s.Sent, s.Received, s.Failed = l.sent.Load(), l.received.Load(), l.failed.Load()
		}
		out = append(out, s)
	}
	for l := range h.in {
		out = append(out, LinkStatus{Node: l.peer, Up: true, Seconds: time.Since(l.since).Seconds(),
			Sent: l.sent.Load(), Received: l.received.Load()})
	}
	slices.SortFunc(out, func(a, b LinkStatus) int {
		if a.Node != b.Node {
			if a.Node < b.Node {
				return -1
			}
			return 1
		}
		if a.Out == b.Out {
			return 0
		}
		if a.Out {
			return -1
		}
		return 1
	})
	return out
}
