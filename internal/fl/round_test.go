package fl

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func job(t *testing.T, j Job) *Job {
	t.Helper()
	if j.ID == "" {
		j.ID = "j"
	}
	if err := j.Validate(); err != nil {
		t.Fatal(err)
	}
	return &j
}

func wantErr(t *testing.T, err *Error, status int, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("admitted, want %d %q", status, substr)
	}
	if err.Status != status || !strings.Contains(err.Msg, substr) {
		t.Fatalf("got %d %q, want %d containing %q", err.Status, err.Msg, status, substr)
	}
}

// TestRoundByCount: the goal by count admits that many, refuses more (410),
// refuses duplicates (409), stragglers (410) and future rounds (409), and
// is due once all are folded.
func TestRoundByCount(t *testing.T) {
	j := job(t, Job{Params: 4, Updates: 3})
	r := NewRound(j, 2, 0)
	var ts []Ticket
	for i, c := range []string{"a", "b", "c"} {
		tk, err := r.Admit(c, 2, float64(i+1), int64(i))
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tk)
	}
	_, err := r.Admit("d", 2, 1, 5)
	wantErr(t, err, http.StatusGone, "round 2 is full")
	_, err = r.Admit("a", 2, 1, 5)
	wantErr(t, err, http.StatusConflict, "client a already sent an update in round 2")
	_, err = r.Admit("z", 1, 1, 5)
	wantErr(t, err, http.StatusGone, "round 1 is closed")
	_, err = r.Admit("z", 3, 1, 5)
	wantErr(t, err, http.StatusConflict, "round 3 is not open")
	_, err = r.Admit("", 2, 1, 5)
	wantErr(t, err, http.StatusBadRequest, "client")
	_, err = r.Admit("y", 2, 0, 5)
	wantErr(t, err, http.StatusBadRequest, "samples")
	if r.Due(10) {
		t.Fatal("due with folds pending")
	}
	r.Folded(ts[0], 0)
	r.Folded(ts[1], 1)
	if r.Due(10) {
		t.Fatal("due with one fold pending")
	}
	if r.Folded(ts[0], 0) {
		t.Fatal("folded twice")
	}
	r.Folded(ts[2], 0)
	if !r.Due(10) {
		t.Fatal("not due with the goal folded")
	}
	res := r.Close(20)
	if res.Updates != 3 || res.Samples != 6 || res.LastNs != 2 || res.ReadyNs != 20 {
		t.Fatalf("result %+v", res)
	}
}

// TestRoundByDeadline: past its deadline the round closes with what is
// folded (refusing later updates with 410), once no fold is pending; with
// fewer than minUpdates it stays open for them.
func TestRoundByDeadline(t *testing.T) {
	sec := int64(time.Second)
	j := job(t, Job{Params: 4, Deadline: Duration(time.Second), MinUpdates: 2})
	r := NewRound(j, 1, 0)
	a, _ := r.Admit("a", 1, 1, 0)
	if r.Due(2 * sec) {
		t.Fatal("due with one update of two minimum")
	}
	b, err := r.Admit("b", 1, 1, 2*sec) // past the deadline, but short of minUpdates
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Admit("c", 1, 1, 2*sec)
	wantErr(t, err, http.StatusGone, "deadline")
	r.Folded(a, 0)
	if r.Due(2 * sec) {
		t.Fatal("due with a fold pending")
	}
	r.Folded(b, 0)
	if !r.Due(2 * sec) {
		t.Fatal("not due past the deadline with minUpdates folded")
	}
	if got := r.NextEvent(); got != 0 {
		t.Fatalf("sealed round's next event %d", got)
	}
	// A deadline and a count: whichever comes first.
	j2 := job(t, Job{Params: 4, Updates: 2, Deadline: Duration(time.Second)})
	r2 := NewRound(j2, 1, 0)
	if got := r2.NextEvent(); got != sec {
		t.Fatalf("next event %d, want the deadline", got)
	}
	x, _ := r2.Admit("x", 1, 1, 0)
	r2.Folded(x, 0)
	if r2.Due(sec - 1) {
		t.Fatal("due before the deadline with 1 of 2")
	}
	if !r2.Due(sec) {
		t.Fatal("not due at the deadline")
	}
}

// TestRoundLost: a lost update (pending, or folded in a lost partial sum)
// leaves the round, is listed, frees its client to send again, and
// reopens a full round for the goal.
func TestRoundLost(t *testing.T) {
	j := job(t, Job{Params: 4, Updates: 3})
	r := NewRound(j, 1, 0)
	a, _ := r.Admit("a", 1, 2, 0)
	b, _ := r.Admit("b", 1, 3, 0)
	c, _ := r.Admit("c", 1, 4, 0)
	r.Folded(a, 7)
	r.Folded(b, 7)
	_, err := r.Admit("d", 1, 1, 0)
	wantErr(t, err, http.StatusGone, "full")
	if n := r.LoseSlot(7, "leaf died"); n != 2 {
		t.Fatalf("LoseSlot took %d updates, want 2", n)
	}
	r.Lose(c, "fold never came back")
	if p, f := r.Counts(); p != 0 || f != 0 || r.Samples() != 0 {
		t.Fatalf("after the losses: pending %d folded %d samples %v", p, f, r.Samples())
	}
	if got := r.LostUpdates(); len(got) != 3 || got[0].Client != "a" || got[2].Why != "fold never came back" {
		t.Fatalf("lost %+v", got)
	}
	if r.Due(0) {
		t.Fatal("due with nothing folded")
	}
	a2, err := r.Admit("a", 1, 2, 1) // its client sends again
	if err != nil {
		t.Fatal(err)
	}
	r.Folded(a2, 1)
	if r.Lose(a, "again") {
		t.Fatal("lost a settled ticket twice")
	}
	// Refused: out of the round, may send a corrected one.
	d, _ := r.Admit("d", 1, 1, 1)
	r.Refused(d)
	if _, err := r.Admit("d", 1, 1, 1); err != nil {
		t.Fatalf("a refused client's corrected update: %v", err)
	}
}

// TestJobValidate: defaults and every problem named.
func TestJobValidate(t *testing.T) {
	j, err := ParseJob("m1", []byte(`{"params": 10, "updates": 5}`))
	if err != nil {
		t.Fatal(err)
	}
	if j.MinUpdates != 1 || time.Duration(j.TTL) != DefaultTTL {
		t.Fatalf("defaults: %+v", j)
	}
	for _, c := range []struct{ id, body, want string }{
		{"m", `{"params": 0, "updates": 1}`, "params: 0"},
		{"m", `{"params": 1}`, "needs a goal"},
		{"m", `{"params": 1, "updates": 2, "minUpdates": 3}`, "minUpdates"},
		{"m", `{"params": 1, "updates": 2, "colour": 3}`, "unknown field"},
		{"m", `{"params": 1, "deadline": "soon"}`, "duration"},
		{"bad id!", `{"params": 1, "updates": 1}`, "id"},
		{"m", `{"id": "other", "params": 1, "updates": 1}`, "names job"},
		{"m", `[1]`, "want JSON"},
	} {
		if _, err := ParseJob(c.id, []byte(c.body)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseJob(%q, %s) = %v, want an error with %q", c.id, c.body, err, c.want)
		}
	}
}
