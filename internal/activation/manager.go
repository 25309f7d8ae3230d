package activation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is how one attempt ended, as the gateway saw it. Body and
// ContentType are views valid only during the done callback.
type Outcome struct {
	Status      int
	ContentType []byte
	Body        []byte
	Steps       []Step
	Start, End  time.Time
}

// Invoker runs attempts through the gateway's one admission path: the same
// in-flight bound, pool and dispatch as a synchronous request.
type Invoker interface {
	// Invoke admits one attempt of rec into its chain: it takes an
	// in-flight entry and a pool buffer, writes the request's metadata,
	// calls fill with the buffer to put the body in (fill returns the
	// length), and dispatches it. done is called exactly once, on any
	// goroutine, with the outcome (a deadline is a 504, an instance that
	// died holding it a 502). An error means it was not admitted (the
	// app is at its in-flight bound, the pool is exhausted, the body does
	// not fit): done is not called.
	Invoke(rec *Record, fill func(dst []byte) (int, error), done func(*Outcome)) error
}

// Admitted is a request the gateway has already admitted for an
// activation: its body is in a pool buffer, its in-flight entry taken. The
// first attempt of an activation accepted over HTTP goes out in it, so the
// body is written into the pool once.
type Admitted interface {
	Dispatch(rec *Record, done func(*Outcome))
	Release() // not dispatched: give the entry and buffer back
}

// Errors of Accept.
var (
	// ErrQueueFull: the chain has as many unfinished activations as its
	// queue holds (answer 429).
	ErrQueueFull = errors.New("activation: the chain's async queue is full")
	// ErrUnknownChain: no chain of that name.
	ErrUnknownChain = errors.New("activation: no such chain")
)

// Record modes for synchronous requests (ChainConfig.Record).
const (
	RecordFailures = "failures" // default: requests answered 400 or more
	RecordAll      = "all"
	RecordNone     = "none"
)

// ChainConfig is how a chain's activations are run and kept.
type ChainConfig struct {
	App, Chain string
	Steps      []string      // the chain's functions, for step timings
	Attempts   int           // attempts before an activation is dead (>= 1)
	MaxAge     time.Duration // an activation older than this is dead instead of retried
	Backoff    time.Duration // delay before the first retry; doubles per attempt
	MaxBackoff time.Duration // the longest delay between attempts
	Queue      int           // unfinished activations at once (a full queue answers 429)
	Record     string        // RecordFailures, RecordAll or RecordNone (sync requests)
	ResultMax  int           // bytes of a result kept in the record
}

// AppConfig bounds an app's async work.
type AppConfig struct {
	Name string
	// Concurrency bounds the activations of the app in its chains at
	// once: async work takes in-flight entries from the same table as
	// sync requests, and leaves the rest to them.
	Concurrency int
}

// Config configures a Manager.
type Config struct {
	Store     *Store
	Invoker   func(app string) Invoker
	Apps      []AppConfig
	Chains    []ChainConfig
	Retention map[string]Retention // by app
	Log       *slog.Logger
	// Client posts callbacks (default: a client with a 10 s timeout).
	Client *http.Client
	// OnDone, when set, is called when an activation reaches a terminal
	// state, with its result (up to ResultMax; the whole of it for one
	// with a reply topic): the MQTT trigger publishes replies from it. It
	// must not block, nor keep result past its return: for an
	// at-most-once activation it runs on the gateway's receive thread and
	// result is the reply in its pool buffer.
	OnDone func(rec *Record, result []byte)
}

// Manager runs activations: it accepts them durably, runs each in its
// chain through the gateway, retries what can succeed later, keeps what
// cannot as dead letters, and delivers callbacks.
//
// Nothing waits for an attempt: an attempt is sent into the gateway (by
// the goroutine that accepted the activation, when it can go at once in
// the request's own pool buffer, else by the manager's loop), and its
// outcome comes back through a callback that hands it to the loop. The
// loop settles outcomes and starts queued attempts as room frees up, so
// an activation costs no goroutine of its own and, under load, no
// wake-up of its own. An at-most-once invocation (Spec.Volatile) is not
// even handed to the loop: it settles in the callback (finishDirect).
type Manager struct {
	store     *Store
	log       *slog.Logger
	client    *http.Client
	onDone    func(*Record, []byte)
	retention map[string]Retention
	invoker   func(app string) Invoker
	apps      map[string]*appQ                   // guarded by mu
	appList   atomic.Pointer[[]*appQ]            // the same, for the loop
	chains    atomic.Pointer[map[string]*chainQ] // app/chain; replaced whole by Configure

	mu     sync.Mutex
	active map[string]*act // unfinished, by id
	timers map[*time.Timer]struct{}
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc

	// The loop's inbox: outcomes to settle; kick wakes it (outcomes, or
	// attempts queued).
	kick    chan struct{}
	doneMu  sync.Mutex
	outcome []outcomeOf
}

