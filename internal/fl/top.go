package fl

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spry-dev/spry/internal/control"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/sdkhook"
	"github.com/spry-dev/spry/sdk"
)

// Top is the fl-top builtin: the top aggregator and the jobs' state. It
// runs at three places of the app's chains:
//
//	update chain, step 0: admits an update (the round rules) and lends it
//	                      a place in the job's round table for the leaf;
//	update chain, step 2: commits the leaf's fold, and when the round's
//	                      goal is met combines the partial sums into the
//	                      round's model before it answers;
//	job and model chains: creates, reports and deletes jobs, and serves
//	                      models (zero-copy: the answer reads the model
//	                      where it lies).
//
// One instance holds every job (scale max 1); a ticker in its process
// closes rounds at their deadline and finds updates lost with a leaf that
// died.
func Top(req *sdk.Request, res *sdk.Response) error {
	theTop.once.Do(theTop.init)
	return theTop.serve(req, res)
}

var theTop top

type top struct {
	once  sync.Once
	mu    sync.Mutex
	jobs  map[string]*topJob
	p     *pool.Pool
	self  uint16
	timer *time.Timer // the next sweep: a deadline, a ttl, or soon while folds are pending
	// maxTTL bounds a job's ttl: the top's own idle period.
	maxTTL time.Duration
	// keep counts the jobs as the instance's work in progress (see
	// sdkhook.Keeper): while it holds one, the node neither takes its
	// buffers for lost nor scales it to zero.
	keep func(delta int)
	// demand asks the control plane for leaf aggregators (see
	// sdkhook.Demand), for function leafFn (the update chain's step 1,
	// known from the first update; -1 before).
	demand func(fn uint16, n int)
	leafFn int
	// saver keeps the jobs in the state directory (EnvStateDir; nil:
	// none); restored once the first request gives the top its pool.
	saver    *saver
	restored sync.Once
}

// EnvMaxTTL names the environment variable that bounds a job's ttl (the
// fl-top function's scale.idle).
const EnvMaxTTL = "FL_MAX_TTL"

func (t *top) init() {
	t.jobs = map[string]*topJob{}
	t.leafFn = -1
	t.maxTTL = 24 * time.Hour
	if d, err := time.ParseDuration(os.Getenv(EnvMaxTTL)); err == nil && d > 0 {
		t.maxTTL = d
	}
	t.timer = time.AfterFunc(time.Hour, t.sweep)
	t.timer.Stop()
	t.saver = newSaver(os.Getenv(EnvStateDir))
}

// sweepEvery is how often the top looks for lost updates while folds are
// pending.
const sweepEvery = 50 * time.Millisecond

// rearm sets the timer for the next sweep: while updates are being folded,
// every sweepEvery (to find those lost with a leaf); else at the next
// round deadline or job ttl; with neither, never: an idle top costs no
// CPU. Called with mu held.
func (t *top) rearm() {
	now := mono.Now()
	var next int64
	soonest := func(at int64) {
		if at != 0 && (next == 0 || at < next) {
			next = at
		}
	}
	for _, j := range t.jobs {
		soonest(j.used + int64(j.job.TTL))
		if j.done {
			continue
		}
		soonest(j.round.NextEvent())
		if p, _ := j.round.Counts(); p > 0 || j.round.Sealed() {
			soonest(now + int64(sweepEvery))
		}
	}
	if next == 0 {
		t.timer.Stop()
		return
	}
	t.timer.Reset(max(time.Duration(next-now), time.Millisecond))
}

// shared is a buffer the top keeps shared, with its own token.
type shared struct {
	idx, gen, tok uint32
	live          bool
}

type topJob struct {
	job     Job
	round   *Round
	prev    *Round // the round before (its commits may come after it closed)
	table   shared
	tbl     *table
	slots   []shared // the partial sums
	models  [2]shared
	mround  [2]int // their rounds; models[0] is the latest
	results []Result
	dl      []int64 // by ticket: the request's deadline (mono ns)
	done    bool
	used    int64 // the last request (mono ns), for the ttl

	// The load the hierarchy is planned from (control.PlanAggregation):
	// this round's admissions, the rounds before's arrival rate (per
	// second), a leaf's fold time (seconds) and the combine's rate
	// (bytes/s), the last two from measurements.
	first, last int64
	admits      int
	rate        float64
	foldS       float64
	combineBps  float64
	plan        control.AggregationPlan
	maxLeaves   int // the most leaves planned in the round

	// restarted: when a new top restored the job (saver), and the round
	// of the model it went on from.
	restarted    string
	restartModel int
}

