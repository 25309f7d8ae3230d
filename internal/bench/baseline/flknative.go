package baseline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/spry-dev/spry/internal/fl"
	"github.com/spry-dev/spry/internal/mono"
)

// The serverless-without-shared-memory FL baseline: Spry's aggregation
// hierarchy built as Knative functions. Every level is an HTTP function
// behind its own sidecar, and every call between them goes through the
// broker:
//
//	client ─▶ broker ─▶ leaf sidecar ─▶ leaf   (the update, 3 socket hops)
//	leaf ─▶ broker ─▶ top sidecar ─▶ top       (admit, then commit: small)
//	top ─▶ broker ─▶ leaf sidecar ─▶ leaf      (at the round's end: each leaf's partial sum)
//	client ─▶ broker ─▶ top sidecar ─▶ top     (job, status, model)
//
// A leaf reads the update's body into its memory (the copy every hop
// makes) and folds it into its own partial sum with the same kernels as
// Spry; the top runs the round rules (fl.Round), and when a round's goal is
// met it pulls the partial sums of the leaves that folded updates, combines
// them into the model and opens the next round.
const (
	RoleFLLeaf = "fl-leaf"
	RoleFLTop  = "fl-top"
)

// Function names of the FL baseline at the broker: the top, and the leaves
// all together (the clients' updates, spread in turn) or one by one
// (FLLeafName(i), how the top pulls a leaf's partial sum).
const (
	FLTop    = "top"
	FLLeaves = "leaf"
)

// FLLeafName is leaf i's function name at the broker.
func FLLeafName(i int) string { return "leaf" + strconv.Itoa(i) }

func flHTTPError(w http.ResponseWriter, e *fl.Error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(e.Status)
	io.WriteString(w, "spry: "+e.Msg+"\n")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// leaf

type flLeaf struct {
	name   string
	broker string
	client *http.Client
	mu     sync.Mutex
	parts  map[string]*leafPartial // by job
}

type leafPartial struct {
	mu    sync.Mutex
	round int
	vec   []float32
	empty bool
}

func runFLLeaf(ctx context.Context, c *Config) error {
	l := &flLeaf{name: c.Function, broker: c.Broker, client: &http.Client{Transport: transport()}, parts: map[string]*leafPartial{}}
	mux := http.NewServeMux()
	mux.HandleFunc(fnPrefix+l.name+"/partial", l.partial)
	mux.HandleFunc("/", l.update)
	return serveHTTP(ctx, c.HTTP, mux)
}

// admitAnswer is what the top's /admit answers a leaf.
type admitAnswer struct {
	Ticket int `json:"ticket"`
	Params int `json:"params"`
}

func (l *flLeaf) call(ctx context.Context, path string, q url.Values, v any) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+l.broker+fnPrefix+FLTop+path+"?"+q.Encode(), http.NoBody)
	if err != nil {
		return 0, nil, err
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode == http.StatusOK && v != nil {
		err = json.Unmarshal(b, v)
	}
	return resp.StatusCode, b, err
}