// act is one unfinished activation.
type act struct {
	rec *Record
	ch  *chainQ
}

// outcomeOf is an attempt's outcome of activation a for the loop to
// settle.
type outcomeOf struct {
	a   *act
	res result
}

// chain returns the chain of key app/chain, or nil.
func (m *Manager) chain(key string) *chainQ { return (*m.chains.Load())[key] }

// chainQ is one chain's settings and counters.
type chainQ struct {
	cfg   atomic.Pointer[ChainConfig] // replaced by Configure
	app   *appQ
	depth atomic.Int64 // unfinished activations
	stats ChainStats
}

// ChainStats are a chain's activation counters.
type ChainStats struct {
	Accepted  atomic.Uint64 // async activations accepted
	Duplicate atomic.Uint64 // requests answered with an existing activation (idempotency)
	Rejected  atomic.Uint64 // refused: queue full
	Succeeded atomic.Uint64
	Failed    atomic.Uint64
	Dead      atomic.Uint64
	Retries   atomic.Uint64 // attempts after the first
	Recorded  atomic.Uint64 // sync requests recorded
}

func newChainQ(cc ChainConfig, q *appQ) *chainQ {
	ch := &chainQ{app: q}
	ch.cfg.Store(&cc)
	return ch
}

// conf returns the chain's settings now.
func (ch *chainQ) conf() *ChainConfig { return ch.cfg.Load() }

// appQ is an app's queue of activations ready to run. At most limit of
// its activations are in their chains at once: async work takes in-flight
// entries from the same table as sync requests, and leaves the rest to
// them.
type appQ struct {
	name    string
	inv     Invoker
	mu      sync.Mutex
	limit   int
	running int
	ready   []*act
	head    int
}

// reserve takes room for an attempt that starts now, unless the app is at
// its limit or activations are already waiting (they go first).
func (q *appQ) reserve() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.running >= q.limit || q.head < len(q.ready) {
		return false
	}
	q.running++
	return true
}

// release gives back the room of an attempt that ended.
func (q *appQ) release() {
	q.mu.Lock()
	q.running--
	q.mu.Unlock()
}

func (q *appQ) push(a *act) {
	q.mu.Lock()
	q.ready = append(q.ready, a)
	q.mu.Unlock()
}

// next takes the next ready activation and room for it, or nil.
func (q *appQ) next() *act {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.ready) || q.running >= q.limit {
		return nil
	}
	a := q.ready[q.head]
	q.ready[q.head] = nil
	q.head++
	q.running++
	if q.head == len(q.ready) {
		q.ready, q.head = q.ready[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.ready) {
		n := copy(q.ready, q.ready[q.head:])
		clear(q.ready[n:])
		q.ready, q.head = q.ready[:n], 0
	}
	return a
}

// New makes a Manager. Start recovers what the store holds and starts the
// workers.
func New(c Config) (*Manager, error) {
	if c.Store == nil {
		return nil, errors.New("activation: no store")
	}
	m := &Manager{
		store: c.Store, log: c.Log, client: c.Client, onDone: c.OnDone, retention: c.Retention,
		apps: map[string]*appQ{}, invoker: c.Invoker,
		active: map[string]*act{}, timers: map[*time.Timer]struct{}{}, kick: make(chan struct{}, 1),
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.client == nil {
		m.client = &http.Client{Timeout: 10 * time.Second}
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	chains := map[string]*chainQ{}
	m.chains.Store(&chains)
	for _, a := range c.Apps {
		q := &appQ{name: a.Name, limit: a.Concurrency}
		if c.Invoker != nil {
			q.inv = c.Invoker(a.Name)
		}
		if a.Concurrency < 1 {
			return nil, fmt.Errorf("activation: app %s: concurrency %d", a.Name, a.Concurrency)
		}
		m.apps[a.Name] = q
	}
	m.listApps()
	m.wg.Add(1)
	go m.loop()
	for _, cc := range c.Chains {
		q := m.apps[cc.App]
		if q == nil {
			m.Close()
			return nil, fmt.Errorf("activation: chain %s of unknown app %s", cc.Chain, cc.App)
		}
		if cc.Attempts < 1 || cc.Queue < 1 {
			m.Close()
			return nil, fmt.Errorf("activation: chain %s/%s: attempts %d, queue %d", cc.App, cc.Chain, cc.Attempts, cc.Queue)
		}
		chains[cc.App+"/"+cc.Chain] = newChainQ(cc, q)
	}
	return m, nil
}

// Configure applies a new set of apps and chains (a reload): new apps get
// a queue, new chains a queue; a chain that stays keeps its queue and
// counters and takes the new settings; a chain that is gone keeps its
// unfinished activations, whose attempts fail (not admitted) until they
// are dead, unless it comes back. An app's concurrency takes its new
// value (attempts running above a lowered one finish).
func (m *Manager) Configure(apps []AppConfig, chains []ChainConfig, retention map[string]Retention) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("activation: manager closed")
	}
	known := map[string]bool{}
	for _, a := range apps {
		known[a.Name] = true
		if a.Concurrency < 1 {
			return fmt.Errorf("activation: app %s: concurrency %d", a.Name, a.Concurrency)
		}
	}
	for _, cc := range chains {
		if cc.Attempts < 1 || cc.Queue < 1 || !known[cc.App] && m.apps[cc.App] == nil {
			return fmt.Errorf("activation: chain %s/%s: attempts %d, queue %d", cc.App, cc.Chain, cc.Attempts, cc.Queue)
		}
	}
	for _, a := range apps {
		q := m.apps[a.Name]
		if q == nil {
			q = &appQ{name: a.Name}
			if m.invoker != nil {
				q.inv = m.invoker(a.Name)
			}
			m.apps[a.Name] = q
		}
		q.mu.Lock()
		q.limit = a.Concurrency
		q.mu.Unlock()
	}
	m.listApps()
	defer m.wake()
	old := *m.chains.Load()
	next := make(map[string]*chainQ, len(old)+len(chains))
	for k, ch := range old {
		next[k] = ch // gone chains keep their queue for what is unfinished
	}
	for _, cc := range chains {
		k := cc.App + "/" + cc.Chain
		if ch := next[k]; ch != nil {
			ch.cfg.Store(&cc)
			continue
		}
		next[k] = newChainQ(cc, m.apps[cc.App])
	}
	m.chains.Store(&next)
	m.retention = retention
	return nil
}

