package pool

import (
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/internal/hist"
)

// Slot states, in the order a slot goes through them.
const (
	SlotEmpty    uint32 = iota // no instance
	SlotStarting               // process started, endpoint exists, not yet announced
	SlotReady                  // announced: receives new requests
	SlotDraining               // finishes what it holds, receives nothing new
	SlotDead                   // exited; its buffers are being reclaimed
)

// SlotStateName names a slot state for humans.
func SlotStateName(s uint32) string {
	switch s {
	case SlotEmpty:
		return "empty"
	case SlotStarting:
		return "starting"
	case SlotReady:
		return "ready"
	case SlotDraining:
		return "draining"
	case SlotDead:
		return "dead"
	}
	return "unknown"
}

// The routing region is written by the daemon and mapped read-only into
// instances. Values that change while instances run (gateway, slot id,
// state, capacity, high-water marks) are atomics; the rest is written
// before any instance starts.
type routeHeader struct {
	gateway atomic.Uint32 // endpoint id of the app's gateway
	epoch   atomic.Uint32 // bumped on every routing change
	_       [56]byte
}

type fnEntry struct {
	base    uint32        // first slot of the function
	max     uint32        // slots reserved for it
	hwm     atomic.Uint32 // 1 + highest slot offset ever given an instance
	nameLen uint8
	_       [3]byte
	name    [MaxName]byte // for calls by name (sdk Request.Call)
}

// chainEntry is one chain's graph: nodes[0] is where requests enter; a
// line of n steps is nodes 0..n-1, each with the next as its successor.
type chainEntry struct {
	nnodes uint32
	_      uint32
	nodes  [MaxNodes]nodeEntry
}

// nodeEntry is one step of a chain's graph (see Node).
type nodeEntry struct {
	fn      uint16
	flags   uint8 // node*
	nnext   uint8
	join    uint8 // a fan-out: the node its branches meet at
	jord    uint8 // a join: its ordinal among the chain's joins
	quorum  uint16
	waitMs  uint32
	nameLen uint8
	_       [3]byte
	next    [MaxNext]uint8
	name    [MaxName]byte
}

const (
	nodeChoose = 1 << iota // the successors are alternatives: one runs
	nodeJoin               // the node joins the branches of a fan-out
)

// NoNode is "no node" wherever a node index is optional.
const NoNode = 0xff

// Node describes one step of a chain's graph, as the daemon writes it
// (SetGraph) and instances and the gateway read it (NodeAt).
type Node struct {
	Name string // the step's name (res.Next names it), at most MaxName bytes
	Fn   uint16 // the function it runs
	// Next are the successors (node indexes). None: the chain ends here
	// (the output is the answer). Several: a fan-out to all of them at
	// once, sharing the output, unless Choose.
	Next []uint8
	// Choose: the successors are alternatives; the handler picks one
	// (res.Next), by default the first.
	Choose bool
	// JoinAt is, for a fan-out, the join node its branches meet at.
	JoinAt uint8
	// IsJoin: the node joins the branches of a fan-out; Ordinal numbers
	// the chain's joins (0..MaxJoins-1); it runs once Quorum branches
	// succeeded (0: all of them), or all ended, or Wait passed since the
	// fan-out (0: no wait; the chain's deadline bounds it).
	IsJoin  bool
	Ordinal uint8
	Quorum  uint16
	Wait    time.Duration
}

type slotInfo struct {
	// id holds the instance id (bits 0..15; 0 while empty) and the
	// endpoint its descriptors go to (bits 16..31; 0: the instance's
	// own). An instance in a sandbox host shares the host's endpoint:
	// the buffer's transit names the instance, the descriptor the host.
	id       atomic.Uint32
	state    atomic.Uint32 // Slot*
	fn       atomic.Uint32 // function index
	capacity atomic.Uint32 // relative capacity for load balancing (>= 1)
}