var (
	errPoolFull = &Error{Status: statusServiceUnavailable, Msg: "the pool has no room for this job's buffers now (pool.memory): try again"}
	errNoLend   = &Error{Status: statusBadGateway, Msg: "fl-top: the commit step got no lend (the update chain must be [fl-top, fl-leaf, fl-top])"}
)

// share allocates a buffer of n bytes and shares it, keeping a token.
func (t *top) share(n int) (shared, *Error) {
	p := t.p
	idx, ok := p.Alloc(t.self)
	if !ok {
		return shared{}, errPoolFull
	}
	if err := p.Reserve(idx, uint64(n), false); err != nil {
		p.Free(idx, t.self)
		if errors.Is(err, pool.ErrNoRoom) {
			return shared{}, errPoolFull
		}
		return shared{}, &Error{Status: statusRequestEntityTooLarge, Msg: fmt.Sprintf("a buffer of %d bytes: %v (pool.memory)", n, err)}
	}
	gen := p.Header(idx).Gen()
	tok, ok := p.Token(idx, t.self, 0)
	if !ok {
		p.Free(idx, t.self)
		return shared{}, errPoolFull
	}
	if !p.Publish(idx, t.self, 1) {
		p.Free(tok, t.self)
		p.Free(idx, t.self)
		return shared{}, errPoolFull
	}
	return shared{idx: idx, gen: gen, tok: tok, live: true}, nil
}

// drop gives up the top's token: the buffer goes once its readers do.
func (t *top) drop(s shared) {
	if s.live {
		t.p.Free(s.tok, t.self)
	}
}

func (t *top) floats(s shared, n int) []float32 {
	f, _ := Floats(t.p.Data(s.idx))
	return f[:n]
}

func (t *top) serve(req *sdk.Request, res *sdk.Response) error {
	p, self, _ := sdkhook.Pool(req)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.p, t.self = p, self
	if t.keep == nil {
		t.keep = sdkhook.Keeper(req)
		t.demand = sdkhook.Demand(req)
	}
	t.restored.Do(t.restore)
	if t.leafFn < 0 {
		t.leafFn = leafOf(req)
	}
	defer t.rearm()
	id, kind, ok := ParsePath(req.Path())
	if !ok {
		return fail(res, &Error{Status: statusNotFound, Msg: "no such FL route: want /fl/{job}, /fl/{job}/update, /fl/{job}/model"})
	}
	now := mono.Now()
	j := t.jobs[id]
	if j != nil {
		j.used = now
	}
	switch {
	case kind == PathUpdate && req.Hop() == 0:
		return t.admit(req, res, id, j, now)
	case kind == PathUpdate:
		return t.commit(req, res, j, now)
	case kind == PathJob && req.Method() == methodPut:
		return t.create(req, res, id, j, now)
	}
	if j == nil {
		return fail(res, &Error{Status: statusNotFound, Msg: "no job " + id})
	}
	switch {
	case kind == PathJob && (req.Method() == methodGet || req.Method() == methodHead):
		return answerJSON(res, statusOK, j.status())
	case kind == PathJob && req.Method() == methodDelete:
		t.remove(id, j)
		return answerJSON(res, statusOK, map[string]string{"deleted": id})
	case kind == PathModel && (req.Method() == methodGet || req.Method() == methodHead):
		return t.model(req, res, j)
	case kind == PathModel && req.Method() == methodPost:
		return t.initModel(req, res, j)
	}
	return fail(res, &Error{Status: statusMethodNotAllowed, Msg: req.Method() + " is not an FL operation on " + req.Path()})
}

func fail(res *sdk.Response, e *Error) error {
	if e.Status == statusServiceUnavailable {
		res.SetHeader("Retry-After", "1")
	}
	return sdk.Errorf(e.Status, "%s", e.Msg)
}

func answerJSON(res *sdk.Response, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	res.SetStatus(status)
	res.SetContentType("application/json")
	_, err = res.Write(append(b, '\n'))
	return err
}