// listApps publishes the apps for the loop (m.mu held, or not yet shared).
func (m *Manager) listApps() {
	l := make([]*appQ, 0, len(m.apps))
	for _, q := range m.apps {
		l = append(l, q)
	}
	m.appList.Store(&l)
}

// Start re-queues every activation the store says is owed (accepted
// before a restart and not finished), and starts pruning the store. It
// returns how many it re-queued.
func (m *Manager) Start() (int, error) {
	recs, err := m.store.Pending()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range recs {
		ch := m.chain(r.App + "/" + r.Chain)
		if ch == nil {
			m.log.Warn("activation of a chain this node does not run: kept, not run", "id", r.ID, "app", r.App, "chain", r.Chain)
			continue
		}
		if r.State.Terminal() {
			// Finished, but its callback was not delivered.
			m.goCallback(r, nil)
			continue
		}
		// A running one was cut short by the restart: that attempt
		// counts, and it runs again (at least once) unless it was its
		// last (a node that dies in every attempt must not loop).
		if r.State == Running && r.Attempts >= ch.conf().Attempts {
			r.State, r.End = Dead, time.Now()
			r.Error = fmt.Sprintf("dead after %d attempts: the node stopped during the last", r.Attempts)
			ch.stats.Dead.Add(1)
			m.store.Save(r, nil, false)
			continue
		}
		r.State = Queued
		a := &act{rec: r, ch: ch}
		ch.depth.Add(1)
		m.mu.Lock()
		m.active[r.ID] = a
		m.mu.Unlock()
		m.schedule(a, time.Until(r.Next))
		n++
	}
	if len(m.retention) > 0 {
		m.wg.Add(1)
		go m.pruneLoop()
	}
	return n, nil
}

// Close stops the loop and the timers. Unfinished activations stay in the
// store and run again after the next Start; outcomes of attempts still in
// their chains are not settled (they run again too).
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	for t := range m.timers {
		t.Stop()
	}
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

// Accepted is what Accept hands back.
type Accepted struct {
	ID        string
	Duplicate bool // an earlier activation of the same idempotency key (or CloudEvent source and id)
}

// Spec is a new activation for Accept.
type Spec struct {
	ID         string // its id, when the caller chose it (NewID) to tell the functions; "" makes one
	App, Chain string
	Cause      Cause
	Request    Request           // Size is set from Body
	Body       []byte            // copied into the store before Accept (or Submit) returns
	Key        string            // idempotency key ("" none)
	Event      map[string]string // CloudEvent attributes, when the input was one
	Topic      string            // the MQTT topic, when it was a PUBLISH
	Reply      Reply
	// Volatile: at most once (MQTT QoS 0): it runs at once, like a
	// synchronous request — not stored first, not queued, not retried —
	// and is recorded by the chain's record setting; Accept returns once
	// it is sent (an error: not admitted, dropped).
	Volatile bool
	// Held, when set, is the admitted request that carries Body in the
	// pool: the first attempt goes out in it. Accept takes it over
	// (dispatches or releases it) whatever it returns.
	Held Admitted
}

