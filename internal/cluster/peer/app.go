package peer

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/gateway"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
	"golang.org/x/sys/unix"
)

// AppConfig configures an app's side of the hops between nodes.
type AppConfig struct {
	Name string
	Pool *pool.Pool
	// Conn is the app's endpoint that stands for the instances other
	// nodes run: the node puts it in the routing table's remote slot of
	// each function (Remote) when this node has no ready instance of the
	// function and another node does, so a step (or the gateway) hands a
	// request for it a descriptor like to any instance.
	Conn transport.Conn
	// Chains and Functions name the app's chains and functions by index.
	Chains, Functions []string
	// Remote is each function's remote slot in the routing table.
	Remote []uint32
	// Deliver and Fail hand a request's buffer back to the gateway, held
	// by pool.OwnerDaemon: answered with the reply it holds, or with
	// status and msg (gateway.App.Deliver, gateway.App.Fail). Redispatch
	// sends it on to step hop (an instance of function fn) when one comes
	// up (gateway.App.Redispatch).
	Deliver    func(buf uint32)
	Fail       func(buf uint32, status uint16, msg string)
	Redispatch func(buf uint32, fn uint16, hop uint8)
	// Chain returns the gateway's chain i of the app (nil: none).
	Chain func(i int) *gateway.Chain
}

// App is one app's side of the hops between nodes: the endpoint through
// which its requests leave for other nodes, and the chains by which other
// nodes' requests come in.
type App struct {
	hub    *Hub
	cfg    AppConfig
	idx    uint16
	name   string
	nameB  []byte
	pool   *pool.Pool
	conn   transport.Conn
	id     uint16
	chains [][]byte
	fns    []fnInfo
	out    []entry // by buffer index: requests out at other nodes
	place  atomic.Pointer[placement]
	queued atomic.Int64 // request frames in links' queues (they read the pool)
	rot    atomic.Uint32
	stats  AppStats

	fill   sync.RWMutex // readers writing replies into the pool (Close waits)
	closed bool
}

type fnInfo struct {
	name   []byte
	remote uint32
}

// AppStats count an app's requests that went to other nodes.
type AppStats struct {
	Shipped  atomic.Uint64 // requests handed to another node
	Answered atomic.Uint64 // their replies, back
	Failed   atomic.Uint64 // answered 502: the node went away or broke the link
	Retried  atomic.Uint64 // refused by a node and sent to another
	Stale    atomic.Uint64 // descriptors dropped unread (not in transit to the endpoint)
	Late     atomic.Uint64 // replies for requests no longer waiting (dropped)
}

// Entry states (the low 3 bits of entry.word; the entry's sequence number
// is above them, and in the tag of the request's frames).
const (
	stFree   = iota
	stQueued // its frame waits in a link's queue (the writer reads the buffer)
	stSent   // written; waiting for the reply
	stTaken  // a reader is writing the reply, or it is being answered otherwise
)

// entry is a request of the app out at another node: the buffer of that
// index is held by the app's endpoint meanwhile. Its fields are written
// by whoever moves word from stFree or stTaken, before the store that
// publishes the next state.
type entry struct {
	word     atomic.Uint32 // seq<<3 | state
	link     *link
	cand     *cand
	chain    uint16
	fn       uint16
	hop      uint8
	deadline int64
	tried    uint64 // candidates (by index in the placement) tried already
}

// take moves e from queued or sent to taken, for the reply with sequence
// seq on link l, and reports whether it could.
func (e *entry) take(seq uint16, l *link) bool {
	w := e.word.Load()
	if uint16(w>>3) != seq || (w&7 != stQueued && w&7 != stSent) || e.link != l {
		return false
	}
	return e.word.CompareAndSwap(w, uint32(seq)<<3|stTaken)
}

// placement is where other nodes run the app's functions.
type placement struct {
	fns [][]*cand // by function index
}

// cand is a node that runs a function, and the requests of this app for
// it out there now.
type cand struct {
	node     string
	count    int32
	inflight atomic.Int32
}

// NodeCount is a number of a function's instances on a node.
type NodeCount struct {
	Node      string
	Instances int
}