// update: admit at the top, read the body, fold it, commit at the top,
// answer with the top's answer.
func (l *flLeaf) update(w http.ResponseWriter, r *http.Request) {
	job, kind, ok := fl.ParsePath(r.URL.Path)
	if !ok || kind != fl.PathUpdate || r.Method != http.MethodPost {
		http.Error(w, "spry: a leaf takes POST /fl/{job}/update", http.StatusNotFound)
		return
	}
	args, e := fl.ParseUpdate(r.URL.RawQuery)
	if e != nil {
		flHTTPError(w, e)
		return
	}
	// The body first, into a buffer of this process (the copy of this
	// hop): an update arrives when all of it is here.
	if r.ContentLength < 0 || r.ContentLength > fl.MaxParams*4 || r.ContentLength%4 != 0 {
		flHTTPError(w, &fl.Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf("an update's body is its model's float32s: %d bytes", r.ContentLength)})
		return
	}
	params := int(r.ContentLength / 4)
	bp, _ := updateBufs.Get().(*[]float32)
	if bp == nil || cap(*bp) < params {
		b := make([]float32, params)
		bp = &b
	}
	defer updateBufs.Put(bp)
	u := (*bp)[:params]
	if _, err := io.ReadFull(r.Body, fl.Bytes(u)); err != nil {
		http.Error(w, "spry: reading the update: "+err.Error(), http.StatusBadRequest)
		return
	}
	q := url.Values{"job": {job}, "round": {strconv.Itoa(args.Round)}, "client": {args.Client},
		"samples": {strconv.FormatFloat(args.Samples, 'g', -1, 64)}, "length": {strconv.FormatInt(r.ContentLength, 10)}}
	var adm admitAnswer
	st, body, err := l.call(r.Context(), "/admit", q, &adm)
	if err != nil {
		http.Error(w, "spry: leaf: admit: "+err.Error(), http.StatusBadGateway)
		return
	}
	if st != http.StatusOK {
		w.WriteHeader(st)
		w.Write(body)
		return
	}
	commit := url.Values{"job": {job}, "round": {strconv.Itoa(args.Round)}, "ticket": {strconv.Itoa(adm.Ticket)}, "leaf": {l.name}}
	l.mu.Lock()
	p := l.parts[job]
	if p == nil {
		p = &leafPartial{empty: true}
		l.parts[job] = p
	}
	l.mu.Unlock()
	p.mu.Lock()
	if p.round != args.Round || len(p.vec) != adm.Params {
		p.round, p.empty = args.Round, true
		if len(p.vec) != adm.Params {
			p.vec = make([]float32, adm.Params)
		}
	}
	var bad int
	if p.empty {
		bad, ok = fl.Store(p.vec, u, float32(args.Samples))
	} else {
		bad, ok = fl.Fold(p.vec, u, float32(args.Samples))
	}
	if ok {
		p.empty = false
	} else {
		commit.Set("bad", strconv.Itoa(bad))
		commit.Set("value", strconv.FormatFloat(float64(u[bad]), 'g', -1, 32))
	}
	p.mu.Unlock()
	st, body, err = l.call(r.Context(), "/commit", commit, nil)
	if err != nil {
		http.Error(w, "spry: leaf: commit: "+err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st)
	w.Write(body)
}