// Accept stores a new activation durably and queues it. It returns once
// the activation would survive a crash of the node: only then may the
// caller answer 202 (or acknowledge the MQTT PUBLISH).
func (m *Manager) Accept(s Spec) (Accepted, error) {
	if s.Volatile { // sent once it returns: no Submission to wait on
		ch, err := m.chainOf(&s)
		if err != nil {
			return Accepted{}, err
		}
		return m.direct(ch, s)
	}
	x, err := m.Submit(s)
	if err != nil {
		return Accepted{}, err
	}
	return x.Wait()
}

// Submission is an activation on its way to the disk (Submit).
type Submission struct {
	m      *Manager
	a      *act
	held   Admitted
	inline bool // room taken: the first attempt starts as soon as it is durable
	p      Pending
	done   Accepted // a volatile one, sent already
}

// Submit is the first half of Accept: it checks and submits the
// activation to the store without waiting for the disk; Wait is the
// second. A caller that acknowledges many activations (an MQTT client's
// QoS 1 PUBLISHes) submits each as it comes and waits for them in order:
// one flush carries them all.
func (m *Manager) Submit(s Spec) (*Submission, error) {
	ch, err := m.chainOf(&s)
	if err != nil {
		return nil, err
	}
	if s.Volatile {
		acc, err := m.direct(ch, s)
		if err != nil {
			return nil, err
		}
		return &Submission{done: acc}, nil
	}
	if ch.depth.Add(1) > int64(ch.conf().Queue) {
		ch.depth.Add(-1)
		ch.stats.Rejected.Add(1)
		if s.Held != nil {
			s.Held.Release()
		}
		return nil, ErrQueueFull
	}
	now := time.Now()
	s.Request.Size = len(s.Body)
	if s.ID == "" {
		s.ID = m.store.NewID(now, s.App, s.Chain, s.Key)
	}
	rec := &Record{
		ID: s.ID, App: s.App, Chain: s.Chain, Cause: s.Cause, State: Queued,
		Accepted: now, Key: s.Key, Event: s.Event, Topic: s.Topic, Request: s.Request, Reply: s.Reply,
	}
	x := &Submission{m: m, a: &act{rec: rec, ch: ch}, held: s.Held}
	if ch.app.reserve() {
		// Its first attempt starts as soon as it is durable (in the pool
		// buffer it came in, when it came with one; else the body is
		// copied from the store's memory into a fresh one): the record
		// says so from the start (no separate note that the attempt
		// started; after a crash it counts).
		x.inline = true
		rec.State, rec.Attempts, rec.Start = Running, 1, now
	} else if x.held != nil {
		// Not now: do not sit on a pool buffer and an in-flight entry
		// meanwhile (sync requests need them); the attempt reads the
		// body from the store when its turn comes.
		x.held.Release()
		x.held = nil
	}
	p, err := m.store.CreateAsync(rec, s.Body)
	if err != nil {
		x.undo()
		return nil, err
	}
	x.p = p
	return x, nil
}

// chainOf is the chain of activation s; an unknown one is refused (and
// s.Held released).
func (m *Manager) chainOf(s *Spec) (*chainQ, error) {
	ch := m.chain(s.App + "/" + s.Chain)
	if ch == nil {
		if s.Held != nil {
			s.Held.Release()
		}
		return nil, fmt.Errorf("%w: %s/%s", ErrUnknownChain, s.App, s.Chain)
	}
	return ch, nil
}

// undo gives back what a submission that is not going ahead took.
func (x *Submission) undo() {
	ch := x.a.ch
	ch.depth.Add(-1)
	if x.held != nil {
		x.held.Release()
	}
	if x.inline {
		ch.app.release()
		x.m.wake() // the room may let a queued one go
	}
}

// Wait returns once the submitted activation is durable (or failed), and
// starts or queues its first attempt.
func (x *Submission) Wait() (Accepted, error) {
	if x.m == nil {
		return x.done, nil
	}
	m, a, ch := x.m, x.a, x.a.ch
	existing, err := x.p.Wait()
	if err != nil || existing != "" {
		x.undo()
		if err != nil {
			return Accepted{}, err
		}
		ch.stats.Duplicate.Add(1)
		return Accepted{ID: existing, Duplicate: true}, nil
	}
	ch.stats.Accepted.Add(1)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		if x.held != nil {
			x.held.Release()
		}
		return Accepted{ID: a.rec.ID}, nil // stored: the next start runs it
	}
	m.active[a.rec.ID] = a
	m.mu.Unlock()
	if x.inline {
		m.launch(a, x.held, true)
	} else {
		ch.app.push(a)
		m.wake()
	}
	return Accepted{ID: a.rec.ID}, nil
}

