package fl

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Limits of a job.
const (
	// MaxParams is the largest model: 64M float32 parameters (256 MiB, the
	// largest payload a Spry pool takes in one piece).
	MaxParams = 64 << 20
	// MaxRoundUpdates bounds the updates admitted in one round (the
	// attribution bitmaps of the shared-memory round table are this
	// many bits per partial sum).
	MaxRoundUpdates = 8192
	// MaxClientID is the longest client id.
	MaxClientID = 128
)

// Job describes one federated training job: the model's size, when a round
// ends, and how many rounds it runs. It is what PUT /fl/{job} takes, as
// JSON:
//
//	{"params": 11700000, "updates": 100, "deadline": "30s", "rounds": 50}
type Job struct {
	ID     string `json:"id"`
	Params int    `json:"params"` // float32 parameters of the model
	// Updates is the round's goal by count: the round closes once this many
	// updates are folded. 0: no count goal (Deadline must be set).
	Updates int `json:"updates,omitempty"`
	// Deadline is the round's goal by time, from its opening: past it the
	// round admits no more updates and closes with those folded (at least
	// MinUpdates). 0: none (Updates must be set).
	Deadline Duration `json:"deadline,omitempty"`
	// MinUpdates is the fewest updates a round closing at its deadline
	// needs; with fewer it stays open for them (default 1).
	MinUpdates int `json:"minUpdates,omitempty"`
	// Rounds is how many rounds the job runs (0: until deleted).
	Rounds int `json:"rounds,omitempty"`
	// TTL: a job that gets no request for this long is dropped with its
	// models (default 10m).
	TTL Duration `json:"ttl,omitempty"`
}

// Duration is a time.Duration that reads and writes as a Go duration
// string ("30s").
type Duration time.Duration

// MarshalJSON writes d as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "30s" (or a number of nanoseconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if json.Unmarshal(b, &n) != nil {
			return fmt.Errorf("want a duration like \"30s\"")
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration like \"30s\": %v", err)
	}
	*d = Duration(v)
	return nil
}

// DefaultTTL is how long an idle job lives.
const DefaultTTL = 10 * time.Minute

// ValidJobID reports whether id names a job: 1..64 of [A-Za-z0-9._-],
// starting with a letter or digit.
func ValidJobID(id string) bool {
	// By hand, not with a regexp compiled at start-up: this package is in
	// the builtin runner, and every instance of every builtin would pay
	// for the compilation (~0.2 ms).
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// ParseJob reads a job's JSON, fills its defaults and checks it, returning
// every problem (as a 400's message).
func ParseJob(id string, b []byte) (Job, error) {
	var j Job
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return j, fmt.Errorf("job %s: %v (want JSON like {\"params\": 1000, \"updates\": 10, \"deadline\": \"30s\"})", id, err)
	}
	if j.ID != "" && j.ID != id {
		return j, fmt.Errorf("job %s: the body names job %q", id, j.ID)
	}
	j.ID = id
	return j, j.Validate()
}

// Validate fills defaults and checks j.
func (j *Job) Validate() error {
	var p []string
	if !ValidJobID(j.ID) {
		p = append(p, fmt.Sprintf("id %q: want 1..64 of A-Z a-z 0-9 . _ -", j.ID))
	}
	if j.Params < 1 || j.Params > MaxParams {
		p = append(p, fmt.Sprintf("params: %d, want 1..%d", j.Params, MaxParams))
	}
	if j.Updates < 0 || j.Updates > MaxRoundUpdates {
		p = append(p, fmt.Sprintf("updates: %d, want 0..%d", j.Updates, MaxRoundUpdates))
	}
	if j.Deadline < 0 {
		p = append(p, fmt.Sprintf("deadline: %v, want > 0", time.Duration(j.Deadline)))
	}
	if j.Updates == 0 && j.Deadline == 0 {
		p = append(p, "a round needs a goal: updates (a count), deadline, or both")
	}
	if j.MinUpdates == 0 {
		j.MinUpdates = 1
	}
	if j.MinUpdates < 1 || j.MinUpdates > MaxRoundUpdates || (j.Updates > 0 && j.MinUpdates > j.Updates) {
		p = append(p, fmt.Sprintf("minUpdates: %d, want 1..updates", j.MinUpdates))
	}
	if j.Rounds < 0 {
		p = append(p, fmt.Sprintf("rounds: %d, want >= 0 (0: until deleted)", j.Rounds))
	}
	if j.TTL == 0 {
		j.TTL = Duration(DefaultTTL)
	}
	if j.TTL < Duration(time.Second) {
		p = append(p, fmt.Sprintf("ttl: %v, want >= 1s", time.Duration(j.TTL)))
	}
	if len(p) > 0 {
		return fmt.Errorf("job %s: %s", j.ID, strings.Join(p, "; "))
	}
	return nil
}

// Bytes is the size of the job's model and of each update: 4 bytes a
// parameter.
func (j *Job) Bytes() int64 { return int64(j.Params) * 4 }
