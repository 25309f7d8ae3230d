package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spry-dev/spry/internal/auth"
	"github.com/spry-dev/spry/internal/builtin"
	"github.com/spry-dev/spry/internal/cluster/peer"
	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/control"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/gateway"
	"github.com/spry-dev/spry/internal/hist"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	rt "github.com/spry-dev/spry/internal/runtime"
	"github.com/spry-dev/spry/internal/transport"
)

// app is one running app: its pool, its transport, the gateway's side of
// it, and its functions' instances.
type app struct {
	n         *Node
	cfg       *config.App
	transport string
	pool      *pool.Pool
	poolFile  *os.File // a copy of the pool's fd, inherited by instances
	fab       transport.Fabric
	gwConn    transport.Conn
	gw        *gateway.App
	gwChains  []*gateway.Chain
	steps     [][]string            // each chain's step names, for activation records
	auth      map[int]*auth.Checker // by chain index, for chains with auth:
	dir       string                // the app's endpoint directory
	secrets   string                // the directory of its secrets ("" when none)
	sandbox   sandbox               // the sandbox host of its wasm: functions
	wasmCache string                // where its sandbox host keeps compiled modules
	appID     uint32                // tells it apart from every other app (and generation) of the node
	uid, gid  int                   // -1: the node's own
	lease     *uidLease
	fns       []*function
	gwDone    chan struct{}
	pollers   int
	// fingerprint identifies what the app runs (its config and its
	// programs): a reload replaces the app only when it changed.
	fingerprint string
	stopWatch   context.CancelFunc
	watching    sync.WaitGroup
	// look rings the watcher for what changes in the app without a
	// request: an instance gone, a stateful builtin's ask (lookSoon).
	look chan struct{}

	mu   sync.Mutex
	byID map[uint16]*instance // live instances by endpoint id

	// On a node of a cluster: the endpoint standing for the instances
	// other nodes run (remote.go).
	peer     *peer.App // guarded by remoteMu
	peerConn transport.Conn
	peerID   uint16
	peerDone chan struct{}
	remoteMu sync.Mutex
}

// function is one function of an app and its instance slots: as many as
// its scale.max, of which the first want run.
type function struct {
	a       *app
	cfg     *config.Function
	cmd     rt.Command // how its instances start
	wasm    string     // wasm: its module (staged)
	workDir string     // the instances' working directory
	base    uint32     // first pool slot
	insts   []*instance

	mu   sync.Mutex
	want int
	sc   *scaler // nil for a fixed count

	remote *remoteSlot // its slot for instances on other nodes (nil: not in a cluster)

	// keepsState is true for a builtin that keeps state between requests
	// (builtin.Function.Keeps): only its instances' SlotStats.Keeps is
	// honoured (see kept).
	keepsState bool

	asked atomic.Int64 // cluster mode: when a request last found no instance (Unix ns)
}

// setWant runs instances in slots [0, n) and drains the others. The
// outcome of each newly started slot's first start goes to first when not
// nil (one report per slot it starts).
func (f *function) setWant(n int, first func() chan<- error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n = min(max(n, 0), len(f.insts))
	f.want = n
	for i, in := range f.insts {
		if i < n {
			var ch chan<- error
			if first != nil && in.halt == nil {
				ch = first()
			}
			in.run(ch)
		} else {
			in.stop()
		}
	}
}

func (f *function) scaler() *scaler {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sc
}

// startCapacity is the load-balancing capacity a new instance of f starts
// with, until its control loop has measured it: the mean of its ready
// instances' capacities, as control.Capacities gives an instance not yet
// measured. Once a scaled function's loop has run, its instances'
// capacities are on control.CapacityScale; a new one started at its
// concurrency instead (1 against up to 1000) got next to no requests until
// the next control period, so a scale-up took a period longer to help.
// Functions without a control loop keep their concurrency for every
// instance.
func (f *function) startCapacity() uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.startCapacityLocked()
}

// startCapacityLocked is startCapacity with the function's mutex held.
func (f *function) startCapacityLocked() uint32 {
	if f.sc == nil {
		return uint32(f.cfg.Concurrency)
	}
	p := f.a.pool
	var sum, n uint64
	for _, in := range f.insts {
		if p.SlotState(in.slot) == pool.SlotReady {
			sum += uint64(p.SlotCapacity(in.slot))
			n++
		}
	}
	if n == 0 {
		return control.CapacityScale
	}
	return uint32(sum / n)
}

func (f *function) wanted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.want
}