// partial answers the leaf's partial sum of a job's round, and forgets it.
func (l *flLeaf) partial(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	round, _ := strconv.Atoi(q.Get("round"))
	l.mu.Lock()
	p := l.parts[q.Get("job")]
	l.mu.Unlock()
	if p == nil {
		http.Error(w, "no partial sum", http.StatusNotFound)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.round != round || p.empty {
		http.Error(w, "no partial sum of that round", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(p.vec)*4))
	w.Write(fl.Bytes(p.vec))
	p.empty = true
}

// top

type flTop struct {
	broker string
	client *http.Client
	mu     sync.Mutex
	jobs   map[string]*topJob
}

type topJob struct {
	mu      sync.Mutex
	job     fl.Job
	round   *fl.Round
	leaves  map[string]int // leaf → its slot number in the round
	names   []string
	model   []float32
	prev    []float32
	results []fl.Result
	done    bool
	timer   *time.Timer
}

func runFLTop(ctx context.Context, c *Config) error {
	t := &flTop{broker: c.Broker, client: &http.Client{Transport: transport()}, jobs: map[string]*topJob{}}
	mux := http.NewServeMux()
	mux.HandleFunc(fnPrefix+FLTop+"/admit", t.admit)
	mux.HandleFunc(fnPrefix+FLTop+"/commit", t.commit)
	mux.HandleFunc("/", t.api)
	return serveHTTP(ctx, c.HTTP, mux)
}

func (t *flTop) job(id string) *topJob {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.jobs[id]
}

func noJob(id string) *fl.Error {
	return &fl.Error{Status: http.StatusNotFound, Msg: "no job " + id}
}

// api serves the clients' calls: the job, its status and its models.
func (t *flTop) api(w http.ResponseWriter, r *http.Request) {
	id, kind, ok := fl.ParsePath(r.URL.Path)
	if !ok {
		http.Error(w, "spry: no route", http.StatusNotFound)
		return
	}
	switch {
	case kind == fl.PathJob && r.Method == http.MethodPut:
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		job, err := fl.ParseJob(id, b)
		if err != nil {
			flHTTPError(w, &fl.Error{Status: http.StatusBadRequest, Msg: err.Error()})
			return
		}
		j := &topJob{job: job, leaves: map[string]int{}, model: make([]float32, job.Params)}
		j.round = fl.NewRound(&j.job, 1, mono.Now())
		t.mu.Lock()
		if t.jobs[id] != nil {
			t.mu.Unlock()
			flHTTPError(w, &fl.Error{Status: http.StatusConflict, Msg: "job " + id + " exists"})
			return
		}
		t.jobs[id] = j
		t.mu.Unlock()
		t.arm(j)
		writeJSON(w, http.StatusCreated, j.status())
	case kind == fl.PathJob && r.Method == http.MethodGet:
		j := t.job(id)
		if j == nil {
			flHTTPError(w, noJob(id))
			return
		}
		writeJSON(w, http.StatusOK, j.status())
	case kind == fl.PathJob && r.Method == http.MethodDelete:
		t.mu.Lock()
		j := t.jobs[id]
		delete(t.jobs, id)
		t.mu.Unlock()
		if j == nil {
			flHTTPError(w, noJob(id))
			return
		}
		j.mu.Lock()
		if j.timer != nil {
			j.timer.Stop()
		}
		j.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]string{})
	case kind == fl.PathModel && r.Method == http.MethodGet:
		j := t.job(id)
		if j == nil {
			flHTTPError(w, noJob(id))
			return
		}
		n, e := fl.ParseModelRound(r.URL.RawQuery)
		if e != nil {
			flHTTPError(w, e)
			return
		}
		j.mu.Lock()
		if r.URL.RawQuery == "" {
			n = len(j.results)
		}
		m, e := j.modelOf(n)
		j.mu.Unlock()
		if e != nil {
			flHTTPError(w, e)
			return
		}
		w.Header().Set(fl.RoundHeader, strconv.Itoa(n))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(m)*4))
		w.Write(fl.Bytes(m))
	default:
		http.Error(w, "spry: no route for "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	}
}

func (j *topJob) status() fl.Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	return fl.StatusOf(&j.job, j.round, j.done, j.results)
}

func (j *topJob) modelOf(n int) ([]float32, *fl.Error) {
	return fl.PickModel(&j.job, n, len(j.results), j.model, j.prev, j.round)
}

// admit runs the round rules for a leaf that got an update.
func (t *flTop) admit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	j := t.job(q.Get("job"))
	if j == nil {
		flHTTPError(w, noJob(q.Get("job")))
		return
	}
	n, _ := strconv.ParseInt(q.Get("length"), 10, 64)
	if e := fl.CheckLength(&j.job, n); e != nil {
		flHTTPError(w, e)
		return
	}
	round, _ := strconv.Atoi(q.Get("round"))
	samples, _ := strconv.ParseFloat(q.Get("samples"), 64)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.done {
		flHTTPError(w, &fl.Error{Status: http.StatusGone, Msg: fmt.Sprintf("job %s ran its %d rounds", j.job.ID, j.job.Rounds)})
		return
	}
	tk, e := j.round.Admit(q.Get("client"), round, samples, mono.Now())
	if e != nil {
		flHTTPError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, admitAnswer{Ticket: tk.Index, Params: j.job.Params})
}