// SlotStats are one instance slot's counters, in the writable part of the
// pool: the data path keeps them, the daemon reads them (for the control
// plane, /metrics and status). Queue is written by senders and sits on its
// own cache line; the rest is written by the instance itself.
type SlotStats struct {
	Queue atomic.Int32 // descriptors sent to the slot and not yet started
	_     [4]byte
	// Demand is the instances of another function of the app that a
	// builtin keeping state asks the control plane for (the FL top: the
	// leaf aggregators its jobs' load wants): the function's index + 1 in
	// the high 32 bits, the count in the low ones; 0: none. Like Keeps,
	// the node believes it only of builtins that keep state.
	Demand atomic.Uint64
	_      [48]byte

	InFlight atomic.Int32 // handlers running
	// Keeps counts what the instance keeps between requests (state the
	// node must not take for lost: a stateful builtin's buffers, such as
	// the FL top's jobs). While it is above 0 the instance is not idle
	// (no scale to zero), its buffers are its own, and a drain does not
	// wait for it to give them up (they go with it).
	Keeps     atomic.Int32
	Arrivals  atomic.Uint64 // descriptors accepted
	Served    atomic.Uint64 // handlers finished
	Errors    atomic.Uint64 // handlers that failed with a server error: an error without a 4xx status, a panic, a 5xx
	BusyNanos atomic.Uint64 // total handler run time
	BusySince atomic.Int64  // mono ns of the last start or finish while busy (hung detection)
	Stale     atomic.Uint64 // stale or foreign descriptors dropped
	// ClientErrors counts handlers that answered the client with a 4xx
	// (an sdk.Errorf(4xx) or SetStatus(4xx)): the request's fault, not
	// the function's.
	ClientErrors atomic.Uint64

	// Latency is the step latency of the requests the slot finished: from
	// the moment the descriptor was sent to it (the previous step's end,
	// or the gateway's receipt) to the handler's end, queueing included.
	// The SLO of a function is a bound on its percentiles.
	Latency hist.H

	_ [StatsSize - 128 - unsafe.Sizeof(hist.H{})]byte
}

var _ [StatsSize - unsafe.Sizeof(SlotStats{})]byte // SlotStats fills its slot exactly
var _ [unsafe.Sizeof(SlotStats{}) - StatsSize]byte

// Gateway returns the endpoint id of the app's gateway.
func (p *Pool) Gateway() uint16 { return uint16(p.route.gateway.Load()) }

// SetGateway records the app's gateway endpoint (daemon only).
func (p *Pool) SetGateway(id uint16) {
	p.route.gateway.Store(uint32(id))
	p.changed()
}

// changed bumps the routing epoch and, in the daemon, publishes its own
// copy of the routing table to the instances.
func (p *Pool) changed() {
	p.route.epoch.Add(1)
	if p.daemon {
		p.RepairRoute()
	}
}

// RepairRoute writes the daemon's routing table over the one instances
// read (daemon only; a no-op elsewhere). Every routing change does it; the
// daemon's audit does it too, undoing whatever an instance scribbled there.
func (p *Pool) RepairRoute() {
	if !p.daemon {
		return
	}
	p.routeMu.Lock()
	defer p.routeMu.Unlock()
	// The header's fixed part too: an instance that starts checks it.
	h, r := p.h, p.r
	h.magic, h.version, h.layout = Magic, Version, p.l
	h.route, h.stats, h.ring, h.hdr, h.arena, h.total, h.stride = r.route, r.stats, r.ring, r.hdr, r.arena, r.total, r.stride
	h.extmap, h.ext = r.extmap, r.ext
	p.shRoute.gateway.Store(p.route.gateway.Load())
	p.shRoute.epoch.Store(p.route.epoch.Load())
	for i := range p.fns {
		f, g := &p.fns[i], &p.shFns[i]
		g.base, g.max = f.base, f.max
		g.hwm.Store(f.hwm.Load())
	}
	for i := range p.chains {
		p.shChains[i] = p.chains[i]
	}
	for i := range p.fns {
		f, g := &p.fns[i], &p.shFns[i]
		g.nameLen, g.name = f.nameLen, f.name
	}
	for i := range p.slots {
		s, g := &p.slots[i], &p.shSlots[i]
		g.fn.Store(s.fn.Load())
		g.capacity.Store(s.capacity.Load())
		g.id.Store(s.id.Load())
		g.state.Store(s.state.Load())
	}
}

// Epoch returns a counter that changes on every routing change.
func (p *Pool) Epoch() uint32 { return p.route.epoch.Load() }

// SetFunction reserves slots [base, base+max) for function fn (daemon only,
// before instances start).
func (p *Pool) SetFunction(fn, base, max uint32) error {
	if fn >= p.l.Functions || max == 0 || base+max > p.l.Slots || base+max < base {
		return ErrRange
	}
	f := &p.fns[fn]
	f.base, f.max = base, max
	for s := base; s < base+max; s++ {
		p.slots[s].fn.Store(fn)
	}
	p.changed()
	return nil
}