// newApp creates app ac: its pool, transport, endpoint directory and
// gateway side, with no instance running yet. A reload that replaces app
// prev passes it: the new app takes over its uid (the same security
// domain), and the two run side by side until prev has drained.
func newApp(n *Node, ac *config.App, cmds map[*config.Function]rt.Command, prev *app) (a *app, err error) {
	a = &app{n: n, cfg: ac, uid: -1, gid: -1, byID: map[uint16]*instance{}, gwDone: make(chan struct{}), look: make(chan struct{}, 1)}
	a.sandbox.a = a
	made := a // the error returns below set a to nil
	defer func() {
		if err != nil {
			made.close()
		}
	}()
	a.fingerprint = fingerprint(ac, cmds)
	for _, cc := range ac.Chains {
		if cc.Auth == nil {
			continue
		}
		k, err := auth.New(*cc.Auth)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: chains.%s.auth: %w", ac.File, cc.Line, cc.Name, err)
		}
		if a.auth == nil {
			a.auth = map[int]*auth.Checker{}
		}
		a.auth[cc.Index] = k
	}
	if n.uids {
		if prev != nil && prev.lease != nil {
			a.lease = prev.lease.share()
		}
		if a.lease == nil {
			if a.lease, err = n.uidLeases.take(n.cfg.AppUIDs); err != nil {
				return nil, fmt.Errorf("app %s: %w", ac.Name, err)
			}
		}
		a.uid, a.gid = a.lease.uid, a.lease.uid
	}
	a.transport = ac.Transport
	if n.cfg.Transport != "" {
		a.transport = n.cfg.Transport
	}
	name, why, err := transport.Resolve(a.transport, n.canBPF)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", ac.Name, err)
	}
	for _, f := range ac.Functions {
		if err := f.CheckTransport(name); err != nil {
			return nil, fmt.Errorf("%s:%d: app %s: %w", ac.File, f.Line, ac.Name, err)
		}
	}
	if a.transport == config.TransportAuto || a.transport == "" {
		n.log.Info("transport auto: "+name, "app", ac.Name, "reason", why)
	}
	a.transport = name
	if name == config.TransportUDS {
		// A uds endpoint must be able to queue as many descriptors as
		// its app may have requests in flight, plus replies and control
		// messages.
		n.ensureUnixQueue(ac.Limits.Inflight + 64)
	}

	slots, rs := 0, n.remoteSlots()
	for _, f := range ac.Functions {
		slots += f.Scale.Max + rs
	}
	// Endpoints: every slot, the gateway (and the peer endpoint), and room
	// for a replacement that starts while its predecessor's endpoint is
	// still being removed.
	eps, ringBytes := transport.PoolLayout(name, uint32(slots+1+rs+slots/4+4))
	if p := transport.Pollers(name, slots+1); p > 0 {
		a.pollers = p
		n.pollers += p
		if n.pollers > runtime.NumCPU() {
			n.log.Warn("more busy-polling receivers than cores: they will share cores and slow each other down",
				"app", ac.Name, "transport", name, "pollers", n.pollers, "cores", runtime.NumCPU())
		}
	}
	l := pool.Layout{
		Buffers: ac.Pool.Buffers, BufferSize: ac.Pool.BufferSize,
		Functions: uint32(len(ac.Functions)), Chains: uint32(len(ac.Chains)), Slots: uint32(slots),
		Endpoints: eps, RingBytes: ringBytes, Chunks: ac.Pool.Chunks(),
	}
	if a.pool, err = pool.Create(ac.Name, l); err != nil {
		return nil, fmt.Errorf("app %s: %w", ac.Name, err)
	}
	if a.poolFile, err = dupFile(a.pool.Fd(), "spry-pool-"+ac.Name); err != nil {
		return nil, fmt.Errorf("app %s: %w", ac.Name, err)
	}

	// The routing table: each function's slots, each chain's steps.
	base := uint32(0)
	for _, fc := range ac.Functions {
		f := &function{a: a, cfg: fc, cmd: cmds[fc], base: base, workDir: fc.WorkDir,
			keepsState: fc.Kind == config.Builtin && builtin.Keeps(fc.Builtin)}
		if fc.Kind == config.Wasm {
			// No process: the sandbox host runs its module.
			f.wasm, f.cmd = f.cmd.Argv[0], rt.Command{}
		} else if a.uid >= 0 && !reachable(f.workDir, a.uid, a.gid) {
			if fc.WorkDirSet {
				return nil, fmt.Errorf("%s:%d: functions.%s.workDir: %s is not reachable by the app's uid %d (a directory on the way is closed to it)",
					ac.File, fc.Line, fc.Name, fc.WorkDir, a.uid)
			}
			n.log.Warn("the function's directory is closed to the app's uid: its instances start in / (make the directory reachable, or set workDir:)",
				"app", ac.Name, "function", fc.Name, "dir", fc.WorkDir, "uid", a.uid)
			f.workDir = "/"
		}
		if err := a.pool.SetFunction(uint32(fc.Index), base, uint32(fc.Scale.Max+rs)); err != nil {
			return nil, fmt.Errorf("app %s: function %s: %w", ac.Name, fc.Name, err)
		}
		if err := a.pool.SetFunctionName(uint32(fc.Index), fc.Name); err != nil {
			return nil, fmt.Errorf("app %s: function %s: %w", ac.Name, fc.Name, err)
		}
		for k := range fc.Scale.Max {
			f.insts = append(f.insts, &instance{f: f, slot: base + uint32(k), state: "stopped"})
		}
		if rs > 0 {
			f.remote = &remoteSlot{slot: base + uint32(fc.Scale.Max)}
		}
		base += uint32(fc.Scale.Max + rs)
		a.fns = append(a.fns, f)
	}
	for _, cc := range ac.Chains {
		if err := a.pool.SetGraph(uint32(cc.Index), graphOf(cc)); err != nil {
			return nil, fmt.Errorf("app %s: chain %s: %w", ac.Name, cc.Name, err)
		}
	}

	// The app's endpoint directory: reachable by its instances only.
	n.appIDs++
	appID := n.appIDs
	a.appID = appID
	a.dir = filepath.Join(n.runDir, "apps", ac.Name)
	if prev != nil {
		a.dir += "." + strconv.Itoa(int(appID)) // beside prev's, which is still in use
	}
	if err := os.Mkdir(filepath.Dir(a.dir), 0o755); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("app %s: %w", ac.Name, err)
	}
	os.Chmod(filepath.Dir(a.dir), 0o755) // whatever the umask: every app's uid passes through
	if err := os.Mkdir(a.dir, 0o700); err != nil {
		return nil, fmt.Errorf("app %s: %w", ac.Name, err)
	}
	if a.uid >= 0 {
		if err := os.Chown(a.dir, a.uid, a.gid); err != nil {
			return nil, fmt.Errorf("app %s: %w", ac.Name, err)
		}
	}
	if err := a.writeSecrets(appID); err != nil {
		return nil, fmt.Errorf("app %s: secrets: %w", ac.Name, err)
	}
	if err := a.makeWasmCache(); err != nil {
		return nil, fmt.Errorf("app %s: %w", ac.Name, err)
	}
	o := transport.Options{App: ac.Name, Dir: a.dir, UID: a.uid, GID: a.gid, Pool: a.pool, AppID: appID}
	if name == config.TransportSKMsg {
		o.BPF = n.bpf
	}
	if a.fab, err = transport.New(a.transport, o); err != nil {
		return nil, fmt.Errorf("app %s: %w", ac.Name, err)
	}
	gwID, err := n.ids.alloc()
	if err != nil {
		return nil, err
	}
	if a.gwConn, err = a.fab.Open(gwID); err != nil {
		n.ids.free(gwID)
		return nil, fmt.Errorf("app %s: gateway endpoint: %w", ac.Name, err)
	}
	a.gw, err = gateway.NewApp(gateway.AppConfig{
		Name: ac.Name, Pool: a.pool, Conn: a.gwConn, Inflight: ac.Limits.Inflight, MaxBody: ac.Limits.MaxBody, Control: a.control,
		NoInstance: a.noInstance,
	})
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(a.gwDone)
		if err := a.gw.Run(); err != nil {
			n.log.Error("gateway receive loop stopped", "app", ac.Name, "err", err)
		}
	}()
	n.log.Info("app ready", "app", ac.Name, "transport", a.transport, "buffers", l.Buffers,
		"buffer_size", l.BufferSize, "pool_bytes", l.Size(), "uid", a.uid)
	return a, nil
}