// direct runs an at-most-once invocation at once through the gateway: the
// payload is copied once, into the pool buffer; the outcome is recorded by
// the chain's record setting and handed to OnDone (the MQTT reply).
func (m *Manager) direct(ch *chainQ, s Spec) (Accepted, error) {
	if s.Held != nil {
		s.Held.Release()
	}
	q := ch.app
	if q.inv == nil {
		return Accepted{}, errors.New("activation: no invoker")
	}
	now := time.Now()
	s.Request.Size = len(s.Body)
	rec := &Record{
		ID: NewID(now), App: s.App, Chain: s.Chain, Cause: s.Cause, State: Running, Accepted: now, Start: now, Attempts: 1,
		Event: s.Event, Topic: s.Topic, Request: s.Request, Reply: s.Reply,
	}
	err := q.inv.Invoke(rec, func(dst []byte) (int, error) {
		if len(s.Body) > len(dst) {
			return 0, fmt.Errorf("payload of %d bytes is larger than a pool buffer", len(s.Body))
		}
		return copy(dst, s.Body), nil
	}, func(o *Outcome) { m.finishDirect(ch, rec, o) })
	if err != nil {
		ch.stats.Rejected.Add(1)
		return Accepted{}, err
	}
	ch.stats.Accepted.Add(1)
	return Accepted{ID: rec.ID}, nil
}

// finishDirect settles an at-most-once invocation, on the gateway's
// receive thread while o's body is still in its pool buffer: nothing is
// copied but what the record keeps (when the chain records it), and there
// is no hand-over to the loop: OnDone gets the body in place (the MQTT
// reply is queued to the broker, which copies it) and does not block.
func (m *Manager) finishDirect(ch *chainQ, r *Record, o *Outcome) {
	r.Status, r.End = o.Status, o.End
	if !o.Start.IsZero() {
		r.Start = o.Start
	}
	if o.Status < 400 {
		r.State = Succeeded
		ch.stats.Succeeded.Add(1)
	} else {
		r.State = Failed
		r.Error = errorText(result{status: o.Status, body: o.Body})
		ch.stats.Failed.Add(1)
	}
	if ch.wants(o.Status) {
		r.Steps = o.Steps
		kept := r.keepResult(o.Body, len(o.Body), ch.conf().ResultMax, string(o.ContentType))
		if m.store.Record(r, kept) == nil {
			ch.stats.Recorded.Add(1)
		}
	}
	if m.onDone != nil {
		m.onDone(r, o.Body)
	}
}

// schedule queues a after delay.
func (m *Manager) schedule(a *act, delay time.Duration) {
	if delay <= 0 {
		a.ch.app.push(a)
		m.wake()
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		m.mu.Lock()
		delete(m.timers, t)
		closed := m.closed
		m.mu.Unlock()
		if !closed {
			a.ch.app.push(a)
			m.wake()
		}
	})
	m.timers[t] = struct{}{}
}

// wake wakes the loop (it has outcomes to settle, or attempts to start).
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// complete hands an attempt's outcome to the loop (from the gateway's
// receive thread: it does not block).
func (m *Manager) complete(f outcomeOf) {
	m.doneMu.Lock()
	m.outcome = append(m.outcome, f)
	m.doneMu.Unlock()
	m.wake()
}

// loop settles outcomes and starts queued attempts while their apps have
// room, until the manager closes.
func (m *Manager) loop() {
	defer m.wg.Done()
	var batch []outcomeOf
	for {
		select {
		case <-m.kick:
		case <-m.ctx.Done():
			return
		}
		for {
			m.doneMu.Lock()
			batch, m.outcome = m.outcome, batch[:0]
			m.doneMu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i := range batch {
				f := &batch[i]
				m.settle(f.a, f.res)
				f.a.ch.app.release()
				*f = outcomeOf{}
			}
		}
		for _, q := range *m.appList.Load() {
			for a := q.next(); a != nil; a = q.next() {
				m.launch(a, nil, false)
			}
		}
	}
}

// result is an attempt's outcome, copied off the gateway's buffer.
type result struct {
	status int
	ctype  string
	body   []byte // up to ResultMax
	errMsg []byte // the start of the body of a failure (up to 512 bytes)
	size   int
	steps  []Step
	start  time.Time
	end    time.Time
}

// keepResult returns what r keeps of a result of size bytes whose first
// bytes are body (at most max of them), and sets r.Result to say so.
func (r *Record) keepResult(body []byte, size, max int, ctype string) []byte {
	kept := body[:min(len(body), max)]
	r.Result = ResultInfo{Size: size, Kept: len(kept), Truncated: len(kept) < size, ContentType: ctype}
	return kept
}

// resultOf copies what is kept of outcome o (up to keep bytes of its body;
// all of it when keep < 0).
func resultOf(o *Outcome, keep int) result {
	res := result{status: o.Status, ctype: string(o.ContentType), size: len(o.Body), steps: o.Steps, start: o.Start, end: o.End}
	if keep < 0 {
		keep = len(o.Body)
	}
	res.body = bytes.Clone(o.Body[:min(len(o.Body), keep)])
	if o.Status >= 400 && len(o.Body) > len(res.body) {
		res.errMsg = bytes.Clone(o.Body[:min(len(o.Body), maxErrText)])
	}
	return res
}

