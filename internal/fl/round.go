package fl

import (
	"fmt"
	"math"
	"time"
)

// Error is a refused request: the HTTP status and the reason, which
// clients get as the answer's body.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Ticket names one admitted update: its round and its index among the
// round's admissions.
type Ticket struct {
	Round int
	Index int
}

// Entry states.
const (
	statePending uint8 = iota // admitted, not folded yet
	stateFolded               // in a partial sum
	stateLost                 // admitted, then lost (its fold or its partial sum)
	stateRefused              // the fold refused it (a value not finite)
)

type entry struct {
	client  string
	samples float64
	state   uint8
	slot    int   // the partial sum it is in (folded)
	arrived int64 // when it was admitted
}

// Lost is an update that was admitted and then lost: its fold never
// happened, or the partial sum it was in was lost with the aggregator
// that was writing it. Its client may send it again in the same round.
type Lost struct {
	Client string `json:"client"`
	Why    string `json:"why"`
}

// Round is the state of one round of a job: who sent what, what is folded
// where, and whether the round's goal is met. It is a state machine with
// no clock and no I/O of its own: the caller passes the time (any
// monotonic nanoseconds), so every aggregator of Spry and of the
// baselines runs the very same rules:
//
//   - an update for an earlier round is a straggler: 410, never folded into
//     this one; one for a later round is 409;
//   - a client sends at most one update a round (409 for the second),
//     unless its first was lost or refused;
//   - the round admits at most its goal's count of updates (410 past it);
//     it closes when that many are folded, or at its deadline with those
//     folded (at least MinUpdates; until then it admits more);
//   - an update whose fold or partial sum is lost is taken out of the round
//     (its client may send it again) and listed in Lost: a round's result
//     never counts an update the model does not hold.
type Round struct {
	job     *Job
	n       int
	opened  int64
	sealed  bool
	late    bool           // the deadline passed (and sealed it)
	clients map[string]int // client → its live entry (pending or folded)
	entries []entry
	pending int
	folded  int
	samples float64
	lost    []Lost
	last    int64 // when the last update folded was admitted
}

// NewRound opens round n of job at now.
func NewRound(job *Job, n int, now int64) *Round {
	return &Round{job: job, n: n, opened: now, clients: map[string]int{}}
}

// N returns the round's number (from 1).
func (r *Round) N() int { return r.n }

// Opened returns when the round opened.
func (r *Round) Opened() int64 { return r.opened }

// Counts returns the updates admitted and not yet folded, and those folded.
func (r *Round) Counts() (pending, folded int) { return r.pending, r.folded }

// Samples returns the sum of the folded updates' sample counts: the
// divisor of the weighted mean.
func (r *Round) Samples() float64 { return r.samples }

// LostUpdates returns the updates lost so far this round.
func (r *Round) LostUpdates() []Lost { return r.lost }

// Sealed reports whether the round admits no more updates.
func (r *Round) Sealed() bool { return r.sealed }

// deadline returns when the round's deadline passes (0: none).
func (r *Round) deadline() int64 {
	if r.job.Deadline == 0 {
		return 0
	}
	return r.opened + int64(r.job.Deadline)
}

// Admit admits client's update of samples samples for round at now, or
// refuses it with the reason. The caller checks the payload (its length)
// before; values that are not finite are the fold's to find (Refused).
func (r *Round) Admit(client string, round int, samples float64, now int64) (Ticket, *Error) {
	switch {
	case client == "" || len(client) > MaxClientID:
		return Ticket{}, errorf(statusBadRequest, "client: want an id of 1..%d bytes (?client=ID)", MaxClientID)
	case !(samples > 0) || samples > 1e15 || math.IsInf(samples, 0):
		return Ticket{}, errorf(statusBadRequest, "samples: want the number of examples the update was trained on, > 0 (?samples=N)")
	case round < r.n:
		return Ticket{}, errorf(statusGone, "round %d is closed: the job is in round %d (a straggler's update is never folded into a later round; fetch model %d and train on it)", round, r.n, r.n-1)
	case round > r.n:
		return Ticket{}, errorf(statusConflict, "round %d is not open: the job is in round %d", round, r.n)
	}
	if i, dup := r.clients[client]; dup {
		what := "is being folded"
		if r.entries[i].state == stateFolded {
			what = "is folded"
		}
		return Ticket{}, errorf(statusConflict, "client %s already sent an update in round %d (it %s); one update per client a round", client, r.n, what)
	}
	admitted := r.pending + r.folded
	if d := r.deadline(); d != 0 && now >= d && admitted >= r.job.MinUpdates {
		r.sealed, r.late = true, true
	}
	if r.job.Updates > 0 && admitted >= r.job.Updates {
		r.sealed = true
		return Ticket{}, errorf(statusGone, "round %d is full: it has its %d updates (send your update in round %d)", r.n, r.job.Updates, r.n+1)
	}
	if r.sealed {
		return Ticket{}, errorf(statusGone, "round %d is closed: its deadline (%v) passed (send your update in round %d)", r.n, time.Duration(r.job.Deadline), r.n+1)
	}
	if len(r.entries) >= MaxRoundUpdates {
		return Ticket{}, errorf(statusGone, "round %d took the most updates a round takes (%d)", r.n, MaxRoundUpdates)
	}
	r.entries = append(r.entries, entry{client: client, samples: samples, arrived: now, slot: -1})
	i := len(r.entries) - 1
	r.clients[client] = i
	r.pending++
	return Ticket{Round: r.n, Index: i}, nil
}

func (r *Round) entry(t Ticket) *entry {
	if t.Round != r.n || t.Index < 0 || t.Index >= len(r.entries) {
		return nil
	}
	return &r.entries[t.Index]
}