// graphOf is chain cc's graph as the routing table holds it.
func graphOf(cc *config.Chain) []pool.Node {
	nodes := make([]pool.Node, len(cc.Graph))
	for i, st := range cc.Graph {
		n := pool.Node{Name: st.Name, Fn: uint16(st.Fn), Choose: st.Choose, JoinAt: pool.NoNode}
		for _, j := range st.Next {
			n.Next = append(n.Next, uint8(j))
		}
		if st.JoinAt >= 0 {
			n.JoinAt = uint8(st.JoinAt)
		}
		if j := st.Join; j != nil {
			n.IsJoin, n.Ordinal, n.Quorum, n.Wait = true, uint8(j.Ordinal), uint16(j.Quorum), j.Wait
		}
		nodes[i] = n
	}
	return nodes
}

func dupFile(fd int, name string) (*os.File, error) {
	nfd, err := dupCloexec(fd)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// chains returns the gateway's view of the app's chains, made once: an
// app a reload keeps keeps its chains' counters.
func (a *app) chains() []*gateway.Chain {
	if a.gwChains != nil {
		return a.gwChains
	}
	var out []*gateway.Chain
	for _, cc := range a.cfg.Chains {
		first := a.cfg.Functions[cc.Steps[0]]
		ch := &gateway.Chain{
			Name: cc.Name, Route: cc.Route, App: a.gw, Index: uint16(cc.Index),
			First: uint16(first.Index), FirstName: first.Name,
			Methods: cc.Methods, Headers: cc.Headers, Timeout: cc.Timeout, Auth: a.auth[cc.Index],
		}
		if cc.Record != config.RecordNone {
			ch.Recorder, ch.RecordAll = a.n.record(a.cfg.Name, a.stepNames(cc.Name)), cc.Record == config.RecordAll
		}
		out = append(out, ch)
	}
	a.gwChains = out
	a.steps = make([][]string, len(a.cfg.Chains))
	for i, cc := range a.cfg.Chains {
		a.steps[i] = a.stepNames(cc.Name)
	}
	return out
}

// control handles a control descriptor from an instance (on the gateway's
// receive thread).
func (a *app) control(d desc.Desc) {
	a.mu.Lock()
	in := a.byID[d.Src]
	a.mu.Unlock()
	if in == nil {
		return
	}
	switch d.Buf {
	case desc.CtlReady:
		in.announce(d.Src)
	case desc.CtlLook:
		// Only a builtin whose asks are believed may ring (any
		// instance can send the code).
		if in.f.keepsState {
			a.lookSoon()
		}
	}
}

// lookSoon has the watcher look at the app now (decide, sweep), however
// long it meant to sleep: something changed that no request brings, a
// stateful builtin's ask (desc.CtlLook: the FL top's job ended at its ttl,
// or a job was made) or an instance gone.
func (a *app) lookSoon() {
	select {
	case a.look <- struct{}{}:
	default:
	}
}

// noInstance is told that a request waits for function fn, which has no
// ready instance: a function scaled to zero gets one (the cold start).
func (a *app) noInstance(fn uint16) {
	if int(fn) >= len(a.fns) {
		return
	}
	f := a.fns[fn]
	if a.n.cfg.Cluster {
		// The cluster controller starts instances: tell it that requests
		// wait here, at once (the agent's wait hook) and in the next
		// heartbeat.
		f.asked.Store(time.Now().UnixNano())
		if w := a.n.onWait.Load(); w != nil {
			(*w)(a.cfg.Name, f.cfg.Name)
		}
		return
	}
	if f.scaler() != nil && f.cfg.Scale.Min == 0 && f.wanted() == 0 {
		f.setWant(1, nil)
		// Not on the cold start's path: a log line costs tens of
		// microseconds, a wasm instance's whole start a few hundred.
		go a.n.log.Info("cold start", "app", a.cfg.Name, "function", f.cfg.Name)
	}
}

// reclaim takes back every buffer endpoint id (gone) held or had in
// transit, and salvages their requests (gateway.App.Salvage: each goes on,
// or is answered; msg is the 502's message for one whose handler was
// running). It returns how many it took.
func (a *app) reclaim(id uint16, msg string) int {
	var bufs []uint32
	k := a.pool.Reclaim(id, func(buf uint32) { bufs = append(bufs, buf) })
	a.gw.Salvage(bufs, msg)
	return k
}

func (a *app) register(id uint16, in *instance) {
	a.mu.Lock()
	a.byID[id] = in
	a.mu.Unlock()
}

func (a *app) unregister(id uint16) {
	a.mu.Lock()
	delete(a.byID, id)
	a.mu.Unlock()
}

// live reports whether holder id may hold buffers: a live endpoint, the
// daemon, or the pool's own holders (shared buffers, joins' inputs, whose
// lifetimes their readers and lists decide).
func (a *app) live(id uint16) bool {
	if id != 0 && id == a.peerID {
		return true // the endpoint standing for other nodes' instances
	}
	switch id {
	case a.gw.ID(), pool.OwnerDaemon, pool.OwnerFree, pool.OwnerShared, pool.OwnerJoined:
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byID[id] != nil
}

// watch looks after the app's instances until ctx ends: every tick it
// kills instances whose handler has run past the function's timeout (hung:
// the supervisor restarts them and their requests are answered), samples
// the functions' load, and once per control period lets each scaled
// function's autoscaler decide its instance count. Now and then it takes
// back buffers held by endpoints that no longer exist (a descriptor a
// transport lost with its dead destination).
//
// An idle app costs no CPU: once nothing has been in flight or arrived
// for a while (quiet), the watcher ticks only once per control period,
// while an autoscaler may still scale a function down (its keep-alive
// runs out on time), and once every function is at the count idleness
// leaves it at (settled), not at all (a backstop every settledPeriod):
// the next request wakes it at once (gateway.App.WakeOnAdmit), back to
// its tick, and so do an instance's exit and a stateful builtin's new ask
// (lookSoon).
func (a *app) watch(ctx context.Context) {
	t := time.NewTimer(watchTick)
	defer t.Stop()
	wake := make(chan struct{}, 1)
	alarm := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	sw := &sweeper{suspects: map[uint16]int{}, stuck: map[uint32]uint64{}, idle: map[uint32]uint64{}}
	decided, swept := mono.Now(), mono.Now() // the last decisions and sweep
	var arrivals uint64                      // over every slot, at the last tick
	quiet := 0                               // ticks in a row the app was quiet
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
			// A request after a quiet spell: the next decision a whole
			// period on, as at a start. One now would see the period
			// before (nothing) and none of the request's arrival, and
			// could scale to zero the instance it wakes. The sweep too:
			// its repair holds the gateway's table (Quiesce) between
			// the requests that follow this one.
			quiet, decided, swept = 0, mono.Now(), mono.Now()
		case <-a.look:
			// Back to the busy pace until the app is quiet again: two
			// sweeps see a gone instance's buffers, and a decision sees
			// the new ask (at once after a sleep: the last one is more
			// than a period old; else at the period's end, so no
			// decision sees a short period).
			quiet = 0
		}
		now := mono.Now()
		for _, f := range a.fns {
			for _, in := range f.insts {
				st := a.pool.Stats(in.slot)
				if a.pool.SlotState(in.slot) == pool.SlotReady && st.InFlight.Load() > 0 &&
					now-st.BusySince.Load() > int64(f.cfg.Timeout+time.Second) {
					in.killHung(f.cfg.Timeout)
				}
			}
			if sc := f.scaler(); sc != nil {
				sc.sample()
			}
		}
		if now-decided >= int64(controlPeriod-watchTick/2) {
			decided = now
			for _, f := range a.fns {
				if sc := f.scaler(); sc != nil {
					sc.decide()
				}
			}
		}
		if now-swept >= int64(sweepEvery-watchTick/2) {
			swept = now
			a.sweep(sw)
		}
		next := watchTick
		if q := a.quiet(&arrivals); q {
			quiet++
		} else {
			quiet = 0
		}
		if quiet >= quietTicks {
			// Armed before the last look: a request admitted after it
			// wakes the watcher; one admitted before it is seen here.
			a.gw.WakeOnAdmit(alarm)
			if a.quiet(&arrivals) {
				next = controlPeriod
				if a.settled() {
					next = settledPeriod
				}
			}
		}
		t.Reset(next)
	}
}