// launch starts an attempt of a (room for it taken; counted: the record
// already counts it as started): in held, the request it came in, or in a
// fresh pool buffer its body is copied into from the store. Its outcome
// goes to the loop.
func (m *Manager) launch(a *act, held Admitted, counted bool) {
	r := a.rec
	cfg := a.ch.conf()
	if !counted {
		if r.Attempts > 0 {
			a.ch.stats.Retries.Add(1)
		}
		m.mu.Lock()
		r.Attempts++
		r.State = Running
		r.Start = time.Now()
		r.Next = time.Time{}
		m.mu.Unlock()
		m.store.MarkStarted(r.ID, r.Attempts) // in order before the outcome's write
	}
	keep := cfg.ResultMax
	if r.Reply.Topic != "" {
		keep = -1 // the reply is the whole result; the record keeps ResultMax of it
	}
	done := func(o *Outcome) { m.complete(outcomeOf{a: a, res: resultOf(o, keep)}) }
	if held != nil {
		held.Dispatch(r, done)
		return
	}
	q := a.ch.app
	var err error
	if q.inv == nil {
		err = errors.New("no invoker")
	} else {
		err = q.inv.Invoke(r, func(dst []byte) (int, error) {
			n := 0
			err := m.store.ReadBody(r.ID, func(b []byte) {
				if len(b) <= len(dst) {
					n = copy(dst, b)
				} else {
					n = -1
				}
			})
			if err == nil && n < 0 {
				err = fmt.Errorf("activation %s: body of %d bytes is larger than a pool buffer", r.ID, r.Request.Size)
			}
			return n, err
		}, done)
	}
	if err != nil {
		// Not admitted: the app is at its in-flight bound (429), the pool
		// is exhausted (503): it can succeed later; a request the gateway
		// refuses as such (413, 431) cannot.
		status := http.StatusServiceUnavailable
		var st interface{ StatusCode() int }
		if errors.As(err, &st) {
			status = st.StatusCode()
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "spry: ") {
			msg = "spry: " + msg
		}
		res := result{status: status, body: []byte(msg), ctype: "text/plain; charset=utf-8", start: r.Start, end: time.Now()}
		res.size = len(res.body)
		m.complete(outcomeOf{a: a, res: res})
	}
}

// retryable reports whether an attempt that ended with status may succeed
// later: the chain failed (5xx: a step error, a crashed instance, a
// deadline, no instance) or the app was at its limits (429/503). A 4xx
// says the request itself is wrong; running it again cannot help.
func retryable(status int) bool { return status >= 500 || status == http.StatusTooManyRequests }

func (m *Manager) settle(a *act, res result) {
	r := a.rec
	cfg := a.ch.conf()
	// The fields Get's overlay reads change under m.mu.
	m.mu.Lock()
	r.Status = res.status
	if !res.start.IsZero() {
		r.Start = res.start
	}
	r.End = res.end
	if r.End.IsZero() {
		r.End = time.Now()
	}
	r.Steps = res.steps
	kept := r.keepResult(res.body, res.size, cfg.ResultMax, res.ctype) // res.body is all of it for a reply topic
	r.Error = ""
	retry := time.Duration(-1)
	switch {
	case res.status < 400:
		r.State = Succeeded
		a.ch.stats.Succeeded.Add(1)
	case !retryable(res.status):
		r.State = Failed
		r.Error = errorText(res)
		a.ch.stats.Failed.Add(1)
	default:
		r.Error = errorText(res)
		age := time.Since(r.Accepted)
		if r.Attempts < cfg.Attempts && age < cfg.MaxAge {
			r.State = Queued
			retry = backoff(cfg.Backoff, cfg.MaxBackoff, r.Attempts)
			r.Next = time.Now().Add(retry)
			break
		}
		r.State = Dead
		if r.Attempts >= cfg.Attempts {
			r.Error = fmt.Sprintf("dead after %d attempts: %s", r.Attempts, r.Error)
		} else {
			r.Error = fmt.Sprintf("dead: older than %s: %s", cfg.MaxAge, r.Error)
		}
		a.ch.stats.Dead.Add(1)
	}
	if retry < 0 {
		delete(m.active, r.ID)
	}
	m.mu.Unlock()
	if retry >= 0 {
		m.store.Save(r, kept, false)
		m.schedule(a, retry)
		return
	}
	a.ch.depth.Add(-1)
	rec := *r // the copy others may read from now on
	m.store.Save(&rec, kept, false)
	if m.onDone != nil {
		m.onDone(&rec, res.body)
	}
	if rec.Reply.Callback != "" {
		m.goCallback(&rec, kept)
	}
}

// maxErrText bounds the error text a record keeps.
const maxErrText = 512