// Pending reports whether t is admitted and not yet folded, lost or
// refused.
func (r *Round) Pending(t Ticket) bool {
	e := r.entry(t)
	return e != nil && e.state == statePending
}

// Folded records that t's update was folded into partial sum slot. It
// reports false when t is not pending (already settled, or of another
// round).
func (r *Round) Folded(t Ticket, slot int) bool {
	e := r.entry(t)
	if e == nil || e.state != statePending {
		return false
	}
	e.state, e.slot = stateFolded, slot
	r.pending--
	r.folded++
	r.samples += e.samples
	r.last = max(r.last, e.arrived)
	return true
}

// Refused records that the fold refused t's update (a value not finite):
// it is out of the round, and its client may send a corrected one.
func (r *Round) Refused(t Ticket) bool {
	e := r.entry(t)
	if e == nil || e.state != statePending {
		return false
	}
	e.state = stateRefused
	r.pending--
	delete(r.clients, e.client)
	return true
}

// Lose takes t's update out of the round, pending or folded, and lists it
// in LostUpdates with why.
func (r *Round) Lose(t Ticket, why string) bool {
	e := r.entry(t)
	if e == nil {
		return false
	}
	switch e.state {
	case statePending:
		r.pending--
	case stateFolded:
		r.folded--
		r.samples -= e.samples
	default:
		return false
	}
	e.state = stateLost
	delete(r.clients, e.client)
	r.lost = append(r.lost, Lost{Client: e.client, Why: why})
	admitted := r.pending + r.folded
	if !r.late && r.job.Updates > 0 && admitted < r.job.Updates {
		r.sealed = false // room again for the goal's count
	}
	if r.late && admitted < r.job.MinUpdates {
		r.sealed = false // past the deadline, but short of MinUpdates again
	}
	return true
}

// LoseSlot takes every update folded into partial sum slot out of the
// round (the sum was lost), each listed with why. It returns how many.
func (r *Round) LoseSlot(slot int, why string) int {
	n := 0
	for i := range r.entries {
		if e := &r.entries[i]; e.state == stateFolded && e.slot == slot {
			r.Lose(Ticket{r.n, i}, why)
			n++
		}
	}
	return n
}

// Live returns client's live update in the round (pending or folded).
func (r *Round) Live(client string) (t Ticket, pending, ok bool) {
	i, ok := r.clients[client]
	if !ok {
		return Ticket{}, false, false
	}
	return Ticket{r.n, i}, r.entries[i].state == statePending, true
}

// IsFolded reports whether t's update is folded (in the round's model, once
// it closes).
func (r *Round) IsFolded(t Ticket) bool {
	e := r.entry(t)
	return e != nil && e.state == stateFolded
}

// InSlot returns the tickets folded into slot.
func (r *Round) InSlot(slot int) []Ticket {
	var out []Ticket
	for i := range r.entries {
		if e := &r.entries[i]; e.state == stateFolded && e.slot == slot {
			out = append(out, Ticket{r.n, i})
		}
	}
	return out
}

// PendingTickets returns the updates admitted and not yet folded, with
// when each was admitted.
func (r *Round) PendingTickets() (ts []Ticket, arrived []int64) {
	for i := range r.entries {
		if e := &r.entries[i]; e.state == statePending {
			ts = append(ts, Ticket{r.n, i})
			arrived = append(arrived, e.arrived)
		}
	}
	return ts, arrived
}

// Weight returns the sample count of t's update.
func (r *Round) Weight(t Ticket) float64 {
	if e := r.entry(t); e != nil {
		return e.samples
	}
	return 0
}

// Client returns t's client.
func (r *Round) Client(t Ticket) string {
	if e := r.entry(t); e != nil {
		return e.client
	}
	return ""
}

// Due reports whether the round's goal is met at now, and so whether its
// partial sums make its model: its count of updates folded, or its
// deadline passed with at least MinUpdates folded; either way with no fold
// still pending. Past the deadline it seals the round.
func (r *Round) Due(now int64) bool {
	if d := r.deadline(); d != 0 && now >= d && r.pending+r.folded >= r.job.MinUpdates {
		r.sealed, r.late = true, true
	}
	if r.pending > 0 {
		return false
	}
	if r.job.Updates > 0 && r.folded >= r.job.Updates {
		return true
	}
	return r.sealed && r.folded >= r.job.MinUpdates
}

// Seal admits no more updates in the round (it is being closed).
func (r *Round) Seal() { r.sealed = true }

// NextEvent returns when Due may next change by the clock alone: the
// deadline, or 0.
func (r *Round) NextEvent() int64 {
	if r.sealed {
		return 0
	}
	return r.deadline()
}

// Result is a closed round, as the status reports it.
type Result struct {
	Round   int     `json:"round"`
	Updates int     `json:"updates"`
	Samples float64 `json:"samples"`
	Lost    []Lost  `json:"lost,omitempty"`
	// Times in monotonic nanoseconds of the node (CLOCK_MONOTONIC, shared
	// by every process on the machine): the round opened, the last update
	// folded was admitted, the model was ready.
	OpenedNs int64 `json:"openedNs"`
	LastNs   int64 `json:"lastNs"`
	ReadyNs  int64 `json:"readyNs"`
	// Partials is how many partial sums the model was combined from.
	Partials int `json:"partials"`
	// Leaves is the most leaf aggregators the control plane's plan asked
	// for during the round (control.PlanAggregation; 0 where no plan).
	Leaves int `json:"leaves,omitempty"`
}

// Close returns the round's result, its model ready at now.
func (r *Round) Close(now int64) Result {
	r.sealed = true
	return Result{Round: r.n, Updates: r.folded, Samples: r.samples, Lost: r.lost,
		OpenedNs: r.opened, LastNs: r.last, ReadyNs: now}
}