// Add registers an app with the hub. Run receives its descriptors.
func (h *Hub) Add(cfg AppConfig) (*App, error) {
	p := cfg.Pool
	if p == nil || cfg.Conn == nil || cfg.Deliver == nil || cfg.Fail == nil || cfg.Redispatch == nil || cfg.Chain == nil {
		return nil, errors.New("peer: app config incomplete")
	}
	if len(cfg.Remote) != len(cfg.Functions) {
		return nil, fmt.Errorf("peer: app %s: %d remote slots for %d functions", cfg.Name, len(cfg.Remote), len(cfg.Functions))
	}
	if len(cfg.Name) > 255 {
		return nil, fmt.Errorf("peer: app name %q longer than 255 bytes", cfg.Name)
	}
	a := &App{hub: h, cfg: cfg, name: cfg.Name, nameB: []byte(cfg.Name), pool: p, conn: cfg.Conn, id: cfg.Conn.ID(),
		out: make([]entry, p.Buffers())}
	for _, c := range cfg.Chains {
		a.chains = append(a.chains, []byte(c))
	}
	for i, f := range cfg.Functions {
		a.fns = append(a.fns, fnInfo{name: []byte(f), remote: cfg.Remote[i]})
	}
	a.place.Store(&placement{fns: make([][]*cand, len(a.fns))})
	if err := h.register(a); err != nil {
		return nil, err
	}
	return a, nil
}

// ID returns the app's endpoint id.
func (a *App) ID() uint16 { return a.id }

// Stats returns the app's counters.
func (a *App) Stats() *AppStats { return &a.stats }

// SetPlacement says which other nodes run the app's functions (by
// function name), and how many instances each.
func (a *App) SetPlacement(byFn map[string][]NodeCount) {
	old := a.place.Load()
	p := &placement{fns: make([][]*cand, len(a.fns))}
	for i, f := range a.fns {
		for _, nc := range byFn[string(f.name)] {
			if nc.Instances <= 0 || nc.Node == a.hub.cfg.Name {
				continue
			}
			c := &cand{node: nc.Node, count: int32(nc.Instances)}
			for _, o := range old.fns[i] {
				if o.node == c.node {
					c.inflight.Store(o.inflight.Load())
				}
			}
			p.fns[i] = append(p.fns[i], c)
		}
	}
	a.place.Store(p)
}

// Remote reports whether another node runs function fn and this node has
// an up link to it: the node's remote slot for fn may then be picked.
func (a *App) Remote(fn int) bool {
	if fn < 0 || fn >= len(a.fns) {
		return false
	}
	for _, c := range a.place.Load().fns[fn] {
		if a.hub.Up(c.node) {
			return true
		}
	}
	return false
}

// RemoteNodes returns the nodes that run function fn, with their
// instances, whether the link to each is up, and this app's requests out
// there now.
func (a *App) RemoteNodes(fn int) []RemoteNode {
	if fn < 0 || fn >= len(a.fns) {
		return nil
	}
	var out []RemoteNode
	for _, c := range a.place.Load().fns[fn] {
		out = append(out, RemoteNode{Node: c.node, Instances: int(c.count), Up: a.hub.Up(c.node), Inflight: int(c.inflight.Load())})
	}
	return out
}

// RemoteNode is another node that runs a function, for status.
type RemoteNode struct {
	Node      string `json:"node"`
	Instances int    `json:"instances"`
	Up        bool   `json:"up"`
	Inflight  int    `json:"inflight"`
}