func errorText(res result) string {
	msg := res.errMsg
	if msg == nil {
		msg = res.body
	}
	if len(msg) > maxErrText {
		msg = msg[:maxErrText]
	}
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 {
		return "status " + strconv.Itoa(res.status)
	}
	return fmt.Sprintf("status %d: %s", res.status, msg)
}

// backoff is the delay before attempt n+1: base·2^(n-1), capped, with
// jitter (between half and all of it) so retries of a burst spread out.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}

// NewID returns an id for an activation of app/chain with idempotency key
// (""): for a caller that must name the activation before Accept (the
// gateway writes it into the request's metadata).
func (m *Manager) NewID(app, chain, key string) string {
	return m.store.NewID(time.Now(), app, chain, key)
}

// Active reports whether activation id is unfinished on this node.
func (m *Manager) Active(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active[id] != nil
}

// Get returns activation id: its stored record, with the live state of
// an attempt in progress here (an attempt's start is not written to the
// record, only noted).
func (m *Manager) Get(id string) (*Record, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	r, err := m.store.Get(id)
	if err != nil {
		return nil, err
	}
	m.overlay(r)
	return r, nil
}

// overlay puts the live state of an unfinished activation into r.
func (m *Manager) overlay(r *Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.active[r.ID]; a != nil && a.rec.State == Running {
		r.State, r.Attempts, r.Start = Running, a.rec.Attempts, a.rec.Start
	}
}

// Result returns the kept result of activation id.
func (m *Manager) Result(id string) (*Record, []byte, error) {
	if err := CheckID(id); err != nil {
		return nil, nil, err
	}
	rec, err := m.store.Get(id)
	if err != nil {
		return nil, nil, err
	}
	b, err := m.store.Result(id)
	return rec, b, err
}

// List lists activations (see Store.List), with the live state of those
// running here.
func (m *Manager) List(f Filter) ([]*Record, string, error) {
	recs, next, err := m.store.List(f)
	for _, r := range recs {
		if !r.State.Terminal() {
			m.overlay(r)
		}
	}
	return recs, next, err
}

// Redrive runs dead (or failed) activations again, from a fresh count of
// attempts. It returns the ids it re-queued; ids that are not dead or
// failed, or whose chain this node does not run, are skipped with the
// reason in skipped.
func (m *Manager) Redrive(ids []string) (queued []string, skipped map[string]string, err error) {
	skipped = map[string]string{}
	for _, id := range ids {
		if err := CheckID(id); err != nil {
			skipped[id] = err.Error()
			continue
		}
		r, err := m.store.Get(id)
		if err != nil {
			skipped[id] = err.Error()
			continue
		}
		if r.State != Dead && r.State != Failed {
			skipped[id] = "it is " + string(r.State) + ", not dead or failed"
			continue
		}
		ch := m.chain(r.App + "/" + r.Chain)
		if ch == nil {
			skipped[id] = "this node does not run chain " + r.App + "/" + r.Chain
			continue
		}
		if ch.depth.Add(1) > int64(ch.conf().Queue) {
			ch.depth.Add(-1)
			skipped[id] = ErrQueueFull.Error()
			continue
		}
		m.mu.Lock()
		if m.active[id] != nil {
			m.mu.Unlock()
			ch.depth.Add(-1)
			skipped[id] = "already re-driven"
			continue
		}
		a := &act{rec: r, ch: ch}
		m.active[id] = a
		m.mu.Unlock()
		r.State, r.Attempts, r.Next, r.Error = Queued, 0, time.Time{}, ""
		r.Accepted = time.Now() // its age starts again
		r.Reply.CallbackStatus = 0
		if err := m.store.Save(r, nil, true); err != nil {
			m.mu.Lock()
			delete(m.active, id)
			m.mu.Unlock()
			ch.depth.Add(-1)
			return queued, skipped, err
		}
		ch.app.push(a)
		m.wake()
		queued = append(queued, id)
	}
	return queued, skipped, nil
}

// RecordSync records a synchronous request that ended with status, when
// the chain's record setting asks for it. It never blocks: a record the
// store cannot take at once is dropped and counted. The body is copied.
func (m *Manager) RecordSync(app, chain string, req Request, o *Outcome) {
	ch := m.chain(app + "/" + chain)
	if ch == nil || !ch.wants(o.Status) {
		return
	}
	now := time.Now()
	r := &Record{
		ID: NewID(o.Start), App: app, Chain: chain, Cause: Cause{Kind: CauseHTTP}, State: Succeeded,
		Status: o.Status, Accepted: o.Start, Start: o.Start, End: o.End, Steps: o.Steps, Attempts: 1, Request: req,
	}
	if r.End.IsZero() {
		r.End = now
	}
	body := r.keepResult(o.Body, len(o.Body), ch.conf().ResultMax, string(o.ContentType)) // the store copies it (newSave)
	if o.Status >= 400 {
		r.State = Failed
		r.Error = errorText(result{status: o.Status, body: o.Body})
	}
	if m.store.Record(r, body) == nil {
		ch.stats.Recorded.Add(1)
	}
}