// commit records a leaf's fold; when it meets the round's goal, the round's
// model is made before the answer.
func (t *flTop) commit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	j := t.job(q.Get("job"))
	if j == nil {
		flHTTPError(w, noJob(q.Get("job")))
		return
	}
	round, _ := strconv.Atoi(q.Get("round"))
	idx, _ := strconv.Atoi(q.Get("ticket"))
	tk := fl.Ticket{Round: round, Index: idx}
	leaf := q.Get("leaf")
	j.mu.Lock()
	defer j.mu.Unlock()
	if why := q.Get("lost"); why != "" {
		j.round.Lose(tk, why)
		w.WriteHeader(http.StatusOK)
		return
	}
	if bad := q.Get("bad"); bad != "" {
		j.round.Refused(tk)
		flHTTPError(w, &fl.Error{Status: http.StatusUnprocessableEntity, Msg: fmt.Sprintf("parameter %s is %s: an update must hold finite numbers; it is refused", bad, q.Get("value"))})
		return
	}
	slot, ok := j.leaves[leaf]
	if !ok {
		slot = len(j.names)
		j.leaves[leaf] = slot
		j.names = append(j.names, leaf)
	}
	if !j.round.Folded(tk, slot) {
		flHTTPError(w, &fl.Error{Status: http.StatusConflict, Msg: "ticket not pending"})
		return
	}
	_, folded := j.round.Counts()
	ack := fl.Ack{Round: round, Folded: folded, Goal: j.job.Updates, Partial: slot}
	if err := t.closeIfDue(j); err != nil {
		http.Error(w, "spry: top: "+err.Error(), http.StatusBadGateway)
		return
	}
	writeJSON(w, http.StatusOK, ack)
}

// closeIfDue pulls the leaves' partial sums through the broker when the
// round's goal is met, and makes the model. Called with j.mu held.
func (t *flTop) closeIfDue(j *topJob) error {
	if j.done || !j.round.Due(mono.Now()) {
		return nil
	}
	n := j.round.N()
	var slots []int
	for s := range j.names {
		if len(j.round.InSlot(s)) > 0 {
			slots = append(slots, s)
		}
	}
	parts := make([][]float32, len(slots))
	errs := make([]error, len(slots))
	var wg sync.WaitGroup
	for i, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			parts[i], errs[i] = t.pull(j, j.names[s], n)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			// The partial sum is gone: its updates are lost.
			j.round.LoseSlot(slots[i], "its leaf's partial sum could not be fetched: "+err.Error())
		}
	}
	if !j.round.Due(mono.Now()) {
		return nil // short of the goal again
	}
	var ok [][]float32
	for i, p := range parts {
		if errs[i] == nil {
			ok = append(ok, p)
		}
	}
	model := make([]float32, j.job.Params)
	fl.CombineParallel(model, ok, float32(1/j.round.Samples()), 0)
	j.prev, j.model = j.model, model
	j.results = append(j.results, j.round.Close(mono.Now()))
	clear(j.leaves)
	j.names = j.names[:0]
	if j.job.Rounds > 0 && n >= j.job.Rounds {
		j.done = true
		return nil
	}
	j.round = fl.NewRound(&j.job, n+1, mono.Now())
	t.armLocked(j)
	return nil
}

// pull fetches leaf's partial sum of round n through the broker.
func (t *flTop) pull(j *topJob, leaf string, n int) ([]float32, error) {
	resp, err := t.client.Get("http://" + t.broker + fnPrefix + leaf + "/partial?job=" + url.QueryEscape(j.job.ID) + "&round=" + strconv.Itoa(n))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%s: %d %s", leaf, resp.StatusCode, b)
	}
	v := make([]float32, j.job.Params)
	if _, err := io.ReadFull(resp.Body, fl.Bytes(v)); err != nil {
		return nil, err
	}
	return v, nil
}

func (t *flTop) arm(j *topJob) {
	j.mu.Lock()
	defer j.mu.Unlock()
	t.armLocked(j)
}

// armLocked sets the job's timer for the round's deadline (j.mu held).
func (t *flTop) armLocked(j *topJob) {
	if j.timer != nil {
		j.timer.Stop()
	}
	next := j.round.NextEvent()
	if next == 0 || j.done {
		return
	}
	j.timer = time.AfterFunc(max(time.Duration(next-mono.Now()), 0), func() {
		j.mu.Lock()
		defer j.mu.Unlock()
		t.closeIfDue(j)
	})
}