// FunctionSlots returns the slots reserved for fn.
func (p *Pool) FunctionSlots(fn uint32) (base, max uint32) {
	if fn >= p.l.Functions {
		return 0, 0
	}
	return p.fns[fn].base, p.fns[fn].max
}

// SetFunctionName records function fn's name, for calls by name (daemon
// only, before instances start). Names longer than MaxName are refused.
func (p *Pool) SetFunctionName(fn uint32, name string) error {
	if fn >= p.l.Functions || len(name) > MaxName {
		return ErrRange
	}
	f := &p.fns[fn]
	f.nameLen = uint8(copy(f.name[:], name))
	p.changed()
	return nil
}

// FunctionByName returns the index of the function called name.
func (p *Pool) FunctionByName(name string) (uint16, bool) {
	for i := range p.fns {
		f := &p.fns[i]
		if n := min(int(f.nameLen), MaxName); n == len(name) && string(f.name[:n]) == name {
			return uint16(i), true
		}
	}
	return 0, false
}

// FunctionName returns function fn's name (a view of the routing table).
func (p *Pool) FunctionName(fn uint16) []byte {
	if uint32(fn) >= p.l.Functions {
		return nil
	}
	f := &p.fns[fn]
	return f.name[:min(int(f.nameLen), MaxName)]
}

// SetChain records chain c as a line of steps (daemon only, before
// instances start).
func (p *Pool) SetChain(c uint32, steps []uint16) error {
	if len(steps) == 0 || len(steps) > MaxNodes {
		return ErrRange
	}
	nodes := make([]Node, len(steps))
	for i, fn := range steps {
		nodes[i] = Node{Fn: fn, JoinAt: NoNode}
		if i+1 < len(steps) {
			nodes[i].Next = []uint8{uint8(i + 1)}
		}
	}
	return p.SetGraph(c, nodes)
}

// SetGraph records chain c's graph (daemon only, before instances start).
// It checks what an instance indexes with: functions, successors, sizes;
// the shape (no cycles, fan-outs that meet at their join) is config's to
// check.
func (p *Pool) SetGraph(c uint32, nodes []Node) error {
	if c >= p.l.Chains || len(nodes) == 0 || len(nodes) > MaxNodes {
		return ErrRange
	}
	var e chainEntry
	for i, n := range nodes {
		if uint32(n.Fn) >= p.l.Functions || len(n.Next) > MaxNext || len(n.Name) > MaxName ||
			(n.IsJoin && n.Ordinal >= MaxJoins) || n.Wait < 0 || n.Wait > time.Duration(1<<32-1)*time.Millisecond {
			return ErrRange
		}
		x := &e.nodes[i]
		x.fn, x.nnext, x.join, x.jord = n.Fn, uint8(len(n.Next)), NoNode, NoNode
		for k, s := range n.Next {
			if int(s) >= len(nodes) {
				return ErrRange
			}
			x.next[k] = s
		}
		if n.Choose {
			x.flags |= nodeChoose
		} else if len(n.Next) > 1 {
			if int(n.JoinAt) >= len(nodes) {
				return ErrRange
			}
			x.join = n.JoinAt
		}
		if n.IsJoin {
			x.flags |= nodeJoin
			x.jord, x.quorum = n.Ordinal, n.Quorum
			x.waitMs = uint32((n.Wait + time.Millisecond - 1) / time.Millisecond)
		}
		x.nameLen = uint8(copy(x.name[:], n.Name))
	}
	e.nnodes = uint32(len(nodes))
	p.chains[c] = e
	p.changed()
	return nil
}

// NodeView is a read-only view of one node of a chain's graph, with every
// index checked against the layout (an instance reads the table from
// shared memory).
type NodeView struct {
	e *nodeEntry
	n uint8 // nodes in the chain
}

// NodeAt returns node n of chain c, and whether there is one.
func (p *Pool) NodeAt(c uint16, n int) (NodeView, bool) {
	if uint32(c) >= p.l.Chains {
		return NodeView{}, false
	}
	ce := &p.chains[c]
	nn := min(ce.nnodes, MaxNodes)
	if n < 0 || n >= int(nn) {
		return NodeView{}, false
	}
	return NodeView{e: &ce.nodes[n], n: uint8(nn)}, true
}

// Fn returns the node's function.
func (v NodeView) Fn() uint16 { return v.e.fn }

