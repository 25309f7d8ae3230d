package activation

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"time"
)

// Records are kept (in the log and in the bbolt files) in a binary form
// written by hand: an accepted activation and its outcome are each encoded
// once, on the accept and settle paths, where encoding/json's reflection
// cost more than the rest of the store's work. The API still answers in
// JSON (Record's tags); the stored form is private to the store.
//
//	0x01 | id | app | chain | cause.kind | cause.trigger | state
//	     | status | accepted | start | end | next
//	     | steps: n, n × (function, us: f64) | attempts | error | key
//	     | event: n, n × (name, value) | topic
//	     | request: method, path, query, contentType, headers: n, n × (name, value), size
//	     | reply: broker, topic, correlation, qos (byte), callback, callbackStatus
//	     | result: size, kept, truncated (byte), contentType
//
// Strings and byte strings are a uvarint length then the bytes; integers
// are varints; times are varint Unix nanoseconds (0: none); f64 is 8
// bytes little-endian. Records a store wrote before this form are JSON
// (they start with '{') and are read as such.
const recordV1 = 0x01

var errBadRecord = errors.New("activation: malformed stored record")

// recordSize estimates the encoded size of r (a capacity hint).
func recordSize(r *Record) int {
	n := 64 + len(r.ID) + len(r.App) + len(r.Chain) + len(r.Cause.Kind) + len(r.Cause.Trigger) + len(r.State) +
		len(r.Error) + len(r.Key) + len(r.Topic) + len(r.Request.Method) + len(r.Request.Path) + len(r.Request.Query) +
		len(r.Request.ContentType) + len(r.Reply.Broker) + len(r.Reply.Topic) + len(r.Reply.Correlation) +
		len(r.Reply.Callback) + len(r.Result.ContentType) + 5*8
	for _, s := range r.Steps {
		n += len(s.Function) + 10
	}
	for k, v := range r.Event {
		n += len(k) + len(v) + 4
	}
	for _, h := range r.Request.Headers {
		n += len(h[0]) + len(h[1]) + 4
	}
	return n
}

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

// encodeRecord appends the stored form of r to b.
func encodeRecord(b []byte, r *Record) []byte {
	b = append(b, recordV1)
	b = appendStr(b, r.ID)
	b = appendStr(b, r.App)
	b = appendStr(b, r.Chain)
	b = appendStr(b, r.Cause.Kind)
	b = appendStr(b, r.Cause.Trigger)
	b = appendStr(b, string(r.State))
	b = binary.AppendVarint(b, int64(r.Status))
	b = appendTime(b, r.Accepted)
	b = appendTime(b, r.Start)
	b = appendTime(b, r.End)
	b = appendTime(b, r.Next)
	b = binary.AppendUvarint(b, uint64(len(r.Steps)))
	for _, s := range r.Steps {
		b = appendStr(b, s.Function)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s.Micros))
	}
	b = binary.AppendVarint(b, int64(r.Attempts))
	b = appendStr(b, r.Error)
	b = appendStr(b, r.Key)
	b = binary.AppendUvarint(b, uint64(len(r.Event)))
	if len(r.Event) > 0 {
		keys := make([]string, 0, len(r.Event))
		for k := range r.Event {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b = appendStr(appendStr(b, k), r.Event[k])
		}
	}
	b = appendStr(b, r.Topic)
	q := &r.Request
	b = appendStr(appendStr(appendStr(appendStr(b, q.Method), q.Path), q.Query), q.ContentType)
	b = binary.AppendUvarint(b, uint64(len(q.Headers)))
	for _, h := range q.Headers {
		b = appendStr(appendStr(b, h[0]), h[1])
	}
	b = binary.AppendVarint(b, int64(q.Size))
	p := &r.Reply
	b = appendStr(appendStr(b, p.Broker), p.Topic)
	b = append(binary.AppendUvarint(b, uint64(len(p.Correlation))), p.Correlation...)
	b = append(b, p.QoS)
	b = appendStr(b, p.Callback)
	b = binary.AppendVarint(b, int64(p.CallbackStatus))
	s := &r.Result
	b = binary.AppendVarint(b, int64(s.Size))
	b = binary.AppendVarint(b, int64(s.Kept))
	t := byte(0)
	if s.Truncated {
		t = 1
	}
	b = append(b, t)
	return appendStr(b, s.ContentType)
}

// decodeRecord reads a stored record (either form) into r.
func decodeRecord(b []byte, r *Record) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, r)
	}
	if len(b) == 0 || b[0] != recordV1 {
		return errBadRecord
	}
	d := decoder{b: b[1:]}
	r.ID = d.str()
	r.App = d.str()
	r.Chain = d.str()
	r.Cause.Kind = d.str()
	r.Cause.Trigger = d.str()
	r.State = State(d.str())
	r.Status = d.int()
	r.Accepted = d.time()
	r.Start = d.time()
	r.End = d.time()
	r.Next = d.time()
	if n := d.count(9); n > 0 {
		r.Steps = make([]Step, n)
		for i := range r.Steps {
			r.Steps[i].Function = d.str()
			r.Steps[i].Micros = math.Float64frombits(d.u64())
		}
	}
	r.Attempts = d.int()
	r.Error = d.str()
	r.Key = d.str()
	if n := d.count(2); n > 0 {
		r.Event = make(map[string]string, n)
		for range n {
			k := d.str()
			r.Event[k] = d.str()
		}
	}
	r.Topic = d.str()
	q := &r.Request
	q.Method, q.Path, q.Query, q.ContentType = d.str(), d.str(), d.str(), d.str()
	if n := d.count(2); n > 0 {
		q.Headers = make([][2]string, n)
		for i := range q.Headers {
			q.Headers[i][0] = d.str()
			q.Headers[i][1] = d.str()
		}
	}
	q.Size = d.int()
	p := &r.Reply
	p.Broker, p.Topic = d.str(), d.str()
	if c := d.bytes(); len(c) > 0 {
		p.Correlation = slices.Clone(c)
	}
	p.QoS = d.byte()
	p.Callback = d.str()
	p.CallbackStatus = d.int()
	s := &r.Result
	s.Size, s.Kept = d.int(), d.int()
	s.Truncated = d.byte() == 1
	s.ContentType = d.str()
	if d.bad || len(d.b) != 0 {
		return errBadRecord
	}
	return nil
}

// decoder reads the stored form; a read past the end sets bad and yields
// zero values.
type decoder struct {
	b   []byte
	bad bool
}

// took moves past the n bytes a varint read took (n <= 0: it failed).
func (d *decoder) took(n int) bool {
	if n <= 0 {
		d.fail()
		return false
	}
	d.b = d.b[n:]
	return true
}

// fail marks the record bad: every later read yields a zero value.
func (d *decoder) fail() { d.bad, d.b = true, nil }

// next takes the next n bytes (nil, and bad, when fewer are left).
func (d *decoder) next(n uint64) []byte {
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if !d.took(n) {
		return 0
	}
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if !d.took(n) {
		return 0
	}
	return v
}

func (d *decoder) int() int { return int(d.varint()) }

// time reads a time; 0 (or a read past the end) is none.
func (d *decoder) time() time.Time {
	if v := d.varint(); v != 0 {
		return time.Unix(0, v)
	}
	return time.Time{}
}

// count reads a count of items of at least min bytes each.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte { return d.next(d.uvarint()) }

func (d *decoder) str() string {
	if v := d.bytes(); len(v) > 0 {
		return string(v)
	}
	return ""
}

func (d *decoder) u64() uint64 {
	if v := d.next(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) byte() byte {
	if v := d.next(1); v != nil {
		return v[0]
	}
	return 0
}