// The watcher's pace (see watch).
const (
	watchTick  = 100 * time.Millisecond
	sweepEvery = 500 * time.Millisecond
	quietTicks = 15 // 1.5 s quiet: a decision and sweeps have seen it
	// settledPeriod: nothing changes in a settled app but by a request
	// (WakeOnAdmit), an instance's exit or a stateful builtin's ask
	// (lookSoon); the tick is only a backstop.
	settledPeriod = 5 * time.Minute
)

// quiet reports whether nothing happens in the app: no request in the
// gateway, none queued at or running in an instance, no instance starting
// or draining, and no arrival at any instance since the last look
// (*arrivals, updated).
func (a *app) quiet(arrivals *uint64) bool {
	q := a.gw.Inflight() == 0
	var sum uint64
	for _, f := range a.fns {
		for _, in := range f.insts {
			switch a.pool.SlotState(in.slot) {
			case pool.SlotStarting, pool.SlotDraining:
				q = false
			}
			st := a.pool.Stats(in.slot)
			if st.Queue.Load() != 0 || st.InFlight.Load() != 0 {
				q = false
			}
			sum += st.Arrivals.Load()
		}
	}
	if sum != *arrivals {
		*arrivals, q = sum, false
	}
	return q
}

// settled reports whether idleness changes nothing more in the app: every
// scaled function runs no more instances than it keeps when idle (its
// scale.min, what a stateful builtin asks for, its instances that keep
// state).
func (a *app) settled() bool {
	for _, f := range a.fns {
		sc := f.scaler()
		if sc == nil {
			continue
		}
		floor := f.cfg.Scale.Min
		if n, asked := sc.demand(); asked {
			floor = max(floor, n)
		}
		kept := 0
		for _, in := range f.insts {
			if a.pool.SlotState(in.slot) == pool.SlotReady && f.kept(a.pool.Stats(in.slot)) {
				kept++
			}
		}
		if f.wanted() > max(floor, kept) {
			return false
		}
	}
	return true
}