// NumNext returns how many successors the node has.
func (v NodeView) NumNext() int { return int(min(v.e.nnext, MaxNext)) }

// Next returns successor k (a node index below the chain's count; NoNode
// for a bad table).
func (v NodeView) Next(k int) uint8 {
	if k < 0 || k >= v.NumNext() || v.e.next[k] >= v.n {
		return NoNode
	}
	return v.e.next[k]
}

// Choose reports whether the successors are alternatives.
func (v NodeView) Choose() bool { return v.e.flags&nodeChoose != 0 }

// FanOut reports whether the output goes to every successor at once.
func (v NodeView) FanOut() bool { return !v.Choose() && v.NumNext() > 1 }

// JoinAt returns, for a fan-out, the node its branches meet at.
func (v NodeView) JoinAt() uint8 {
	if v.e.join >= v.n {
		return NoNode
	}
	return v.e.join
}

// IsJoin reports whether the node joins a fan-out's branches.
func (v NodeView) IsJoin() bool { return v.e.flags&nodeJoin != 0 }

// Ordinal returns a join's ordinal among the chain's joins.
func (v NodeView) Ordinal() int { return int(min(v.e.jord, MaxJoins-1)) }

// Quorum returns a join's quorum (0: all).
func (v NodeView) Quorum() int { return int(v.e.quorum) }

// Wait returns a join's wait (0: none).
func (v NodeView) Wait() time.Duration { return time.Duration(v.e.waitMs) * time.Millisecond }

// Name returns the step's name (a view of the routing table).
func (v NodeView) Name() []byte { return v.e.name[:min(int(v.e.nameLen), MaxName)] }

// Succ returns the index k of the successor called name, or -1.
func (v NodeView) Succ(p *Pool, c uint16, name string) int {
	for k := range v.NumNext() {
		if s, ok := p.NodeAt(c, int(v.Next(k))); ok {
			if n := s.Name(); len(n) == len(name) && string(n) == name {
				return k
			}
		}
	}
	return -1
}

// Step returns the function that runs node hop of chain c, and whether
// there is such a node.
func (p *Pool) Step(c uint16, hop int) (fn uint16, ok bool) {
	v, ok := p.NodeAt(c, hop)
	if !ok {
		return 0, false
	}
	return v.Fn(), true
}

// Steps returns the number of nodes of chain c.
func (p *Pool) Steps(c uint16) int {
	if uint32(c) >= p.l.Chains {
		return 0
	}
	return int(min(p.chains[c].nnodes, MaxNodes))
}

// Slots returns the number of instance slots.
func (p *Pool) Slots() uint32 { return p.l.Slots }

// Stats returns slot s's counters.
func (p *Pool) Stats(s uint32) *SlotStats { return &p.stats[s] }

// SlotEndpoint returns the endpoint that receives slot s's descriptors:
// its instance's own, or its sandbox host's.
func (p *Pool) SlotEndpoint(s uint32) uint16 { return endpointOf(p.slots[s].id.Load()) }

func endpointOf(w uint32) uint16 {
	if ep := uint16(w >> 16); ep != 0 {
		return ep
	}
	return uint16(w)
}

// SlotID returns the instance id in slot s (0 when empty).
func (p *Pool) SlotID(s uint32) uint16 { return uint16(p.slots[s].id.Load()) }

// SlotState returns slot s's state.
func (p *Pool) SlotState(s uint32) uint32 { return p.slots[s].state.Load() }

// SlotFunction returns the function slot s belongs to.
func (p *Pool) SlotFunction(s uint32) uint32 { return p.slots[s].fn.Load() }

// SlotCapacity returns slot s's load-balancing capacity.
func (p *Pool) SlotCapacity(s uint32) uint32 { return p.slots[s].capacity.Load() }

// SetCapacity sets slot s's load-balancing capacity (daemon only).
func (p *Pool) SetCapacity(s, capacity uint32) {
	p.slots[s].capacity.Store(max(capacity, 1))
	if p.daemon {
		p.routeMu.Lock()
		p.shSlots[s].capacity.Store(max(capacity, 1))
		p.routeMu.Unlock()
	}
}

// StartSlot puts instance id into slot s in state SlotStarting, clearing its
// counters (daemon only). It is not yet a routing target.
func (p *Pool) StartSlot(s uint32, id uint16, capacity uint32) { p.StartHosted(s, id, 0, capacity) }

