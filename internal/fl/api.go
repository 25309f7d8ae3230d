package fl

import (
	"strconv"
	"strings"
)

// The HTTP interface of an aggregation app (Spry's, and the Knative-style
// baseline's, which answer alike):
//
//	PUT    /fl/{job}                         create the job (JSON: Job)       → 201 Status
//	GET    /fl/{job}                         the job's state                  → 200 Status
//	DELETE /fl/{job}                         end the job, drop its models     → 200
//	POST   /fl/{job}/model                   the initial model (round 0; only before round 1 has updates)
//	GET    /fl/{job}/model[?round=R]         the model of round R (default: the latest) → float32s, Spry-Round: R
//	POST   /fl/{job}/update?round=R&client=C&samples=N
//	                                         an update: the body is the Params float32s, little-endian → 200 Ack

// RoundHeader is the response header that names the round of a model.
const RoundHeader = "Spry-Round"

// Path kinds.
const (
	PathJob    = iota // /fl/{job}
	PathUpdate        // /fl/{job}/update
	PathModel         // /fl/{job}/model
)

// ParsePath splits /fl/{job}[/update|/model] (a prefix before /fl/, as a
// broker's, is skipped). ok is false for anything else.
func ParsePath(path string) (job string, kind int, ok bool) {
	i := strings.Index(path, "/fl/")
	if i < 0 {
		return "", 0, false
	}
	rest := path[i+len("/fl/"):]
	job, tail, _ := strings.Cut(rest, "/")
	if !ValidJobID(job) {
		return "", 0, false
	}
	switch tail {
	case "":
		if strings.HasSuffix(rest, "/") {
			return "", 0, false
		}
		return job, PathJob, true
	case "update":
		return job, PathUpdate, true
	case "model":
		return job, PathModel, true
	}
	return "", 0, false
}

// UpdateArgs are an update's query parameters.
type UpdateArgs struct {
	Round   int
	Client  string // a view of the query: copy it to keep it
	Samples float64
}

// ParseUpdate reads round=R&client=C&samples=N (in any order, nothing
// else) without allocating. A client id is 1..128 of A-Z a-z 0-9 . _ : -
// (nothing to unescape).
func ParseUpdate(query string) (UpdateArgs, *Error) {
	var a UpdateArgs
	var have [3]bool
	for q := query; q != ""; {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "round":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return a, errorf(statusBadRequest, "round=%.20q: want the round's number, from 1", v)
			}
			a.Round, have[0] = n, true
		case "client":
			if !validClient(v) {
				return a, errorf(statusBadRequest, "client=%.40q: want 1..%d of A-Z a-z 0-9 . _ : -", v, MaxClientID)
			}
			a.Client, have[1] = v, true
		case "samples":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f > 0) || f > 1e15 {
				return a, errorf(statusBadRequest, "samples=%.20q: want the number of examples the update was trained on, > 0", v)
			}
			a.Samples, have[2] = f, true
		case "":
		default:
			return a, errorf(statusBadRequest, "unknown query parameter %.40q (an update takes round, client, samples)", k)
		}
	}
	for i, name := range [...]string{"round", "client", "samples"} {
		if !have[i] {
			return a, errorf(statusBadRequest, "an update needs ?round=R&client=ID&samples=N: %s is missing", name)
		}
	}
	return a, nil
}

func validClient(s string) bool {
	if len(s) < 1 || len(s) > MaxClientID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// ParseModelRound reads the model request's ?round=R (0: the latest).
func ParseModelRound(query string) (int, *Error) {
	if query == "" {
		return 0, nil
	}
	v, ok := strings.CutPrefix(query, "round=")
	n, err := strconv.Atoi(v)
	if !ok || err != nil || n < 0 {
		return 0, errorf(statusBadRequest, "%.40q: a model request takes ?round=R (R >= 0), or nothing for the latest", query)
	}
	return n, nil
}

// CheckLength checks an update's size against its job's model.
func CheckLength(job *Job, n int64) *Error {
	if n != job.Bytes() {
		return errorf(statusBadRequest, "the update has %d bytes; job %s's model has %d parameters: %d bytes of little-endian float32", n, job.ID, job.Params, job.Bytes())
	}
	return nil
}