// sweeper is the state the watcher's sweeps keep between them.
type sweeper struct {
	suspects map[uint16]int    // endpoint → sweeps it was seen dead holding a buffer
	stuck    map[uint32]uint64 // buffer → ownership word seen in transit past its deadline
	lost     map[lostKey]bool  // what the last repair found lost (see repair)
	idle     map[uint32]uint64 // buffer → ownership word seen off the free list with nothing in flight
}

// stuckGrace is how long past its request's deadline a buffer may stay in
// transit before the sweep takes it back.
const stuckGrace = time.Second

// sweep takes back what the app's processes lost:
//   - buffers held by, or in transit from or to, an endpoint that has been
//     dead for two sweeps in a row (a descriptor a transport lost with its
//     dead destination; an instance that died before its supervisor
//     noticed);
//   - buffers in transit between live endpoints for longer than their
//     request's deadline plus stuckGrace, unchanged over two sweeps: a
//     descriptor lost or torn in a transport, or scribbled over by a
//     process of the app (the transfer never completes, and the word says
//     so; the receiver's Accept of a late descriptor then fails);
//   - with nothing in flight (gateway.App.Quiesce), every buffer belongs
//     on the free list: one seen off it with the same ownership word at two
//     such sweeps in a row (a process died between taking it and naming
//     itself holder; a word a process of the app scribbled on) is freed,
//     and a free list a process of the app broke is rebuilt; a request
//     answered at its deadline whose buffer never came back (gone with
//     such a word) gives its entry back after its functions' timeouts.
//
// It also writes the daemon's routing table over the instances' copy, and
// the endpoints' owners over the endpoint table (transport.Repairer).
func (a *app) sweep(sw *sweeper) {
	a.pool.RepairRoute()
	if r, ok := a.fab.(transport.Repairer); ok {
		r.Repair()
	}
	seen := map[uint16]bool{}
	now := mono.Now()
	for i := range a.pool.Buffers() {
		h := a.pool.Header(i)
		o := h.Own()
		if o.Holder == pool.OwnerFree {
			continue
		}
		if !a.live(o.Holder) {
			seen[o.Holder] = true
		}
		if o.Transit == 0 {
			delete(sw.stuck, i)
			continue
		}
		if !a.live(o.Transit) {
			seen[o.Transit] = true
			continue
		}
		if dl := h.Deadline(); dl == 0 || now < dl+int64(stuckGrace) {
			continue
		}
		w := uint64(o.Gen) | uint64(o.Holder)<<32 | uint64(o.Transit)<<48
		if prev, ok := sw.stuck[i]; !ok || prev != w {
			sw.stuck[i] = w
			continue
		}
		delete(sw.stuck, i)
		if a.pool.Seize(i, o) {
			a.n.log.Warn("took back a buffer stuck in transit", "app", a.cfg.Name, "from", o.Holder, "to", o.Transit)
			a.gw.Salvage([]uint32{i}, fmt.Sprintf("spry: app %s: request lost between endpoints %d and %d", a.cfg.Name, o.Holder, o.Transit))
		}
	}
	for o := range sw.suspects {
		if !seen[o] {
			delete(sw.suspects, o)
		}
	}
	for o := range seen {
		sw.suspects[o]++
		if sw.suspects[o] < 2 {
			continue
		}
		delete(sw.suspects, o)
		msg := fmt.Sprintf("spry: app %s: request lost with endpoint %d", a.cfg.Name, o)
		if k := a.reclaim(o, msg); k > 0 {
			a.n.log.Warn("reclaimed buffers of a vanished endpoint", "app", a.cfg.Name, "endpoint", o, "buffers", k)
		}
	}
	grace := 2 * time.Second
	for _, f := range a.fns {
		grace = max(grace, f.cfg.Timeout+2*time.Second)
	}
	if a.peer != nil {
		if k := a.peer.Sweep(2 * stuckGrace); k > 0 {
			a.n.log.Warn("gave up on requests another node kept past their deadline", "app", a.cfg.Name, "requests", k)
		}
	}
	if k := a.gw.Reap(grace); k > 0 {
		a.n.log.Warn("freed requests whose buffer never came back", "app", a.cfg.Name, "requests", k)
	}
	if a.pool.FreeBuffers() == int(a.pool.Buffers()) && a.pool.Audit() && a.pool.ExtentClaimed() == 0 {
		clear(sw.idle)
		sw.lost = nil
		return
	}
	a.gw.Quiesce(func() {
		// Every buffer off the list now, by its word; those seen so at the
		// last quiescent sweep too are lost. Not those a request that is
		// over may still have out for good reason: a fan-out's branch that
		// runs on after its join ran without it (a quorum, a wait, the
		// deadline), a call a handler did not wait for — held by an
		// instance that is running a handler — nor shared buffers and
		// joins' inputs, which their readers and lists account for (see
		// repair).
		broken := !a.pool.Audit()
		seen := map[uint32]uint64{}
		word := func(i uint32) uint64 {
			o := a.pool.Header(i).Own()
			return uint64(o.Gen) | uint64(o.Holder)<<32 | uint64(o.Transit)<<48
		}
		for i := range a.pool.Buffers() {
			switch o := a.pool.Header(i).Own(); {
			case o.Holder == pool.OwnerFree, ownedByPool(o):
			case o.Transit == 0 && a.busy(o.Holder):
			default:
				seen[i] = word(i)
			}
		}
		for _, i := range a.pool.Orphans(func(uint16) bool { return true }) {
			seen[i] = word(i) // popped and never named holder
		}
		lost := map[uint32]bool{}
		for i, w := range seen {
			if prev, ok := sw.idle[i]; ok && prev == w {
				lost[i] = true
			}
		}
		sw.idle = seen
		if broken || len(lost) > 0 {
			n := a.pool.Rebuild(func(i uint32, o pool.Own) bool {
				return !broken && !lost[i] || ownedByPool(o)
			})
			clear(sw.idle)
			a.n.log.Warn("rebuilt the pool's free list", "app", a.cfg.Name, "free", n, "buffers", a.pool.Buffers(), "list_broken", broken, "lost", len(lost))
		}
		a.repair(sw)
	})
}