// StartHosted is StartSlot for an instance whose descriptors go to
// endpoint host, the sandbox host that runs it (0: its own endpoint).
func (p *Pool) StartHosted(s uint32, id, host uint16, capacity uint32) {
	si := &p.slots[s]
	st := &p.stats[s]
	st.Queue.Store(0)
	st.InFlight.Store(0)
	st.Keeps.Store(0)
	st.Demand.Store(0)
	st.BusySince.Store(0)
	si.capacity.Store(max(capacity, 1))
	si.id.Store(uint32(id) | uint32(host)<<16)
	si.state.Store(SlotStarting)
	if fn := si.fn.Load(); fn < uint32(len(p.fns)) {
		f := &p.fns[fn]
		if off := s - f.base + 1; off > f.hwm.Load() {
			f.hwm.Store(off)
		}
	}
	p.changed()
}

// SetSlotState moves slot s to state (daemon only). Setting SlotReady
// announces the instance: senders pick it from then on.
func (p *Pool) SetSlotState(s uint32, state uint32) {
	p.slots[s].state.Store(state)
	if state == SlotEmpty {
		p.slots[s].id.Store(0)
	}
	p.changed()
}

// Pick returns the ready slot of function fn with the least load per unit
// of capacity, R = (queued + in flight + 1) / capacity, and its instance id.
// Ties go to the first slot at or after start (callers rotate start to
// spread ties). ok is false when fn has no ready instance.
//
// Pick compares by cross-multiplication (no division, no floats) and
// allocates nothing.
func (p *Pool) Pick(fn uint16, start uint32) (slot uint32, id uint16, ok bool) {
	slot, id, _, ok = p.PickRouteExcept(fn, start, 0)
	return slot, id, ok
}

// PickRoute is Pick that also returns the endpoint to send the instance's
// descriptor to (see StartHosted): the instance's own, or its host's.
func (p *Pool) PickRoute(fn uint16, start uint32) (slot uint32, id, ep uint16, ok bool) {
	return p.PickRouteExcept(fn, start, 0)
}

// PickExcept is Pick among the instances other than endpoint except (0:
// none): a request a node took over from another must run on this node's
// own instances, not go on to a third through the endpoint that stands for
// the other nodes' instances (see internal/cluster/peer).
func (p *Pool) PickExcept(fn uint16, start uint32, except uint16) (slot uint32, id uint16, ok bool) {
	slot, id, _, ok = p.PickRouteExcept(fn, start, except)
	return slot, id, ok
}

// PickRouteExcept is PickRoute among the instances other than except.
func (p *Pool) PickRouteExcept(fn uint16, start uint32, except uint16) (slot uint32, id, ep uint16, ok bool) {
	if uint32(fn) >= p.l.Functions {
		return 0, 0, 0, false
	}
	f := &p.fns[fn]
	base, n := f.base, min(f.hwm.Load(), f.max)
	// In an instance the table is shared memory another instance may
	// have written: index only with values checked against the layout.
	if n == 0 || base >= p.l.Slots || n > p.l.Slots-base {
		return 0, 0, 0, false
	}
	var bestLoad, bestCap uint64
	for k := uint32(0); k < n; k++ {
		s := base + (start+k)%n
		si := &p.slots[s]
		if si.state.Load() != SlotReady {
			continue
		}
		st := &p.stats[s]
		load := uint64(max(st.Queue.Load(), 0)) + uint64(max(st.InFlight.Load(), 0)) + 1
		c := uint64(max(si.capacity.Load(), 1))
		if !ok || load*bestCap < bestLoad*c {
			w := si.id.Load()
			if uint16(w) == 0 || uint16(w) == except {
				continue
			}
			slot, id, ep, ok = s, uint16(w), endpointOf(w), true
			bestLoad, bestCap = load, c
		}
	}
	return slot, id, ep, ok
}

// DemandWord is a SlotStats.Demand: n instances of function fn.
func DemandWord(fn uint16, n int) uint64 {
	if n <= 0 {
		return 0
	}
	return (uint64(fn)+1)<<32 | uint64(min(n, 1<<31-1))
}

// DemandOf reads a SlotStats.Demand word: the function and the count, ok
// false for none.
func DemandOf(w uint64) (fn uint16, n int, ok bool) {
	f := w >> 32
	if f == 0 || f > 1<<16 {
		return 0, 0, false
	}
	return uint16(f - 1), int(uint32(w)), true
}
