package activation

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"time"
)

// State is where an activation is in its life.
type State string

// States. Queued and Running are pending: the node owes the activation an
// answer. Succeeded, Failed and Dead are terminal.
const (
	Queued    State = "queued"    // accepted, waiting for its (next) attempt
	Running   State = "running"   // an attempt is in the chain
	Succeeded State = "succeeded" // the chain answered below 400
	Failed    State = "failed"    // the chain answered 4xx (retrying cannot help), or a sync request failed
	Dead      State = "dead"      // every attempt failed, or it grew too old; redrive runs it again
)

// States lists every state, in order of life.
var States = []State{Queued, Running, Succeeded, Failed, Dead}

// Terminal reports whether s is a final state.
func (s State) Terminal() bool { return s == Succeeded || s == Failed || s == Dead }

// Valid reports whether s is one of the states.
func (s State) Valid() bool {
	for _, x := range States {
		if s == x {
			return true
		}
	}
	return false
}

// Cause kinds: what made an activation.
const (
	CauseHTTP       = "http"       // a synchronous request (recorded by the chain's record setting)
	CauseAsync      = "async"      // Prefer: respond-async, or POST /v1/chains/{chain}/invocations
	CauseMQTT       = "mqtt"       // a PUBLISH on a trigger's topic
	CauseCloudEvent = "cloudevent" // a CloudEvent, on a chain's route or the node's event endpoint
	CauseCron       = "cron"       // a cron or every: trigger firing
)

// Cause is what made an activation: its kind and, for triggers, the
// trigger's name.
type Cause struct {
	Kind    string `json:"kind"`
	Trigger string `json:"trigger,omitempty"`
}

// Step is one step of an attempt, timed from the buffer header.
type Step struct {
	Function string  `json:"function"`
	Micros   float64 `json:"us"` // how long its handler ran
}

// Request is what an attempt sends into the chain: the body is kept
// beside the record, the rest here, so a retry after a restart sends the
// same request.
type Request struct {
	Method      string      `json:"method"`
	Path        string      `json:"path"`
	Query       string      `json:"query,omitempty"`
	ContentType string      `json:"contentType,omitempty"`
	Headers     [][2]string `json:"headers,omitempty"` // forwarded headers, in order
	Size        int         `json:"size"`              // body bytes
}

// Reply says where the result goes besides the record: an MQTT topic
// (with the v5 correlation data), or a callback URL.
type Reply struct {
	Broker      string `json:"broker,omitempty"` // "" the node's own
	Topic       string `json:"topic,omitempty"`
	Correlation []byte `json:"correlation,omitempty"`
	QoS         byte   `json:"qos,omitempty"`
	Callback    string `json:"callback,omitempty"`
	// CallbackStatus is the status the callback URL answered with (0:
	// not delivered yet, -1: gave up).
	CallbackStatus int `json:"callbackStatus,omitempty"`
}

// Record is one activation: an invocation of a chain and everything known
// about it.
type Record struct {
	ID       string            `json:"id"`
	App      string            `json:"app"`
	Chain    string            `json:"chain"`
	Cause    Cause             `json:"cause"`
	State    State             `json:"state"`
	Status   int               `json:"status,omitempty"` // the last attempt's HTTP status
	Accepted time.Time         `json:"accepted"`
	Start    time.Time         `json:"start,omitzero"` // the last attempt's start
	End      time.Time         `json:"end,omitzero"`   // when it reached its state
	Next     time.Time         `json:"next,omitzero"`  // a queued retry's due time
	Steps    []Step            `json:"steps,omitempty"`
	Attempts int               `json:"attempts"`
	Error    string            `json:"error,omitempty"`
	Key      string            `json:"idempotencyKey,omitempty"`
	Event    map[string]string `json:"event,omitempty"` // CloudEvent attributes
	Topic    string            `json:"topic,omitempty"` // the MQTT topic it was published on
	Request  Request           `json:"request"`
	Reply    Reply             `json:"reply,omitzero"`
	// Result describes the kept output (the bytes are fetched apart).
	Result ResultInfo `json:"result,omitzero"`
}

// ResultInfo describes an activation's kept result.
type ResultInfo struct {
	Size        int    `json:"size"`        // bytes the chain answered with
	Kept        int    `json:"kept"`        // bytes kept (Size, or the limit)
	Truncated   bool   `json:"truncated"`   // Kept < Size
	ContentType string `json:"contentType"` // as the chain set it
}

// Owed reports whether the node still owes the activation something: an
// attempt, or the delivery of its callback.
func (r *Record) Owed() bool {
	return !r.State.Terminal() || r.Reply.Callback != "" && r.Reply.CallbackStatus == 0
}

// Duration is how long the last attempt took.
func (r *Record) Duration() time.Duration {
	if r.Start.IsZero() || r.End.IsZero() {
		return 0
	}
	return r.End.Sub(r.Start)
}

// An ID is 16 bytes, printed as 32 hex digits: 8 bytes of the accept time
// (Unix ns, big-endian, so ids sort by time), 3 random bytes chosen at
// start, the store shard it lives in, and a 4-byte counter, so ids of one
// node never repeat and ids of two nodes do not collide.
const IDLen = 32

var (
	idNode [3]byte
	idSeq  atomic.Uint32
)

func init() {
	if _, err := rand.Read(idNode[:]); err != nil {
		panic("activation: no randomness for ids: " + err.Error())
	}
	var b [4]byte
	rand.Read(b[:])
	idSeq.Store(binary.BigEndian.Uint32(b[:]))
}

// NewID returns a fresh activation id for an activation accepted at t,
// in a shard chosen round-robin.
func NewID(t time.Time) string {
	seq := idSeq.Add(1)
	return newID(t, byte(seq%Shards), seq)
}

func newID(t time.Time, shard byte, seq uint32) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixNano()))
	copy(b[8:11], idNode[:])
	b[11] = shard
	binary.BigEndian.PutUint32(b[12:], seq)
	return hex.EncodeToString(b[:])
}

// idShard returns the shard an id names (a well-formed id).
func idShard(id string) int {
	if len(id) != IDLen {
		return 0
	}
	var b [1]byte
	hex.Decode(b[:], []byte(id[22:24]))
	return int(b[0]) % Shards
}

// idAt returns the smallest id of an activation accepted at t: the bound
// for a time-range scan.
func idAt(t time.Time) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(max(t.UnixNano(), 0)))
	return hex.EncodeToString(b[:]) + "000000000000000000000000"[:IDLen-16]
}

// ErrBadID is returned for a string that is not an activation id.
var ErrBadID = errors.New("not an activation id (32 hex digits)")

// CheckID reports whether id is well formed.
func CheckID(id string) error {
	if len(id) != IDLen {
		return ErrBadID
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ErrBadID
		}
	}
	return nil
}

// IDTime returns the accept time an id carries.
func IDTime(id string) time.Time {
	var b [8]byte
	if _, err := hex.Decode(b[:], []byte(id[:16])); err != nil {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[:])))
}