// ownedByPool reports whether o is the word of a shared buffer or a join's
// input, which the pool's own bookkeeping accounts for (see repair). Such
// a buffer is never in transit: one that says so is a word a process of
// the app scribbled on, lost like any other.
func ownedByPool(o pool.Own) bool {
	return (o.Holder == pool.OwnerShared || o.Holder == pool.OwnerJoined) && o.Transit == 0
}

// busy reports whether endpoint id is a live instance running a handler:
// a buffer it holds is its request's, even when the request is over.
func (a *app) busy(id uint16) bool {
	a.mu.Lock()
	in := a.byID[id]
	a.mu.Unlock()
	if in == nil {
		return false
	}
	st := a.pool.Stats(in.slot)
	return st.InFlight.Load() > 0 || in.f.kept(st)
}

// kept reports whether an instance of f with stats st keeps state between
// requests (pool.SlotStats.Keeps). Any instance can write its own stats
// slot: Keeps is honoured only for the builtins that keep state, so that
// no other process can shield the buffers it holds from the sweep, or
// keep itself from being scaled to zero, by writing it.
func (f *function) kept(st *pool.SlotStats) bool {
	return f.keepsState && st.Keeps.Load() > 0
}

// lostKey names something the pool's own bookkeeping lost: a shared buffer
// no token reads, a join's input no list holds, chunks of the extent
// region no buffer lists.
type lostKey struct {
	kind      byte
	idx, more uint32
}