// RecordsSync reports whether a synchronous request of the chain that
// ended with status is recorded: the gateway asks before it copies
// anything.
func (m *Manager) RecordsSync(app, chain string, status int) bool {
	ch := m.chain(app + "/" + chain)
	return ch != nil && ch.wants(status)
}

func (ch *chainQ) wants(status int) bool {
	switch ch.conf().Record {
	case RecordAll:
		return true
	case RecordNone:
		return false
	}
	return status >= 400
}

// ChainStatus is one chain's activation counters, for the admin API and
// /metrics.
type ChainStatus struct {
	App       string `json:"app"`
	Chain     string `json:"chain"`
	Depth     int64  `json:"queueDepth"` // unfinished activations (queued, running, waiting to retry)
	Queue     int    `json:"queueLimit"`
	Accepted  uint64 `json:"accepted"`
	Duplicate uint64 `json:"duplicates"`
	Rejected  uint64 `json:"rejected"`
	Succeeded uint64 `json:"succeeded"`
	Failed    uint64 `json:"failed"`
	Dead      uint64 `json:"dead"`
	Retries   uint64 `json:"retries"`
	Recorded  uint64 `json:"recorded"`
}

// Status returns every chain's counters.
func (m *Manager) Status() []ChainStatus {
	var out []ChainStatus
	for _, ch := range *m.chains.Load() {
		s := &ch.stats
		c := ch.conf()
		out = append(out, ChainStatus{
			App: c.App, Chain: c.Chain, Depth: ch.depth.Load(), Queue: c.Queue,
			Accepted: s.Accepted.Load(), Duplicate: s.Duplicate.Load(), Rejected: s.Rejected.Load(),
			Succeeded: s.Succeeded.Load(), Failed: s.Failed.Load(), Dead: s.Dead.Load(),
			Retries: s.Retries.Load(), Recorded: s.Recorded.Load(),
		})
	}
	return out
}

// Store returns the manager's store.
func (m *Manager) Store() *Store { return m.store }

// Callback headers.
const (
	HeaderActivationID = "X-Spry-Activation-Id"
	HeaderStatus       = "X-Spry-Status"
	HeaderState        = "X-Spry-State"
)

// callback POSTs the result of finished activation r to its callback URL,
// retried like an attempt (the chain's attempts, back-off and age), and
// records how it went. body nil: read the kept result from the store
// (after a restart).
func (m *Manager) goCallback(r *Record, body []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return // delivered after the next start
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.callback(r, body)
	}()
}

func (m *Manager) callback(r *Record, body []byte) {
	ch := m.chain(r.App + "/" + r.Chain)
	if ch == nil {
		return
	}
	if body == nil {
		body, _ = m.store.Result(r.ID)
	}
	cfg := ch.conf()
	status := -1
	for n := 1; ; n++ {
		req, err := http.NewRequestWithContext(m.ctx, http.MethodPost, r.Reply.Callback, bytes.NewReader(body))
		if err != nil {
			m.log.Warn("activation callback: bad URL", "id", r.ID, "url", r.Reply.Callback, "err", err)
			break
		}
		ct := r.Result.ContentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		req.Header.Set("Content-Type", ct)
		req.Header.Set(HeaderActivationID, r.ID)
		req.Header.Set(HeaderStatus, strconv.Itoa(r.Status))
		req.Header.Set(HeaderState, string(r.State))
		resp, err := m.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				status = resp.StatusCode
				break
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
			if !retryable(resp.StatusCode) {
				status = resp.StatusCode
				break
			}
		}
		if m.ctx.Err() != nil {
			return // shutting down: delivered after the restart
		}
		if n >= cfg.Attempts || time.Since(r.End) > cfg.MaxAge {
			m.log.Warn("activation callback: giving up", "id", r.ID, "url", r.Reply.Callback, "attempts", n, "err", err)
			break
		}
		select {
		case <-time.After(backoff(cfg.Backoff, cfg.MaxBackoff, n)):
		case <-m.ctx.Done():
			return
		}
	}
	rec := *r
	rec.Reply.CallbackStatus = status
	m.store.Save(&rec, nil, false)
}

// pruneLoop applies the retention bounds now and every minute.
func (m *Manager) pruneLoop() {
	defer m.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if n, err := m.store.Prune(func(app string) Retention { return m.retention[app] }, time.Now()); err != nil {
			m.log.Warn("activation store: prune", "err", err)
		} else if n > 0 {
			m.log.Info("activation store: pruned finished activations", "count", n)
		}
		select {
		case <-t.C:
		case <-m.ctx.Done():
			return
		}
	}
}