// create makes a job: its round table and its round-0 model (zeros).
func (t *top) create(req *sdk.Request, res *sdk.Response, id string, j *topJob, now int64) error {
	id = strings.Clone(id) // a view of the request's metadata until now
	job, err := ParseJob(id, req.Payload())
	if err != nil {
		return fail(res, &Error{Status: statusBadRequest, Msg: err.Error()})
	}
	var set struct{ TTL *Duration }
	if json.Unmarshal(req.Payload(), &set) == nil && set.TTL == nil && time.Duration(job.TTL) > t.maxTTL {
		job.TTL = Duration(t.maxTTL) // the default, no longer than the top lives
	}
	if time.Duration(job.TTL) > t.maxTTL {
		return fail(res, &Error{Status: statusBadRequest, Msg: fmt.Sprintf("job %s: ttl: %v, at most %v (fl-top's scale.idle: the top must outlive its jobs)", id, time.Duration(job.TTL), t.maxTTL)})
	}
	if j != nil {
		return fail(res, &Error{Status: statusConflict, Msg: "job " + id + " exists (DELETE it first)"})
	}
	j, e := t.newJob(job, now)
	if e != nil {
		return fail(res, e)
	}
	t.add(id, j)
	t.save(j)
	return answerJSON(res, statusCreated, j.status())
}

// newJob makes a job's round table and its round-0 model (zeros), round 1
// open.
func (t *top) newJob(job Job, now int64) (*topJob, *Error) {
	j := &topJob{job: job, used: now}
	var e *Error
	if j.table, e = t.share(TableBytes); e != nil {
		return nil, e
	}
	tbl, ok := tableOf(t.p.Data(j.table.idx))
	if !ok {
		t.drop(j.table)
		return nil, &Error{Status: statusInternalServerError, Msg: "fl-top: the round table is not 8-byte aligned in the pool"}
	}
	clear(t.p.Data(j.table.idx)[:TableBytes])
	j.tbl = tbl
	if j.models[0], e = t.share(int(job.Bytes())); e != nil {
		t.drop(j.table)
		return nil, e
	}
	clear(t.floats(j.models[0], job.Params))
	tbl.params.Store(uint32(job.Params))
	j.round = NewRound(&j.job, 1, now)
	tbl.round.Store(1)
	tbl.magic.Store(tableMagic)
	return j, nil
}

// add makes j the job called id. Called with mu held.
func (t *top) add(id string, j *topJob) {
	t.jobs[id] = j
	if len(t.jobs) == 1 {
		t.keep(1)
	}
	j.plan = control.PlanAggregation(control.AggregationLoad{Bytes: j.job.Bytes(), Goal: j.job.Updates})
	t.ask()
}

// remove drops a job: the top's tokens go, and each buffer with its last
// reader (a leaf still folding keeps its sum until it is done).
func (t *top) remove(id string, j *topJob) {
	delete(t.jobs, id)
	if len(t.jobs) == 0 {
		t.keep(-1)
	}
	defer t.ask()
	t.forget(id)
	j.tbl.sealed.Store(1)
	j.tbl.magic.Store(0)
	for _, s := range j.slots {
		t.drop(s)
	}
	t.drop(j.models[0])
	if j.mround[1] != j.mround[0] {
		t.drop(j.models[1])
	}
	t.drop(j.table)
}

func (j *topJob) status() Status {
	st := StatusOf(&j.job, j.round, j.done, j.results)
	st.Partials = len(j.slots)
	if !j.done {
		st.Leaves, st.Plan = j.plan.Leaves, j.plan.String()
	}
	if j.restarted != "" {
		st.Restarted = fmt.Sprintf("the top aggregator restarted at %s: the job went on from the model of round %d; updates of round %d sent before then are gone (send them again)", j.restarted, j.restartModel, j.restartModel+1)
	}
	return st
}