// repair gives back, with nothing in flight, what a process that died in
// the middle of sharing, joining or claiming left behind (see
// pool.UnusedShares, UnlistedInputs, ExtentLeaks) — only what two sweeps
// in a row found, so that nothing a live process is about to record is
// taken from it.
func (a *app) repair(sw *sweeper) {
	p := a.pool
	found := map[lostKey]bool{}
	n := 0
	for _, r := range p.UnusedShares() {
		k := lostKey{'s', r.Idx, r.Gen}
		if found[k] = true; sw.lost[k] && p.FreeShared(r) {
			n++
		}
	}
	for _, r := range p.UnlistedInputs() {
		k := lostKey{'j', r.Idx, r.Gen}
		if found[k] = true; sw.lost[k] && p.FreeUnlisted(r) {
			n++
		}
	}
	for _, l := range p.ExtentLeaks() {
		k := lostKey{'x', l.First, l.Count}
		if found[k] = true; sw.lost[k] {
			p.ReleaseLeaks([]pool.Seg{l})
			n++
		}
	}
	if n > 0 {
		a.n.log.Warn("gave back what dead processes left in the pool", "app", a.cfg.Name, "items", n)
	}
	sw.lost = found
}

// close releases what the app holds. Instances must be stopped.
func (a *app) close() {
	a.sandbox.stop(a.n.cfg.StopGrace)
	a.leavePeers() // its requests out at other nodes are answered first
	if a.gw != nil {
		a.gw.Close() // its redispatches and partial writes end before the pool goes
	}
	if a.gwConn != nil {
		a.gwConn.Close()
		<-a.gwDone
		a.n.ids.free(a.gwConn.ID())
	}
	if a.fab != nil {
		a.fab.Close()
	}
	if a.poolFile != nil {
		a.poolFile.Close()
	}
	if a.pool != nil {
		a.pool.Close()
	}
	if a.dir != "" {
		os.RemoveAll(a.dir)
	}
	if a.secrets != "" {
		os.RemoveAll(a.secrets)
	}
	for _, f := range a.fns {
		for _, in := range f.insts {
			if in.group != nil {
				in.group.remove()
			}
		}
	}
	a.n.pollers -= a.pollers
	a.pollers = 0
	if a.lease != nil {
		a.lease.release()
		a.lease = nil
	}
}

// executables resolves how every function's instances start (see
// internal/runtime): builtins and adapters run the spry executable, go:
// functions are built (or found in the cache), python: functions run the
// interpreter on the Python SDK the node stages, exec: functions run as
// given. When instances run under other uids, the spry executable and the
// builds are staged in the node's bin directory, which those uids can
// reach.
func (n *Node) executables(ctx context.Context, apps []*config.App) (map[*config.Function]rt.Command, error) {
	out := map[*config.Function]rt.Command{}
	if n.staged == nil {
		n.staged = map[string]string{}
	}
	stage := func(path string) (string, error) {
		if n.binDir == "" {
			return path, nil
		}
		// A build's path names its content (the cache key), and the
		// spry executable does not change under a running node: a path
		// staged once is staged for good.
		if s, ok := n.staged[path]; ok {
			return s, nil
		}
		dst := filepath.Join(n.binDir, fmt.Sprintf("%d-%s", len(n.staged), filepath.Base(path)))
		if err := copyFile(path, dst, 0o755); err != nil {
			return "", fmt.Errorf("stage %s: %w", path, err)
		}
		n.staged[path] = dst
		return dst, nil
	}
	for _, a := range apps {
		for _, f := range a.Functions {
			p := rt.Prepared{Ready: n.cfg.ReadyTimeout}
			var err error
			switch f.Kind {
			case config.Builtin:
				if r := n.runner(); r != "" {
					p.Runner, err = stage(r)
				} else {
					p.Exe, err = stage(n.cfg.Exe)
				}
			case config.HTTP, config.Lambda:
				p.Exe, err = stage(n.cfg.Exe)
			case config.Go:
				began := time.Now()
				bin, berr := buildGo(ctx, filepath.Join(n.cfg.CacheDir, "build"), f.Go, a.Dir)
				if berr != nil {
					return nil, fmt.Errorf("%s:%d: functions.%s: %w", a.File, f.Line, f.Name, berr)
				}
				n.log.Info("function built", "app", a.Name, "function", f.Name, "package", f.Go, "took", time.Since(began).Round(time.Millisecond))
				p.Program, err = stage(bin)
			case config.Python:
				p.Python, p.PythonSDK, err = n.python(ctx, a, f)
			case config.Wasm:
				// The app's sandbox host (spry itself) runs the module.
				var mod string
				if mod, err = n.wasmModule(ctx, a, f); err == nil {
					if n.wasmExe, err = stage(n.cfg.Exe); err == nil {
						mod, err = stage(mod)
					}
				}
				if err != nil {
					return nil, err
				}
				out[f] = rt.Command{Argv: []string{mod}}
				continue
			}
			if err != nil {
				return nil, err
			}
			cmd, err := rt.Launch(f, a, p)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: functions.%s: %w", a.File, f.Line, f.Name, err)
			}
			out[f] = cmd
		}
	}
	return out, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// writeSecrets puts the app's secrets where its instances, and no other
