package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/graph"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// Host is a sandbox host: one app's wasm instances in one process, behind
// one descriptor endpoint. A descriptor for any of its instances comes to
// the host's endpoint (pool.StartHosted); the buffer's transit names the
// instance. A step whose next step is an instance of this host hands the
// buffer over in memory and calls it: no descriptor, no system call, no
// thread switch. Hops to anything else go through the app's transport.
//
// # Threads
//
// One goroutine at a time receives, on a locked thread, and runs what it
// received itself, one step after another (the fast path: the thread that
// woke up does the work). If it is still busy after PromoteAfter, the
// watchdog makes another goroutine the receiver, which takes over what the
// busy one had not started yet: a slow guest delays only the requests
// queued for its own instance. A guest past its deadline is interrupted.
// The watchdog ticks only while requests flow.
//
// An instance runs one step at a time; a step for a busy instance waits in
// its queue and is run by whoever finishes the instance's current step.
type Host struct {
	e   *Engine
	p   *pool.Pool
	c   transport.Conn
	id  uint16
	log *slog.Logger
	out io.Writer // the guests' output

	fnMu sync.Mutex
	fns  map[int]*hostFn

	// Start commands under way, by instance id (control).
	ctlMu    sync.Mutex
	starting map[uint16]chan struct{}

	mu    sync.Mutex
	insts atomic.Pointer[map[uint16]*hostInst] // copy on write

	// The receiver: generation<<1 | working.
	state  atomic.Uint64
	since  atomic.Int64 // when the receiver started working (mono ns)
	cur    atomic.Pointer[batch]
	rot    atomic.Uint32
	active atomic.Int64 // last time a batch arrived (mono ns)
	parked atomic.Bool
	wake   chan struct{}
	stop   atomic.Bool
	done   chan struct{}
	wg     sync.WaitGroup // receivers and steps

	// Background work (spares made by refill): Close waits for it, so
	// that nothing instantiates into an engine being closed.
	bgMu   sync.Mutex
	bgStop bool
	bg     sync.WaitGroup
	// made is set when instances were made since the watchdog last
	// handed the heap's garbage back to the system.
	made atomic.Bool
	// Functions whose spare the receiving thread took, to refill once it
	// has run its batch (pending: there are some).
	pendMu  sync.Mutex
	pend    []*hostFn
	pending atomic.Bool
	// ticks counts the watchdog's rounds (tests: an idle host's stay
	// asleep).
	ticks atomic.Uint64

	// PromoteAfter is how long a receiver may be busy before another takes
	// over receiving; Tick the watchdog's period while requests flow; Idle
	// how long after the last batch, with no step running, the watchdog
	// sleeps until the next one.
	PromoteAfter, Tick, Idle time.Duration
	// Retry bounds how long a step's output waits for a full or missing
	// next instance before the chain answers 503.
	Retry time.Duration
	// Events receives what the host reports to the node (may be nil).
	Events func(Event)
}

// hostFn is a loaded function of the host.
type hostFn struct {
	index   int
	name    string
	f       *Function
	timeout time.Duration
	spares  chan *Instance
	ready   chan struct{} // closed when loaded (or failed: err)
	err     error
	// stepNanos is a moving average of the function's steps (ns),
	// starting high: a receiver sends the replies it holds before a step
	// of a function not known to be quick (see outbox).
	stepNanos atomic.Int64
}

// quickStep is the longest average step after which a receiver still
// holds its replies back to send them together (see outbox).
const quickStep = 20_000 // ns

// observe adds a step of d ns to the function's average.
func (hf *hostFn) observe(d int64) {
	a := hf.stepNanos.Load()
	hf.stepNanos.Store(a - a/8 + d/8)
}

// hostInst is an instance of the host: a slot of the app, its id, and the
// module instance now running in it (replaced after a trap).
type hostInst struct {
	id   uint16
	slot uint32
	fn   *hostFn
	st   *pool.SlotStats
	in   atomic.Pointer[Instance]

	deadline atomic.Int64 // of the running step (mono ns); 0 when idle
	// confirmed: the node's start command named it (an instance adopted
	// at its first descriptor is not, until that command comes).
	confirmed atomic.Bool

	mu       sync.Mutex
	busy     bool
	queue    []desc.Desc
	stopping chan struct{} // non-nil while a Stop waits: closed when it is idle
	gone     bool
}