// load is what the hierarchy of job j is planned from: the arrival rate
// of its updates (this round's once it has a few, else the rounds
// before's), their size, the round's goal, the measured fold and combine
// times, and the bounds: the cores, the leaf function's slots, the pool's
// room for partial sums.
func (t *top) load(j *topJob, now int64) control.AggregationLoad {
	l := control.AggregationLoad{Bytes: j.job.Bytes(), Goal: j.job.Updates, Rate: j.rate,
		Fold: time.Duration(j.foldS * 1e9), CombineRate: j.combineBps, Cores: runtime.NumCPU()}
	if j.admits >= 4 || (j.admits >= 2 && j.rate == 0) {
		if d := float64(max(now, j.last)-j.first) / 1e9; d > 0 {
			l.Rate = float64(j.admits-1) / d
		}
	}
	if l.Goal == 0 && len(j.results) > 0 {
		l.Goal = j.results[len(j.results)-1].Updates
	}
	if t.leafFn >= 0 {
		_, n := t.p.FunctionSlots(uint32(t.leafFn))
		l.MaxLeaves = int(n)
	}
	// Room: what the pool's large-payload region has free, and the sums
	// the job has; less a model and an update.
	free := int64(t.p.ExtentBytes()) - int64(t.p.ExtentUsed())
	l.Room = max(free+int64(len(j.slots)-2)*l.Bytes, l.Bytes)
	return l
}

// leafOf finds the leaf aggregators' function from the app's chains: step
// 1 of the update chain, the one whose steps are [top, leaf, top] (the top
// is the function running req); -1 when the app has none. Known from any
// request, so a job's leaves are asked for when it is made, before its
// first update.
func leafOf(req *sdk.Request) int {
	p, _, buf := sdkhook.Pool(req)
	me, ok := p.Step(p.Header(buf).Chain(), req.Hop())
	if !ok {
		return -1
	}
	for c := range uint16(min(p.Layout().Chains, pool.MaxChains)) {
		if p.Steps(c) != 3 {
			continue
		}
		first, _ := p.Step(c, 0)
		leaf, _ := p.Step(c, 1)
		last, _ := p.Step(c, 2)
		if first == me && last == me && leaf != me {
			return int(leaf)
		}
	}
	return -1
}

// ask tells the control plane how many leaf aggregators the jobs want:
// the sum of their plans, none without a job (the leaves then go to zero
// after their idle period). Called with mu held.
func (t *top) ask() {
	if t.demand == nil || t.leafFn < 0 {
		return
	}
	n := 0
	for _, j := range t.jobs {
		if !j.done {
			n += j.plan.Leaves
		}
	}
	t.demand(uint16(t.leafFn), n)
}

// admit is step 0 of an update: the round rules, then a lend.
func (t *top) admit(req *sdk.Request, res *sdk.Response, id string, j *topJob, now int64) error {
	if j == nil {
		return fail(res, &Error{Status: statusNotFound, Msg: "no job " + id})
	}
	args, e := ParseUpdate(req.Query())
	if e != nil {
		return fail(res, e)
	}
	if e := CheckLength(&j.job, int64(req.Len())); e != nil {
		return fail(res, e)
	}
	if j.done {
		return fail(res, &Error{Status: statusGone, Msg: fmt.Sprintf("job %s ran its %d rounds", j.job.ID, j.job.Rounds)})
	}
	if e := t.supersede(j, args.Client, args.Round); e != nil {
		return fail(res, e)
	}
	tk, e := j.round.Admit(string([]byte(args.Client)), args.Round, args.Samples, now)
	if e != nil {
		return fail(res, e)
	}
	// The hierarchy: the control plane's plan from the job's load (the
	// arrival rate and size of its updates, control.PlanAggregation):
	// that many leaves, each folding into a partial sum of its own.
	if j.admits == 0 {
		j.first = now
	}
	j.admits++
	j.last = now
	j.plan = control.PlanAggregation(t.load(j, now))
	j.maxLeaves = max(j.maxLeaves, j.plan.Leaves)
	t.ask()
	want := min(j.plan.Leaves, MaxPartials)
	for len(j.slots) < want {
		s, e := t.share(int(j.job.Bytes()))
		if e != nil {
			if len(j.slots) > 0 {
				break // fewer sums: folds wait for one
			}
			j.round.Refused(tk)
			return fail(res, e)
		}
		i := len(j.slots)
		h := &j.tbl.slots[i]
		h.acc.Store(s.idx)
		h.accGen.Store(s.gen)
		h.reset(j.round.N())
		j.slots = append(j.slots, s)
		// Ordering: the slot is whole before leaves see it counted.
		j.tbl.nslots.Store(uint32(len(j.slots)))
	}
	for len(j.dl) <= tk.Index {
		j.dl = append(j.dl, 0)
	}
	j.dl[tk.Index] = now + int64(min(req.Remaining(), time.Hour))
	j.tbl.claims[tk.Index].Store(0)
	_, _, buf := sdkhook.Pool(req)
	var b [lendBytes]byte
	l := lend{table: j.table.idx, tableGen: j.table.gen, round: tk.Round, ticket: tk.Index, samples: args.Samples, params: j.job.Params}
	if !t.p.Header(buf).SetStepData(l.put(&b)) {
		j.round.Refused(tk)
		return fail(res, &Error{Status: statusRequestHeaderFieldsTooLarge, Msg: "the request's metadata has no room for the aggregator's lend (fewer forwarded headers)"})
	}
	return nil // the update goes on, unchanged, to a leaf
}