// app's, can read them: one file per secret (mode 0400) in a directory
// (0500), both owned by the app's uid, under the node's runtime directory
// (a tmpfs in /run as root: never on disk). The parent directory lets
// every uid pass (0711) but list nothing.
func (a *app) writeSecrets(appID uint32) error {
	if len(a.cfg.Secrets) == 0 {
		return nil
	}
	parent := filepath.Join(a.n.runDir, "secrets")
	if err := os.Mkdir(parent, 0o711); err != nil && !os.IsExist(err) {
		return err
	}
	os.Chmod(parent, 0o711)
	dir := filepath.Join(parent, a.cfg.Name+"."+strconv.Itoa(int(appID)))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	a.secrets = dir
	for _, s := range a.cfg.Secrets {
		p := filepath.Join(dir, s.Name)
		if err := os.WriteFile(p, s.Value, 0o400); err != nil {
			return err
		}
		if a.uid >= 0 {
			if err := os.Chown(p, a.uid, a.gid); err != nil {
				return err
			}
		}
	}
	if a.uid >= 0 {
		if err := os.Chown(dir, a.uid, a.gid); err != nil {
			return err
		}
	}
	return os.Chmod(dir, 0o500)
}

// ErrNoFunction is returned by SetInstances for an app or function the
// node does not run.
var ErrNoFunction = errors.New("node: no such app or function")

// SetInstances runs k instances of an app's function on this node (at
// most its scale.max), starting or draining the difference: how a cluster
// agent applies the controller's assignment.
func (n *Node) SetInstances(appName, fn string, k int) error {
	for _, a := range n.serving() {
		if a.cfg.Name != appName {
			continue
		}
		for _, f := range a.fns {
			if f.cfg.Name == fn {
				if f.wanted() != k {
					n.log.Info("scale", "app", appName, "function", fn, "from", f.wanted(), "to", k, "reason", "cluster")
					f.setWant(k, nil)
				}
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s/%s", ErrNoFunction, appName, fn)
}

// FunctionCounters are one function's counters on this node, cumulative
// since the app started, and its gauges now: what a cluster agent's
// heartbeat carries.
type FunctionCounters struct {
	App, Function                  string
	Arrivals, Completions, Busy    uint64 // Busy in nanoseconds
	SLOMet                         uint64 // completions within the SLO (all of them for fixed functions)
	Queued, InFlight, Ready, Start int
}

// SetOnWait sets the function a node under a cluster controller calls
// when a request waits for a function with no instance here (the agent
// then asks the controller for one at once). It runs on the gateway's
// receive path: it must not block.
func (n *Node) SetOnWait(f func(app, fn string)) {
	if f == nil {
		n.onWait.Store(nil)
		return
	}
	n.onWait.Store(&f)
}

// Counters reads every function's counters from the pools.
func (n *Node) Counters() []FunctionCounters {
	var out []FunctionCounters
	for _, a := range n.serving() {
		p := a.pool
		for _, f := range a.fns {
			c := FunctionCounters{App: a.cfg.Name, Function: f.cfg.Name}
			var lat hist.Snapshot
			for _, in := range f.insts {
				st := p.Stats(in.slot)
				c.Arrivals += st.Arrivals.Load()
				c.Completions += st.Served.Load()
				c.Busy += st.BusyNanos.Load()
				lat = addSnapshots(lat, st.Latency.Snapshot())
				switch p.SlotState(in.slot) {
				case pool.SlotReady:
					c.Ready++
				case pool.SlotStarting:
					c.Start++
				}
			}
			o := f.scaler()
			if o != nil {
				now := o.now()
				c.Queued, c.InFlight = now.Queued, now.InFlight
			}
			// A request waiting for an instance asks again every 250 ms
			// (the gateway's askAgain): one asked within three of those
			// still waits. Longer, and a function scaled to zero after
			// such a request would still look asked for.
			if c.Ready+c.Start == 0 && time.Since(time.Unix(0, f.asked.Load())) < 750*time.Millisecond {
				c.Queued = max(c.Queued, 1) // requests wait for a first instance
			}
			c.SLOMet = c.Completions
			if f.cfg.Scale.Policy != config.PolicyFixed && lat.Count() > 0 {
				c.SLOMet = uint64(float64(c.Completions) * lat.Below(int64(f.cfg.Scale.SLO)))
			}
			out = append(out, c)
		}
	}
	return out
}