type batch struct {
	ds   [transport.MaxBatch]desc.Desc
	n    int32
	next atomic.Int32
}

// HostConfig configures a Host.
type HostConfig struct {
	Engine *Engine
	Pool   *pool.Pool
	Conn   transport.Conn // the host's endpoint
	Log    *slog.Logger
	Output io.Writer // the guests' standard output and error (default os.Stderr)
	Events func(Event)
}

// NewHost makes a host; Run receives until Close.
func NewHost(c HostConfig) *Host {
	h := &Host{
		e: c.Engine, p: c.Pool, c: c.Conn, id: c.Conn.ID(), log: c.Log, out: c.Output,
		fns: map[int]*hostFn{}, starting: map[uint16]chan struct{}{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
		PromoteAfter: 2 * time.Millisecond, Tick: time.Millisecond, Idle: 20 * time.Millisecond, Retry: 2 * time.Second,
		Events: c.Events,
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.out == nil {
		h.out = os.Stderr
	}
	if h.Events == nil {
		h.Events = func(Event) {}
	}
	m := map[uint16]*hostInst{}
	h.insts.Store(&m)
	return h
}

// ID returns the host's endpoint id.
func (h *Host) ID() uint16 { return h.id }

// Run receives and runs steps until Close; it returns when every step
// that was running has finished.
func (h *Host) Run() {
	h.wg.Add(2)
	go h.watch()
	h.state.Store(1<<1 | 1)
	h.receive(1, nil)
	<-h.done
}

// Close stops receiving; Run returns once the steps under way finish.
func (h *Host) Close() {
	if h.stop.Swap(true) {
		return
	}
	h.c.Close()
	select {
	case h.wake <- struct{}{}:
	default:
	}
	go func() {
		h.wg.Wait()
		h.bgMu.Lock()
		h.bgStop = true
		h.bgMu.Unlock()
		h.bg.Wait()
		// The spares no instance took.
		h.fnMu.Lock()
		for _, hf := range h.fns {
			for hf.spares != nil && len(hf.spares) > 0 {
				(<-hf.spares).Close()
			}
		}
		h.fnMu.Unlock()
		close(h.done)
	}()
}

// Load loads function fn (see Command). Starts of its instances wait for
// it.
func (h *Host) Load(ctx context.Context, c Command) error {
	hf := h.fn(c.Fn)
	hf.name = c.Name
	hf.timeout = c.Timeout
	if hf.timeout <= 0 {
		hf.timeout = 30 * time.Second
	}
	bin, err := os.ReadFile(c.Module)
	if err == nil {
		hf.f, err = h.e.Load(ctx, FunctionConfig{
			Name: c.Name, Module: bin, Memory: c.Memory, Window: h.p.BufferSize(), Grants: c.Grants, InitTimeout: c.InitTimeout,
			Output: &prefixWriter{w: h.out, prefix: []byte("[" + c.Name + "] ")},
		})
	}
	if err != nil {
		hf.err = fmt.Errorf("function %s: %w", c.Name, err)
		close(hf.ready)
		return hf.err
	}
	hf.spares = make(chan *Instance, max(c.Spares, 0))
	close(hf.ready)
	h.refill(hf)
	return nil
}

// fn returns the entry of function index, made on first use.
func (h *Host) fn(index int) *hostFn {
	h.fnMu.Lock()
	defer h.fnMu.Unlock()
	hf := h.fns[index]
	if hf == nil {
		hf = &hostFn{index: index, ready: make(chan struct{})}
		hf.stepNanos.Store(8 * quickStep)
		h.fns[index] = hf
	}
	return hf
}

// refill makes clones until the function's spares are full, in the
// background.
func (h *Host) refill(hf *hostFn) {
	if cap(hf.spares) == 0 {
		return
	}
	h.bgMu.Lock()
	defer h.bgMu.Unlock()
	if h.bgStop {
		return
	}
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		for len(hf.spares) < cap(hf.spares) && !h.stop.Load() {
			in, err := hf.f.New(context.Background())
			if err != nil {
				h.log.Warn("could not make a spare instance", "function", hf.name, "err", err)
				return
			}
			h.made.Store(true)
			select {
			case hf.spares <- in:
			default:
				in.Close()
				return
			}
		}
	}()
}

// refillPending makes the spares the receiving thread took (see instance).
func (h *Host) refillPending() {
	h.pendMu.Lock()
	pend := h.pend
	h.pend = nil
	h.pending.Store(false)
	h.pendMu.Unlock()
	for _, hf := range pend {
		h.refill(hf)
	}
}

// instance returns a new module instance of hf: a spare when there is
// one, else a fresh clone. The receiving thread (later) leaves making the
// next spare until it has run what it received: a clone costs hundreds of
// microseconds of CPU that the request which took the spare should not
// wait behind.
func (h *Host) instance(ctx context.Context, hf *hostFn, later bool) (*Instance, error) {
	select {
	case in := <-hf.spares:
		if later {
			h.pendMu.Lock()
			h.pend = append(h.pend, hf)
			h.pendMu.Unlock()
			h.pending.Store(true)
		} else {
			h.refill(hf)
		}
		return in, nil
	default:
	}
	h.made.Store(true)
	return hf.f.New(ctx)
}

// Start starts instance id of function fn in slot: it is ready to take
// steps when Start returns nil.
func (h *Host) Start(ctx context.Context, fn int, slot uint32, id uint16) error {
	hf := h.fn(fn)
	select {
	case <-hf.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if hf.err != nil {
		return hf.err
	}
	if slot >= h.p.Slots() || id == 0 || id == h.id {
		return fmt.Errorf("wasm: start: bad slot %d or id %d", slot, id)
	}
	if hi := h.inst(id); hi != nil && hi.slot == slot && hi.fn == hf {
		hi.confirmed.Store(true)
		return nil // adopted at its first descriptor
	}
	// The node's word goes before the routing table's: an instance
	// adopted from the table that holds this id or slot and that the node
	// never started (a slot written by some other process of the app, or
	// a start the node gave up on) gives way.
	for _, x := range *h.insts.Load() {
		if x.confirmed.Load() || x.id == id && x.slot == slot && x.fn == hf {
			continue // the node's, or the one it starts (adopted meanwhile: add finds it)
		}
		if x.id == id || x.slot == slot {
			h.Stop(x.id)
		}
	}
	hi, err := h.add(ctx, hf, slot, id, false)
	if err != nil {
		return err
	}
	hi.confirmed.Store(true)
	return nil
}

// add makes instance id of hf in slot. An instance id already has is kept
// when it is the same one (Start after adopt, or the other way round).
// adopting: the routing table asks, not the node; then no other instance
// may hold the slot (so what the table can make the host create is
// bounded by the app's slots).
func (h *Host) add(ctx context.Context, hf *hostFn, slot uint32, id uint16, adopting bool) (*hostInst, error) {
	in, err := h.instance(ctx, hf, adopting)
	if err != nil {
		return nil, err
	}
	hi := &hostInst{id: id, slot: slot, fn: hf, st: h.p.Stats(slot)}
	hi.in.Store(in)
	h.mu.Lock()
	defer h.mu.Unlock()
	old := *h.insts.Load()
	if x, dup := old[id]; dup {
		in.Close()
		if x.slot == slot && x.fn == hf {
			return x, nil
		}
		return nil, fmt.Errorf("wasm: start: instance %d exists", id)
	}
	if adopting {
		for _, x := range old {
			if x.slot == slot {
				in.Close()
				return nil, fmt.Errorf("wasm: slot %d holds instance %d", slot, x.id)
			}
		}
	}
	m := make(map[uint16]*hostInst, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[id] = hi
	h.insts.Store(&m)
	return hi, nil
}

// adopt starts instance id at its first descriptor, before the node's
// start command for it arrives: the node makes a wasm instance's slot
// ready as soon as it has given it an id, so a cold start costs no round
// trip between the node and the host. The routing table says which slot
// and function: a ready slot of this host that holds id, and no other
// instance in the slot. The start command that follows finds the instance
// running and confirms it (see Start for one that never comes).
func (h *Host) adopt(id uint16) *hostInst {
	if id == 0 || id == h.id {
		return nil
	}
	p := h.p
	for s := range p.Slots() {
		if p.SlotID(s) != id || p.SlotEndpoint(s) != h.id || p.SlotState(s) != pool.SlotReady {
			continue
		}
		h.fnMu.Lock()
		hf := h.fns[int(p.SlotFunction(s))]
		h.fnMu.Unlock()
		if hf == nil {
			return nil
		}
		select {
		case <-hf.ready:
		default:
			return nil // not loaded: the node never starts one then
		}
		if hf.err != nil {
			return nil
		}
		hi, err := h.add(context.Background(), hf, s, id, true)
		if err != nil {
			h.log.Error("could not start a wasm instance at its first request", "function", hf.name, "id", id, "err", err)
			return nil
		}
		return hi
	}
	return nil
}

// Stop removes instance id once it has finished what it runs and what
// waits for it; the node stops routing to it first.
func (h *Host) Stop(id uint16) error {
	hi := h.inst(id)
	if hi == nil {
		return fmt.Errorf("wasm: stop: no instance %d", id)
	}
	for {
		hi.mu.Lock()
		if hi.gone {
			hi.mu.Unlock()
			return nil // stopped by another Stop
		}
		if !hi.busy {
			// Idle, and from here on a descriptor that still finds it is
			// answered (lost), never run: no step runs on the module
			// instance being closed.
			hi.gone = true
			in := hi.in.Load()
			hi.mu.Unlock()
			h.mu.Lock()
			old := *h.insts.Load()
			m := make(map[uint16]*hostInst, len(old))
			for k, v := range old {
				if v != hi {
					m[k] = v
				}
			}
			h.insts.Store(&m)
			h.mu.Unlock()
			in.Close()
			return nil
		}
		if hi.stopping == nil {
			hi.stopping = make(chan struct{})
		}
		idle := hi.stopping
		hi.mu.Unlock()
		<-idle // closed by run when the instance goes idle
		hi.mu.Lock()
		if hi.stopping == idle {
			hi.stopping = nil
		}
		hi.mu.Unlock()
	}
}

func (h *Host) inst(id uint16) *hostInst { return (*h.insts.Load())[id] }

// receive is the receiver of generation gen: it receives batches and runs
// them until another receiver takes over or the host closes. inherit is
// the batch of the receiver it took over from.
func (h *Host) receive(gen uint64, inherit *batch) {
	defer h.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	o := new(outbox)
	o.ob.Init(h.p, h.c)
	defer h.flush(o)
	if inherit != nil {
		if !h.work(o, gen, inherit) {
			return
		}
	}
	b := new(batch)
	lastSched := mono.Now()
	for {
		// What the batch's steps answered goes out together: one
		// message, one wake-up of the gateway.
		h.flush(o)
		if h.pending.Load() {
			h.refillPending()
		}
		// Back to receiving, unless a newer receiver took over.
		if !h.state.CompareAndSwap(gen<<1|1, gen<<1) {
			return
		}
		// A thread that only makes system calls and calls guests must
		// pass through the scheduler now and then, or Go's monitor takes
		// its processor at every call it catches (see the gateway's
		// loop.run). Here, not while working: the watchdog never hands
		// receiving on from a receiver that is not working.
		if now := mono.Now(); now-lastSched > schedEvery {
			lastSched = now
			runtime.Gosched()
		}
		n, err := h.c.Recv(b.ds[:])
		if err != nil {
			if !errors.Is(err, transport.ErrClosed) {
				h.log.Error("sandbox host: receive", "err", err)
			}
			h.state.Store(gen<<1 | 1)
			h.Close()
			return
		}
		// The batch is published before the state says working: a
		// receiver the watchdog makes in this one's place takes over this
		// batch, never the one before (whose rest would then be run by
		// nobody).
		b.n = int32(n)
		b.next.Store(0)
		h.cur.Store(b)
		now := mono.Now()
		h.since.Store(now)
		h.state.Store(gen<<1 | 1)
		h.active.Store(now)
		if h.parked.Load() && h.parked.CompareAndSwap(true, false) {
			select {
			case h.wake <- struct{}{}:
			default:
			}
		}
		if !h.work(o, gen, b) {
			return
		}
	}
}

// schedEvery is how often a receiver passes through the Go scheduler.
const schedEvery = int64(5e6)

// An outbox holds the answers (to the gateway, or a call's to its
// caller) of the steps a receiver ran, to send them together: a batch
// that woke the host goes back in one message (transport.Outbox) instead
// of one system call and one wake-up of the gateway per reply. A receiver
// sends what it holds before it waits for the next batch, before a step
// of a function whose steps are not quick (quickStep: a slow step must
// not hold back answers that are ready), when an answer waited
// holdReplies, and when it is full or the next answer goes elsewhere.
type outbox struct {
	ob    transport.Outbox
	first int64 // when the oldest answer held was added (mono ns)
}

// holdReplies bounds how long an answer waits in an outbox.
const holdReplies = 50_000 // ns

// flush sends what o holds; an answer that could not go (the gateway's
// queue full) is retried alone, as replyHeld does.
func (h *Host) flush(o *outbox) {
	if o.ob.Len() == 0 {
		return
	}
	// back is o's until its next Add: passRetry sends alone (Pass), not
	// through o.
	back, err := o.ob.Flush()
	for _, d := range back {
		h.passRetry(d, err)
	}
}

// work runs the descriptors of b not yet taken; it reports false when a
// newer receiver took over meanwhile (which takes the rest of b).
func (h *Host) work(o *outbox, gen uint64, b *batch) bool {
	for {
		i := b.next.Add(1) - 1
		if i >= b.n {
			return true
		}
		h.handle(o, b.ds[i])
		if o.ob.Len() > 0 && mono.Now()-o.first > holdReplies {
			h.flush(o)
		}
		if h.state.Load() != gen<<1|1 {
			return false
		}
	}
}

// handle takes the buffer a descriptor announces and runs its step.
func (h *Host) handle(o *outbox, d desc.Desc) {
	if d.Is(desc.FlagControl) {
		return
	}
	if d.Buf >= h.p.Buffers() {
		h.p.CountStale()
		return
	}
	id := h.p.Header(d.Buf).Own().Transit
	hi := h.inst(id)
	if hi == nil {
		if hi = h.adopt(id); hi == nil {
			h.p.CountStale()
			return
		}
	}
	if !h.p.Accept(d.Buf, d.Gen, d.Src, hi.id) {
		hi.st.Queue.Add(-1)
		hi.st.Stale.Add(1)
		return
	}
	hi.st.Arrivals.Add(1)
	h.run(o, hi, d)
}

// run runs d on hi, or queues it when hi is busy; then it runs what the
// step hands on in memory, and what queued for each instance meanwhile.
func (h *Host) run(o *outbox, hi *hostInst, d desc.Desc) {
	for hi != nil {
		hi.mu.Lock()
		if hi.busy || hi.gone {
			if hi.gone {
				hi.mu.Unlock()
				h.lost(o, hi, d)
				return
			}
			hi.queue = append(hi.queue, d)
			hi.mu.Unlock()
			return
		}
		hi.busy = true
		hi.mu.Unlock()
		next, nd := h.step(o, hi, d)
		for {
			hi.mu.Lock()
			if len(hi.queue) == 0 {
				hi.busy = false
				if hi.stopping != nil {
					select {
					case <-hi.stopping:
					default:
						close(hi.stopping)
					}
				}
				hi.mu.Unlock()
				break
			}
			qd := hi.queue[0]
			hi.queue = hi.queue[1:]
			hi.mu.Unlock()
			if n2, d2 := h.step(o, hi, qd); n2 != nil {
				h.run(o, n2, d2)
			}
		}
		hi, d = next, nd
	}
}

// lost answers a request that reached an instance already removed.
func (h *Host) lost(o *outbox, hi *hostInst, d desc.Desc) {
	h.fail(o, hi.id, d.Chain, d.Hop, d.Buf, 502, "spry: the instance of "+hi.fn.name+" was stopped with the request")
}

// step runs one step of hi on d's buffer, which hi holds, and passes the
// output on. When the next step is an instance of this host it returns
// that instance and the descriptor to run there instead (a call, not a
// send). o holds the answers of the steps run before (nil: none; each
// answer goes at once).
func (h *Host) step(o *outbox, hi *hostInst, d desc.Desc) (*hostInst, desc.Desc) {
	if o != nil && o.ob.Len() > 0 && hi.fn.stepNanos.Load() > quickStep {
		h.flush(o)
	}
	st := hi.st
	st.Queue.Add(-1)
	p := h.p
	hdr := p.Header(d.Buf)
	start := mono.Now()
	dl := hdr.Deadline()
	if dl != 0 && start > dl {
		h.fail(o, hi.id, d.Chain, d.Hop, d.Buf, 504, "spry: the request's deadline passed before this step ran")
		return nil, d
	}
	// A guest reads its payload in its input window, one pool buffer:
	// a larger payload (in the pool's large-extent region) is refused.
	if room := uint64(len(p.Buffer(d.Buf))) - uint64(min(hdr.Off(), uint32(len(p.Buffer(d.Buf))))); p.Pieces(d.Buf) > 1 || p.Size(d.Buf) > room {
		h.fail(o, hi.id, d.Chain, d.Hop, d.Buf, 413, fmt.Sprintf("spry: a payload of %d bytes is larger than wasm function %s's input window (one pool buffer, %d bytes)",
			p.Size(d.Buf), hi.fn.name, len(p.Buffer(d.Buf))))
		return nil, d
	}
	if st.InFlight.Add(1) == 1 {
		st.BusySince.Store(start)
	}
	hop := int(d.Hop)
	hdr.SetPlace(d.Hop, pool.PhaseRunning)
	arrived := hdr.Ingress()
	if hop > 0 {
		if _, e := hdr.HopTimes(hop - 1); e != 0 {
			arrived = e
		}
	}
	hdr.HopStart(hop, start)
	limit := start + int64(hi.fn.timeout)
	if dl != 0 && dl < limit {
		limit = dl
	}
	var out uint32
	var stop bool
	var err error
	for tries := 0; ; tries++ {
		in := hi.in.Load()
		hi.deadline.Store(limit)
		out, stop, err = in.Step(context.Background(), p, hi.id, d.Buf, hop)
		hi.deadline.Store(0)
		if !errors.Is(err, errRefused) || tries > 0 {
			break
		}
		// Interrupted between steps (the watchdog raced the end of the
		// last one): nothing ran; run it on a fresh instance.
		h.replace(hi, in, "interrupted between steps")
	}
	end := mono.Now()
	hi.fn.observe(end - start)
	if err != nil {
		in := hi.in.Load()
		status, msg := uint16(502), fmt.Sprintf("spry: function %s: instance %d failed: %v", hi.fn.name, hi.id, err)
		if errors.Is(err, ErrInterrupted) {
			status = 504
			msg = fmt.Sprintf("spry: function %s ran past its deadline and was stopped", hi.fn.name)
		}
		h.log.Warn("wasm instance failed; replacing it", "function", hi.fn.name, "id", hi.id, "err", err)
		hdr.HopEnd(hop, end)
		h.account(st, start, end, arrived, status)
		h.replace(hi, in, err.Error())
		h.fail(o, hi.id, d.Chain, d.Hop, d.Buf, status, msg)
		return nil, d
	}
	oh := p.Header(out)
	oh.HopEnd(hop, end)
	oh.SetPlace(d.Hop, pool.PhaseDone)
	h.account(st, start, end, arrived, oh.Status())
	// Where the output goes, by the chain's graph (a line: the next step;
	// a call's answer: its caller; else the gateway).
	r, err := graph.Next(p, out)
	if stop || err != nil || r.Kind != graph.Forward {
		h.reply(o, hi.id, d.Chain, d.Hop, out)
		return nil, d
	}
	fn, ok := p.Step(d.Chain, int(r.Node))
	if !ok {
		h.reply(o, hi.id, d.Chain, d.Hop, out)
		return nil, d
	}
	oh.SetPlace(r.Node, pool.PhaseQueued)
	oh.SetSent(mono.Now())
	nd := desc.Desc{Src: hi.id, Buf: out, Chain: d.Chain, Hop: r.Node}
	if slot, id, ep, ok := p.PickRoute(fn, h.rot.Add(1)); ok && ep == h.id {
		if x := h.inst(id); x != nil && x.slot == slot && p.Move(out, hi.id, x.id) {
			p.Stats(slot).Queue.Add(1)
			return x, nd
		}
	}
	h.forward(o, hi.id, fn, nd)
	return nil, d
}

// account updates the slot's counters for a finished step.
func (h *Host) account(st *pool.SlotStats, start, end, arrived int64, status uint16) {
	st.BusyNanos.Add(uint64(end - start))
	if arrived != 0 {
		st.Latency.Observe(end - arrived)
	}
	switch {
	case status >= 500:
		st.Errors.Add(1)
	case status >= 400:
		st.ClientErrors.Add(1)
	}
	st.Served.Add(1)
	st.BusySince.Store(end)
	st.InFlight.Add(-1)
}

// replace puts a new module instance into hi in place of in, which failed.
func (h *Host) replace(hi *hostInst, in *Instance, why string) {
	in.Close()
	n, err := h.instance(context.Background(), hi.fn, true)
	if err != nil {
		// Keep the dead one: its next step fails, and says so.
		h.log.Error("could not replace a wasm instance", "function", hi.fn.name, "id", hi.id, "err", err)
		return
	}
	hi.in.Store(n)
	h.Events(Event{Ev: EvRestarted, Fn: hi.fn.index, ID: hi.id, Why: why})
}

// forward sends buf (held by from, an instance of this host) to an
// instance of function fn elsewhere, through the host's endpoint.
func (h *Host) forward(o *outbox, from uint16, fn uint16, d desc.Desc) {
	if !h.p.Move(d.Buf, from, h.id) {
		return // the node took it back
	}
	deadline := time.Now().Add(h.Retry)
	asked := false
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		err := transport.Forward(h.p, h.c, fn, d, h.rot.Add(1))
		if err == nil || errors.Is(err, transport.ErrLost) {
			return
		}
		if errors.Is(err, transport.ErrNoInstance) && !asked {
			asked = true
			h.c.Send(desc.Desc{Dst: h.p.Gateway(), Src: h.id, Buf: desc.CtlNoInstance, Chain: fn, Flags: desc.FlagControl})
		}
		if h.stop.Load() || time.Now().After(deadline) {
			h.failHeld(o, h.id, d.Chain, d.Hop-1, d.Buf, 503, "no instance of the next step could take the request")
			return
		}
		if o != nil {
			h.flush(o) // nothing waits behind a wait
		}
		time.Sleep(wait)
	}
}

// fail ends the chain with status and msg in buf, held by from.
func (h *Host) fail(o *outbox, from uint16, chain uint16, hop uint8, buf uint32, status uint16, msg string) {
	if !h.p.Move(buf, from, h.id) {
		return
	}
	h.failHeld(o, h.id, chain, hop, buf, status, msg)
}

func (h *Host) failHeld(o *outbox, holder uint16, chain uint16, hop uint8, buf uint32, status uint16, msg string) {
	h.p.Clear(buf, holder) // the message goes in the buffer's own room: its payload (extents) goes
	hdr := h.p.Header(buf)
	n := copy(h.p.Buffer(buf), msg)
	hdr.SetData(0, uint32(n))
	hdr.SetContentTypeString("text/plain; charset=utf-8")
	hdr.SetStatus(status)
	hdr.SetFlags(hdr.Flags() | pool.FlagStop)
	h.replyHeld(o, chain, hop, buf)
}

// reply hands buf, held by from, back to the app's gateway.
func (h *Host) reply(o *outbox, from uint16, chain uint16, hop uint8, buf uint32) {
	if !h.p.Move(buf, from, h.id) {
		return
	}
	h.replyHeld(o, chain, hop, buf)
}

// The answer goes to the gateway, or a call's to its caller (graph.Next
// says which): into o, or at once when o is nil.
func (h *Host) replyHeld(o *outbox, chain uint16, hop uint8, buf uint32) {
	r, err := graph.Next(h.p, buf)
	if err != nil || r.Kind != graph.Return && r.Kind != graph.Join {
		r = graph.Route{Kind: graph.Reply}
	}
	d, err := graph.GatewayDesc(h.p, buf, r)
	if err != nil {
		h.log.Error("reply to gateway failed", "err", err)
		return
	}
	if o == nil {
		h.passRetry(d, transport.Pass(h.p, h.c, d))
		return
	}
	if !o.ob.Room(d.Dst) {
		h.flush(o)
	}
	if o.ob.Len() == 0 {
		o.first = mono.Now()
	}
	o.ob.Add(d, d.Dst) // ErrLost: the node took the buffer back
}

// passRetry passes d on again after a send that failed with err, while
// the destination is full, for up to Retry; nil and ErrLost are done.
func (h *Host) passRetry(d desc.Desc, err error) {
	deadline := time.Now().Add(h.Retry)
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		if err == nil || errors.Is(err, transport.ErrLost) {
			return
		}
		if !errors.Is(err, transport.ErrFull) || time.Now().After(deadline) {
			// The host keeps the buffer; the node takes it back when the
			// host stops.
			h.log.Error("reply to gateway failed", "err", err)
			return
		}
		time.Sleep(wait)
		err = transport.Pass(h.p, h.c, d)
	}
}

// watch is the watchdog: while requests flow it hands receiving on from a
// receiver busy for longer than PromoteAfter, and interrupts steps past
// their deadline; once no step runs, the receiver waits for descriptors
// and none came for Idle, it sleeps until the next batch wakes it: an idle
// host costs no CPU.
func (h *Host) watch() {
	defer h.wg.Done()
	t := time.NewTicker(h.Tick)
	defer t.Stop()
	for !h.stop.Load() {
		h.ticks.Add(1)
		now := mono.Now()
		running := false
		for _, hi := range *h.insts.Load() {
			if dl := hi.deadline.Load(); dl != 0 {
				running = true
				if now > dl {
					if in := hi.in.Load(); !in.Interrupted() {
						in.Interrupt()
					}
				}
			}
		}
		s := h.state.Load()
		if s&1 == 1 && now-h.since.Load() > int64(h.PromoteAfter) {
			gen := s >> 1
			if h.state.CompareAndSwap(s, (gen+1)<<1|1) {
				h.since.Store(now)
				h.wg.Add(1)
				go h.receive(gen+1, h.cur.Load())
			}
		}
		if !running && s&1 == 0 && now-h.active.Load() > int64(h.Idle) {
			h.parked.Store(true)
			// A batch that arrived between the check and the store must
			// not be slept through: its receiver stored active before it
			// looked at parked.
			if h.active.Load() < mono.Now()-int64(h.Idle) && h.state.Load()&1 == 0 {
				// Idle: hand back what the heap does not use (making
				// instances leaves garbage behind) before sleeping.
				if h.made.Swap(false) {
					debug.FreeOSMemory()
				}
				<-h.wake
				t.Reset(h.Tick)
			}
			h.parked.Store(false)
			continue
		}
		<-t.C
	}
}

// prefixWriter writes each line of a guest's output with a prefix.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix []byte
	mid    bool // the last write ended inside a line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]byte, 0, len(b)+len(p.prefix))
	for _, c := range b {
		if !p.mid {
			out = append(out, p.prefix...)
			p.mid = true
		}
		out = append(out, c)
		if c == '\n' {
			p.mid = false
		}
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}