// Run receives the descriptors sent to the app's endpoint and hands each
// request to another node, until the endpoint is closed. On a transport
// whose descriptors arrive on a socket (transport.Poller) its goroutine
// waits in Go's network poller like the links' readers, so that no
// thread of the node sleeps in a system call holding a processor (with
// few CPUs, that makes the runtime hand processors back and forth on
// every request); otherwise it locks its goroutine to an OS thread that
// sleeps in the kernel, as the gateway's receive loop does.
func (a *App) Run() error {
	if pl, ok := a.conn.(transport.Poller); ok {
		if err, ok := a.runPolled(pl); ok {
			return err
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var batch [transport.MaxBatch]desc.Desc
	pause := time.Millisecond
	for {
		n, err := a.conn.Recv(batch[:])
		if err != nil {
			if errors.Is(err, transport.ErrClosed) {
				return nil
			}
			time.Sleep(pause)
			pause = min(2*pause, 100*time.Millisecond)
			continue
		}
		pause = time.Millisecond
		a.handle(batch[:n])
	}
}

// runPolled is Run on a Poller: a duplicate of its socket, non-blocking,
// in Go's network poller; false: the socket cannot be watched so.
func (a *App) runPolled(pl transport.Poller) (error, bool) {
	fd, err := unix.FcntlInt(uintptr(pl.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	// The flag is the socket's, not the descriptor's: the endpoint's own
	// blocking Recv is not used from here on (TryRecv does not wait).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, false
	}
	f := os.NewFile(uintptr(fd), "spry-peer-endpoint")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, false
	}
	pr := &polled{pl: pl}
	pr.fn = pr.recv
	pause := time.Millisecond
	// The endpoint's Close marks it closed before it shuts the socket
	// down (transport.Poller): the wake-up that shutdown raises finds
	// ErrClosed, whenever it comes.
	waited := false
	for {
		pr.n, pr.err = 0, nil
		if err := rc.Read(pr.fn); err != nil {
			if !waited && pr.n == 0 && pr.err == nil {
				// Not pollable (the wait failed): back to blocking reads.
				unix.SetNonblock(fd, false)
				return nil, false
			}
			return err, true
		}
		waited = true
		switch {
		case errors.Is(pr.err, transport.ErrClosed):
			return nil, true
		case pr.err != nil:
			time.Sleep(pause)
			pause = min(2*pause, 100*time.Millisecond)
			continue
		}
		pause = time.Millisecond
		a.handle(pr.batch[:pr.n])
	}
}

// polled is runPolled's receive state (its read function is made once).
type polled struct {
	pl    transport.Poller
	fn    func(fd uintptr) bool
	n     int
	err   error
	batch [transport.MaxBatch]desc.Desc
}

func (p *polled) recv(uintptr) bool {
	p.n, p.err = p.pl.TryRecv(p.batch[:])
	return p.n > 0 || p.err != nil
}

// handle takes a batch of descriptors the endpoint received.
func (a *App) handle(batch []desc.Desc) {
	for _, d := range batch {
		if d.Is(desc.FlagControl) {
			continue
		}
		call := d.Is(desc.FlagCall) || d.Hop == pool.CallNode
		var fn uint16
		var ok bool
		if call && d.Buf < uint32(len(a.out)) {
			// A call names its function in the buffer's call frame.
			fn, ok = a.pool.Header(d.Buf).Call().Callee, true
		} else {
			fn, ok = a.pool.Step(d.Chain, int(d.Hop))
		}
		if ok && int(fn) < len(a.fns) {
			a.pool.Stats(a.fns[fn].remote).Queue.Add(-1)
		}
		// Taken only by completing the transfer the descriptor
		// announces (see pool.Accept): anything else is dropped
		// unread.
		if !a.pool.Accept(d.Buf, d.Gen, d.Src, a.id) {
			a.stats.Stale.Add(1)
			continue
		}
		if !ok || int(fn) >= len(a.fns) || int(d.Chain) >= len(a.chains) {
			a.giveBack(d.Buf, 500, "spry: a descriptor for a step the chain does not have")
			continue
		}
		hop := d.Hop
		if call {
			hop = pool.CallNode
		}
		a.ship(d.Buf, d.Chain, fn, hop, 0)
	}
}

// ship hands the request of buffer buf (held by the endpoint), at step
// hop (function fn), to the least loaded other node that runs fn and has
// not been tried (tried: by candidate index).
func (a *App) ship(buf uint32, chain, fn uint16, hop uint8, tried uint64) {
	p := a.pool
	hdr := p.Header(buf)
	now := mono.Now()
	dl := hdr.Deadline()
	if dl != 0 && now >= dl {
		a.giveBack(buf, 504, "spry: the request's deadline passed before it could go to another node")
		return
	}
	if hdr.Kind() == pool.KindJoin && joinLen(p, buf) > math.MaxUint32 {
		a.giveBack(buf, 413, "spry: the join of chain "+string(a.chains[chain])+" has inputs of more than 4 GiB together, which do not cross nodes; it needs an instance of "+string(a.fns[fn].name)+" on node "+a.hub.cfg.Name)
		return
	}
	for {
		c, ci, l := a.pick(fn, tried)
		if l == nil {
			// No other node can take it now (links down, placement
			// changed): it waits, like any request, for an instance
			// here or a link to come up, until its deadline.
			a.redispatch(buf, fn, hop)
			return
		}
		tried |= 1 << (ci & 63)
		e := &a.out[buf]
		w := e.word.Load()
		seq := uint16(w>>3) + 1
		e.link, e.cand, e.chain, e.fn, e.hop, e.deadline, e.tried = l, c, chain, fn, hop, dl, tried
		e.word.Store(uint32(seq)<<3 | stQueued)
		c.inflight.Add(1)
		st := p.Stats(a.fns[fn].remote)
		st.InFlight.Add(1)
		a.queued.Add(1)
		tag := uint64(a.idx)<<48 | uint64(seq)<<32 | uint64(buf)
		if a.send(l, tag, buf, chain, fn, hop, hdr, now) {
			a.stats.Shipped.Add(1)
			st.Arrivals.Add(1)
			return
		}
		// The link went down under us: take the entry back, try another.
		a.queued.Add(-1)
		c.inflight.Add(-1)
		st.InFlight.Add(-1)
		e.word.Store(uint32(seq)<<3 | stFree)
	}
}

// joinLen returns the length of join buffer buf's inputs, together.
func joinLen(p *pool.Pool, buf uint32) int {
	n := 0
	for i := range p.Inputs(buf).Width {
		if in, ok := p.Input(buf, i); ok {
			n += payloadLen(p, in)
		}
	}
	return n
}

// send queues the request frame of buf on link l: a step of a chain's
// line, or, with its graph part, a branch of a fan-out, a join (with its
// inputs) or a call (hop pool.CallNode).
func (a *App) send(l *link, tag uint64, buf uint32, chain, fn uint16, hop uint8, hdr *pool.BufHeader, now int64) bool {
	p := a.pool
	l.open.Add(1) // until the request is settled (App.settle); a link that goes down is not used again
	ok := l.enqueue(func(f *frame) {
		ct, meta := hdr.ContentType(), hdr.RawMeta()
		ch := a.chains[chain]
		nt := min(hdr.Hops(), int(hop))
		if hop == pool.CallNode {
			nt = 0 // a call runs one function: the chain's hop times stay with the caller
		}
		left := int64(1 << 62) // no deadline
		if dl := hdr.Deadline(); dl != 0 {
			left = dl - now
		}
		flags := hdr.Flags() & pool.FlagContentType
		n := f.addBody(p, buf)
		if hop == pool.CallNode || hdr.Depth() > 0 || hdr.Kind() == pool.KindJoin {
			flags |= wireGraph
			n += f.putGraph(p, buf, hop, now) // a join's inputs' bodies follow the request's own
		}
		hd := head{typ: frameRequest, hop: hop, metaLen: uint16(len(meta)), bodyLen: uint32(n), tag: tag,
			left: left, ctypeLen: uint8(len(ct)), flags: flags, times: uint8(nt),
			appLen: uint8(len(a.nameB)), chainLen: uint8(len(ch)), fnLen: uint8(len(a.fns[fn].name)), status: hdr.Status()}
		hd.put(f.hd[:])
		f.nt = len(putTimes(f.times[:0], hdr, nt, now))
		f.add(a.nameB)
		f.add(ch)
		f.add(a.fns[fn].name)
		f.add(ct)
		f.add(meta)
		f.app, f.buf, f.seq = a, buf, uint16(tag>>32)
	})
	if !ok {
		l.open.Add(-1) // not sent: nothing to settle
	}
	return ok
}

// pick chooses the node for a request of function fn: among those whose
// link is up and that were not tried, the one whose last reported load
// (requests waiting at and running in its ready instances, plus this
// node's requests out there since) per ready instance is least; nodes
// that reported no ready instance come last.
func (a *App) pick(fn uint16, tried uint64) (*cand, int, *link) {
	cs := a.place.Load().fns[fn]
	n := len(cs)
	if n == 0 {
		return nil, 0, nil
	}
	start := int(a.rot.Add(1)) % n
	var best *cand
	var bestLink *link
	bi := 0
	var bestLoad, bestReady uint64
	for k := range n {
		i := (start + k) % n
		c := cs[i]
		if tried&(1<<(i&63)) != 0 {
			continue
		}
		l := a.hub.link(c.node)
		if l == nil {
			continue
		}
		load := uint64(max(c.inflight.Load(), 0)) + 1
		ready := uint64(c.count)
		if r, ok := l.load(a.name, int(fn)); ok {
			load += uint64(r.waiting)
			ready = uint64(r.ready)
		}
		better := best == nil
		if !better {
			switch {
			case ready == 0 && bestReady > 0:
			case ready > 0 && bestReady == 0:
				better = true
			case ready == 0:
				better = load < bestLoad
			default:
				better = load*bestReady < bestLoad*ready
			}
		}
		if better {
			best, bestLink, bi, bestLoad, bestReady = c, l, i, load, ready
		}
	}
	return best, bi, bestLink
}

// sent marks the request of buf (sequence seq) written.
func (a *App) sent(buf uint32, seq uint16) {
	e := &a.out[buf]
	e.word.CompareAndSwap(uint32(seq)<<3|stQueued, uint32(seq)<<3|stSent)
}

// reship sends a request a node refused to another node that runs its
// function and was not tried, and reports whether there was one. The
// entry is taken (the caller's).
func (a *App) reship(buf uint32, e *entry) bool {
	if _, _, l := a.pick(e.fn, e.tried); l == nil {
		return false
	}
	chain, fn, hop, tried := e.chain, e.fn, e.hop, e.tried
	a.settle(buf, e)
	a.stats.Retried.Add(1)
	a.ship(buf, chain, fn, hop, tried)
	return true
}

// settle undoes a request's counts once its node is done with it, and
// frees its entry (the caller holds it taken).
func (a *App) settle(buf uint32, e *entry) {
	e.link.open.Add(-1) // opened by send: the request is over on the link, answered or not
	e.cand.inflight.Add(-1)
	st := a.pool.Stats(a.fns[e.fn].remote)
	st.InFlight.Add(-1)
	w := e.word.Load()
	e.link, e.cand = nil, nil
	e.word.Store(w &^ 7) // free, same sequence: the next use bumps it
}

// answer writes the reply into buf (its body already there, or in msg),
// and hands it to the gateway.
func (a *App) answer(buf uint32, e *entry, h *head, meta, ctype, msg []byte) {
	p := a.pool
	hdr := p.Header(buf)
	n := h.bodyLen
	if msg != nil {
		n = uint32(copy(p.Buffer(buf), msg))
	}
	// The request's payload (extents, a fan-out's shared output, a join's
	// inputs) went out: the reply, in the buffer's own room, replaces it.
	p.Clear(buf, a.id)
	hdr.SetData(0, n)
	hdr.SetContentType(ctype)
	hdr.SetRawMeta(meta) // at most MaxMeta: the frame's head says so
	hdr.SetStatus(h.status)
	hdr.SetFlags(h.flags&pool.FlagContentType | pool.FlagStop)
	a.pool.Stats(a.fns[e.fn].remote).Served.Add(1)
	a.settle(buf, e) // the entry is free from here: e is not read again
	a.stats.Answered.Add(1)
	if p.Move(buf, a.id, pool.OwnerDaemon) {
		a.cfg.Deliver(buf)
	}
}

// failTaken answers a taken entry's request with status and msg.
func (a *App) failTaken(buf uint32, e *entry, status uint16, msg string) {
	a.settle(buf, e)
	a.stats.Failed.Add(1)
	a.giveBack(buf, status, msg)
}

// giveBack hands buf (held by the endpoint) to the gateway, answered with
// status and msg.
func (a *App) giveBack(buf uint32, status uint16, msg string) {
	if a.pool.Move(buf, a.id, pool.OwnerDaemon) {
		a.cfg.Fail(buf, status, msg)
	}
}

// redispatch hands buf (held by the endpoint) back to the gateway, which
// sends it to step hop once an instance (here, or a link to another node)
// can take it, or answers it at its deadline.
func (a *App) redispatch(buf uint32, fn uint16, hop uint8) {
	if a.pool.Move(buf, a.id, pool.OwnerDaemon) {
		a.cfg.Redispatch(buf, fn, hop)
	}
}

// failLink answers every request waiting on link l with 502 and msg; it
// returns how many. The link's writer is gone.
func (a *App) failLink(l *link, msg string) int {
	a.fill.RLock()
	defer a.fill.RUnlock()
	if a.closed {
		return 0
	}
	k := 0
	for i := range a.out {
		e := &a.out[i]
		w := e.word.Load()
		if (w&7 != stQueued && w&7 != stSent) || e.link != l {
			continue
		}
		if e.word.CompareAndSwap(w, w&^7|stTaken) {
			a.failTaken(uint32(i), e, 502, msg)
			k++
		}
	}
	return k
}

// Sweep gives back the requests whose reply has not come within grace
// after their deadline (the gateway answered them 504 then): a node that
// holds on to them without breaking the link. The node calls it now and
// then.
func (a *App) Sweep(grace time.Duration) int {
	a.fill.RLock()
	defer a.fill.RUnlock()
	if a.closed {
		return 0
	}
	now := mono.Now()
	k := 0
	for i := range a.out {
		e := &a.out[i]
		w := e.word.Load()
		if w&7 != stSent || e.deadline == 0 || now < e.deadline+int64(grace) {
			continue
		}
		if e.word.CompareAndSwap(w, w&^7|stTaken) {
			a.failTaken(uint32(i), e, 504, "spry: node "+e.link.peer+" did not answer in time")
			k++
		}
	}
	return k
}

// resolve finds chain (by name) and checks that its step hop runs
// function fn (a call, hop pool.CallNode: that the app has fn; a join's
// inputs: that hop is a join); it returns fn's index.
func (a *App) resolve(chain, fn []byte, hop uint8, g *graphPart) (*gateway.Chain, uint16, string) {
	differs := func(what string) string {
		return "app " + a.name + " on node " + a.hub.cfg.Name + " differs: " + what
	}
	for i, c := range a.chains {
		if string(c) != string(chain) {
			continue
		}
		ch := a.cfg.Chain(i)
		if ch == nil {
			break
		}
		if hop == pool.CallNode {
			for f := range a.fns {
				if string(a.fns[f].name) == string(fn) {
					return ch, uint16(f), ""
				}
			}
			return nil, 0, differs("it has no function " + string(fn))
		}
		v, ok := a.pool.NodeAt(uint16(i), int(hop))
		if !ok || int(v.Fn()) >= len(a.fns) || string(a.fns[v.Fn()].name) != string(fn) {
			return nil, 0, differs("its chain " + string(chain) + " has no step " + string(fn) + " there")
		}
		if g != nil && g.width > 0 && !v.IsJoin() {
			return nil, 0, differs("step " + string(fn) + " of its chain " + string(chain) + " is no join")
		}
		return ch, v.Fn(), ""
	}
	return nil, 0, "app " + a.name + " on node " + a.hub.cfg.Name + " has no chain " + string(chain)
}

// localLoad returns what waits at and runs in function fn's ready
// instances here (not the remote slot), and how many are ready.
func (a *App) localLoad(fn int) (waiting uint32, ready uint16) {
	p := a.pool
	base, n := p.FunctionSlots(uint32(fn))
	for s := base; s < base+n; s++ {
		if p.SlotState(s) != pool.SlotReady || p.SlotID(s) == a.id {
			continue
		}
		st := p.Stats(s)
		waiting += uint32(max(st.Queue.Load(), 0) + max(st.InFlight.Load(), 0))
		ready++
	}
	return waiting, ready
}

// Close unregisters the app: no request of another node reaches it from
// now on. Its requests still out at other nodes are answered 502; it
// returns once no link reads or writes its pool. The app's endpoint must
// be closed (Run returned) first.
func (a *App) Close() {
	a.hub.unregister(a)
	for i := range a.out {
		e := &a.out[i]
		w := e.word.Load()
		if w&7 == stSent && e.word.CompareAndSwap(w, w&^7|stTaken) {
			a.failTaken(uint32(i), e, 502, "spry: app "+a.name+" stopped on this node while another ran the request")
		}
	}
	for a.queued.Load() > 0 {
		time.Sleep(time.Millisecond) // links write or drop what they queued
	}
	a.fill.Lock()
	a.closed = true
	a.fill.Unlock()
	for i := range a.out {
		e := &a.out[i]
		w := e.word.Load()
		if w&7 == stSent || w&7 == stQueued {
			if e.word.CompareAndSwap(w, w&^7|stTaken) {
				a.failTaken(uint32(i), e, 502, "spry: app "+a.name+" stopped on this node while another ran the request")
			}
		}
	}
}