// revoked is the claim of an update that no leaf may fold any more (its
// client sent it again): no process has pid 1 but init.
const revoked = 1

// supersede makes room for a client that sends its update for round
// again while the one it sent before is still pending: its request ended
// without an answer from the top (the gateway answered it: a leaf died
// with it, its deadline passed), so the client sent it again. When no leaf
// has taken the earlier one yet, its claim is revoked (a leaf that gets it
// later does not fold it) and it is lost, so the new one is admitted;
// when a live leaf is folding it, the client is told so (409). Called
// with mu held.
func (t *top) supersede(j *topJob, client string, round int) *Error {
	old, pending, ok := j.round.Live(client)
	if !ok || !pending || round != j.round.N() {
		return nil
	}
	c := &j.tbl.claims[old.Index]
	if c.CompareAndSwap(0, revoked) {
		j.round.Lose(old, "its client sent it again before a leaf took it")
		return nil
	}
	if pid := int(c.Load()); pid != revoked && !alive(pid) {
		t.settle(j) // its leaf died: folded whole, or lost
		return nil
	}
	return &Error{Status: statusConflict, Msg: fmt.Sprintf("client %s's update of round %d is being folded now (send it again only if that fails)", client, round)}
}

// commit is step 2 of an update: the leaf's record.
func (t *top) commit(req *sdk.Request, res *sdk.Response, j *topJob, now int64) error {
	p, _, buf := sdkhook.Pool(req)
	l, ok := lendOf(p.Header(buf).StepData())
	if !ok {
		return fail(res, errNoLend)
	}
	rec, ok := recordOf(req.Payload())
	if !ok {
		return fail(res, &Error{Status: statusBadGateway, Msg: "fl-top: the leaf's answer is not a fold record"})
	}
	if j == nil || j.table.idx != l.table || j.table.gen != l.tableGen {
		return fail(res, &Error{Status: statusGone, Msg: "the job was deleted while the update was being folded"})
	}
	tk := Ticket{Round: l.round, Index: l.ticket}
	if j.prev != nil && l.round == j.prev.N() && rec.outcome == outFolded && j.prev.IsFolded(tk) {
		// The sweep found the fold (its bit) and the round closed with it
		// before this commit came: it is in that round's model.
		return answerJSON(res, statusOK, Ack{Round: tk.Round, Folded: j.prev.folded, Goal: j.job.Updates, Partial: rec.slot})
	}
	if l.round != j.round.N() {
		return fail(res, &Error{Status: statusGone, Msg: fmt.Sprintf("round %d closed before the update was folded (send it in round %d)", l.round, j.round.N())})
	}
	switch rec.outcome {
	case outFolded:
		if rec.value > 0 && rec.value < 3600 {
			j.foldS = ewma(j.foldS, float64(rec.value)+hopCost.Seconds())
		}
		// Folded is false when the sweep saw the update's bit first.
		if !j.round.Folded(tk, rec.slot) && !j.foldedIn(tk, rec.slot) {
			return fail(res, &Error{Status: statusGone, Msg: "the update was lost: " + j.lostWhy(tk) + " (send it again)"})
		}
	case outRefused:
		j.round.Refused(tk)
		if rec.bad < 0 {
			return fail(res, &Error{Status: statusBadRequest, Msg: fmt.Sprintf("the leaf read %d bytes of update, want %d: little-endian float32s", int(rec.value), j.job.Bytes())})
		}
		return fail(res, refusedErr(rec.bad, rec.value, l.samples))
	case outLate:
		j.round.Lose(tk, "its request's deadline passed before a leaf folded it")
		return fail(res, &Error{Status: statusGatewayTimeout, Msg: "the request's deadline passed before the update was folded (send it again)"})
	case outBusy:
		j.round.Lose(tk, "no partial sum came free before its deadline")
		return fail(res, &Error{Status: statusServiceUnavailable, Msg: "the aggregators were busy until the request's deadline (send it again)"})
	case outTaken:
		// Another leaf took it (this one came from a redelivery): the
		// table says what became of it.
		t.settle(j)
		switch {
		case j.folded(tk):
		case j.round.Pending(tk):
			return fail(res, &Error{Status: statusConflict, Msg: "the update is being folded by another leaf aggregator"})
		default:
			return fail(res, &Error{Status: statusGone, Msg: "the update was lost: " + j.lostWhy(tk) + " (send it again)"})
		}
	case outClosed:
		j.round.Lose(tk, "the round closed before a leaf folded it")
		return fail(res, &Error{Status: statusGone, Msg: fmt.Sprintf("round %d closed before the update was folded", l.round)})
	default:
		j.round.Lose(tk, "the job's table was gone")
		return fail(res, &Error{Status: statusGone, Msg: "the job was deleted while the update was being folded"})
	}
	_, folded := j.round.Counts()
	ack := Ack{Round: tk.Round, Folded: folded, Goal: j.job.Updates, Partial: rec.slot}
	if e := t.closeIfDue(j, now); e != nil {
		return fail(res, e)
	}
	return answerJSON(res, statusOK, ack)
}

func (j *topJob) foldedIn(tk Ticket, slot int) bool {
	for _, x := range j.round.InSlot(slot) {
		if x == tk {
			return true
		}
	}
	return false
}

func (j *topJob) folded(tk Ticket) bool {
	for i := range j.slots {
		if j.foldedIn(tk, i) {
			return true
		}
	}
	return false
}

func (j *topJob) lostWhy(tk Ticket) string {
	c := j.round.Client(tk)
	for _, l := range j.round.LostUpdates() {
		if l.Client == c {
			return l.Why
		}
	}
	return "it is not in the round"
}

// model answers a model: a token that reads it where it lies, so the
// gateway writes the answer straight from the shared buffer. When the
// model has every reader it can at once (pool.MaxShare clients fetching
// it now), a small one is copied; a large one is answered 503 with
// Retry-After: the fetch is over in a moment, and a copy of a model per
// client is what the app is built not to make.
func (t *top) model(req *sdk.Request, res *sdk.Response, j *topJob) error {
	n, e := ParseModelRound(req.Query())
	if e != nil {
		return fail(res, e)
	}
	latest := len(j.results)
	if req.Query() == "" {
		n = latest
	}
	var m shared
	switch {
	case n == j.mround[0] && n == latest:
		m = j.models[0]
	case n == latest-1 && j.mround[1] == n && latest > 0:
		m = j.models[1]
	default:
		_, e := PickModel(&j.job, n, latest, nil, nil, j.round)
		if e == nil {
			e = &Error{Status: statusGone, Msg: fmt.Sprintf("the model of round %d is no longer kept", n)}
		}
		return fail(res, e)
	}
	res.SetHeader(RoundHeader, strconv.Itoa(n))
	res.SetContentType("application/octet-stream")
	if tok, ok := t.p.Pin(m.idx, m.gen, t.self); ok {
		sdkhook.SetOutput(res, tok)
		return nil
	}
	if j.job.Bytes() > copyModelBelow {
		return fail(res, &Error{Status: statusServiceUnavailable, Msg: fmt.Sprintf("the model is being sent to %d clients at once: fetch it again in a moment", pool.MaxShare)})
	}
	out, err := res.Alloc(int(j.job.Bytes()))
	if err != nil {
		return err
	}
	copy(out, t.p.Data(m.idx))
	return nil
}

// copyModelBelow is the largest model answered by a copy when it cannot be
// pinned.
const copyModelBelow = 1 << 20

// initModel sets the model of round 0 (before any update of round 1).
func (t *top) initModel(req *sdk.Request, res *sdk.Response, j *topJob) error {
	if p, f := j.round.Counts(); len(j.results) > 0 || p+f > 0 {
		return fail(res, &Error{Status: statusConflict, Msg: "the initial model can be set only before round 1 has updates"})
	}
	if e := CheckLength(&j.job, int64(req.Len())); e != nil {
		return fail(res, e)
	}
	u, ok := Floats(req.Payload())
	if !ok {
		return fail(res, &Error{Status: statusBadRequest, Msg: "the model could not be read as little-endian float32s"})
	}
	for i, f := range u {
		if !finite(f) {
			return fail(res, &Error{Status: statusUnprocessableEntity, Msg: fmt.Sprintf("parameter %d is %v: a model must hold finite numbers", i, f)})
		}
	}
	copy(t.floats(j.models[0], j.job.Params), u)
	t.save(j)
	return answerJSON(res, statusOK, j.status())
}

// closeIfDue makes the round's model once its goal is met, and opens the
// next round. Called with mu held.
func (t *top) closeIfDue(j *topJob, now int64) *Error {
	if j.done || !j.round.Due(now) {
		return nil
	}
	tbl := j.tbl
	// Seal, then wait for the locks: a fold that took its lock before the
	// seal finishes; one after it sees the seal and backs off (leaf.go).
	tbl.sealed.Store(1)
	for {
		busy := false
		for i := range j.slots {
			if w := tbl.slots[i].lock.Load(); w != 0 {
				if _, pid := lockOf(w); !alive(pid) {
					t.reap(j, i, w)
					continue
				}
				busy = true
			}
		}
		if !busy {
			break
		}
		t.mu.Unlock()
		time.Sleep(100 * time.Microsecond)
		t.mu.Lock()
		if t.jobs[j.job.ID] != j {
			return nil // deleted meanwhile
		}
	}
	t.settle(j)
	if !j.round.Due(mono.Now()) {
		tbl.sealed.Store(0) // a sum was lost: the round needs more updates
		return nil
	}
	// Every slot's bits are what the round says it holds.
	var parts [][]float32
	used := 0
	for i := range j.slots {
		h := &tbl.slots[i]
		in := j.round.InSlot(i)
		n := 0
		for k := range h.bits {
			n += popcount(h.bits[k].Load())
		}
		if n != len(in) || (len(in) > 0 && h.empty.Load() != 0) {
			j.round.LoseSlot(i, "its partial sum does not hold what the round counts (a torn fold)")
			h.reset(j.round.N())
			continue
		}
		if len(in) > 0 {
			parts = append(parts, t.floats(j.slots[i], j.job.Params))
			used++
		}
	}
	if !j.round.Due(mono.Now()) {
		tbl.sealed.Store(0)
		return nil
	}
	// The model: into the older model's buffer when no client still reads
	// it, else a fresh one.
	old := j.models[1]
	var m shared
	if j.mround[1] != j.mround[0] && t.p.Readers(old.idx, old.gen) == 1 {
		m = old
	} else {
		var e *Error
		if m, e = t.share(int(j.job.Bytes())); e != nil {
			tbl.sealed.Store(0)
			return e
		}
		if j.mround[1] != j.mround[0] {
			t.drop(old)
		}
	}
	c0 := mono.Now()
	CombineParallel(t.floats(m, j.job.Params), parts, float32(1/j.round.Samples()), 0)
	if d := mono.Now() - c0; used > 0 && d > 0 {
		j.combineBps = ewma(j.combineBps, float64(used)*float64(j.job.Bytes())/(float64(d)/1e9))
	}
	r := j.round.Close(mono.Now())
	r.Partials = used
	r.Leaves = j.maxLeaves
	// The round's arrival rate, for the next round's plan until it
	// measures its own.
	if j.admits >= 2 && j.last > j.first {
		j.rate = ewma(j.rate, float64(j.admits-1)/(float64(j.last-j.first)/1e9))
	}
	j.admits, j.maxLeaves = 0, 0
	j.results = append(j.results, r)
	j.models[1], j.mround[1] = j.models[0], j.mround[0]
	j.models[0], j.mround[0] = m, r.Round
	if j.job.Rounds > 0 && r.Round >= j.job.Rounds {
		j.done = true
		t.ask()
		for _, s := range j.slots {
			t.drop(s)
		}
		j.slots = nil
		tbl.nslots.Store(0)
		t.save(j)
		return nil
	}
	n := r.Round + 1
	j.prev = j.round
	j.round = NewRound(&j.job, n, mono.Now())
	// The next round's plan, from the rounds before: partial sums it
	// does not want go (leaves hold none: every lock is free here).
	j.plan = control.PlanAggregation(t.load(j, mono.Now()))
	t.ask()
	if k := max(j.plan.Leaves, 1); k < len(j.slots) {
		tbl.nslots.Store(uint32(k))
		for _, s := range j.slots[k:] {
			t.drop(s)
		}
		j.slots = j.slots[:k]
	}
	for i := range j.slots {
		tbl.slots[i].reset(n)
	}
	for i := range j.dl {
		tbl.claims[i].Store(0)
	}
	j.dl = j.dl[:0]
	// Ordering: the slots are reset before the round opens to leaves.
	tbl.round.Store(uint32(n))
	tbl.sealed.Store(0)
	t.save(j)
	return nil
}

func popcount(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	if pid <= revoked || pid > 1<<22 { // pid_max is at most 2^22
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// reap handles slot i locked by a process that died (lock word w): when
// the ticket it folded has its bit, the fold was whole and the lock is
// just let go; otherwise the sum is torn: every update in it is lost and
// the slot starts empty. Called with mu held.
func (t *top) reap(j *topJob, i int, w uint64) {
	h := &j.tbl.slots[i]
	ticket, pid := lockOf(w)
	if !h.has(ticket) {
		why := fmt.Sprintf("the leaf aggregator folding it (pid %d) died mid-fold, and the partial sum it was in with it", pid)
		j.round.LoseSlot(i, why)
		if tk := (Ticket{j.round.N(), ticket}); j.round.Pending(tk) {
			j.round.Lose(tk, fmt.Sprintf("the leaf aggregator folding it (pid %d) died mid-fold", pid))
		}
		h.reset(j.round.N())
	}
	h.lock.CompareAndSwap(w, 0)
}

// settle brings the round up to date with the table: updates whose bits
// are set are folded (their commit may never come: the leaf died after
// its fold), pending ones whose leaf died before folding, or whose
// deadline passed with no fold, are lost. Called with mu held.
func (t *top) settle(j *topJob) {
	tbl := j.tbl
	for i := range j.slots {
		if w := tbl.slots[i].lock.Load(); w != 0 {
			if _, pid := lockOf(w); !alive(pid) {
				t.reap(j, i, w)
			}
		}
	}
	now := mono.Now()
	ts, _ := j.round.PendingTickets()
	for _, tk := range ts {
		folded := false
		for i := range j.slots {
			if tbl.slots[i].has(tk.Index) {
				j.round.Folded(tk, i)
				folded = true
				break
			}
		}
		if folded {
			continue
		}
		locked := false
		for i := range j.slots {
			if w := tbl.slots[i].lock.Load(); w != 0 {
				if ticket, _ := lockOf(w); ticket == tk.Index {
					locked = true
				}
			}
		}
		if locked {
			continue
		}
		if pid := int(tbl.claims[tk.Index].Load()); pid != 0 && !alive(pid) {
			j.round.Lose(tk, fmt.Sprintf("the leaf aggregator that took it (pid %d) died before folding it", pid))
			continue
		}
		if tk.Index < len(j.dl) && j.dl[tk.Index] != 0 && now > j.dl[tk.Index] {
			j.round.Lose(tk, "its request's deadline passed before a leaf folded it")
		}
	}
}

// sweep runs when rearm said: rounds whose deadline passed close, updates
// lost with a leaf are found, idle jobs past their ttl go.
func (t *top) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.rearm()
	now := mono.Now()
	for id, j := range t.jobs {
		if now-j.used > int64(j.job.TTL) {
			t.remove(id, j)
			continue
		}
		if j.done {
			continue
		}
		if p, _ := j.round.Counts(); p > 0 {
			t.settle(j)
		}
		t.closeIfDue(j, now)
	}
}

// hopCost is what a fold's request costs besides the leaf's own time: its
// hops from the top and back.
const hopCost = 100 * time.Microsecond

// ewma is a moving average of measurements (the first one as it is).
func ewma(avg, x float64) float64 {
	if avg == 0 {
		return x
	}
	return 0.7*avg + 0.3*x
}
