package config

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// Events: what an app says about asynchronous invocations, activation
// records and triggers (docs/events.md).

// Activations is how an app's activation records are kept.
type Activations struct {
	Retention Retention
	Result    int // bytes of a result kept in its record
}

// Retention bounds the finished activations an app keeps.
type Retention struct {
	Age   time.Duration
	Count int
}

// Defaults of activations and async invocation.
const (
	DefaultRetentionAge   = 7 * 24 * time.Hour
	DefaultRetentionCount = 100_000
	DefaultResult         = 64 << 10
	MaxResult             = 64 << 20
	DefaultAttempts       = 3
	MaxAttempts           = 100
	DefaultMaxAge         = 6 * time.Hour
	MaxMaxAge             = 7 * 24 * time.Hour
	DefaultBackoff        = time.Second
	MaxBackoff            = 5 * time.Minute
	DefaultQueue          = 1000
	MaxQueue              = 1 << 20
	MinEvery              = 100 * time.Millisecond
)

// Record modes (Chain.Record): which synchronous requests get an
// activation record. Async invocations always do.
const (
	RecordFailures = "failures" // answered 400 or more (the default)
	RecordAll      = "all"
	RecordNone     = "none"
)

// Async is how a chain's asynchronous invocations are run.
type Async struct {
	Attempts int           // attempts before an activation is dead
	MaxAge   time.Duration // an older activation is dead instead of retried
	Backoff  time.Duration // delay before the first retry (doubles each time, up to MaxBackoff)
	Queue    int           // unfinished activations at once; a full queue answers 429
}

// Trigger kinds.
const (
	TriggerMQTT       = "mqtt"
	TriggerCron       = "cron"
	TriggerEvery      = "every"
	TriggerCloudEvent = "cloudevent"
)

// Trigger starts a chain on an event that is not an HTTP request to its
// route: an MQTT PUBLISH, a time, a CloudEvent sent to the node's event
// endpoint.
type Trigger struct {
	Name  string
	File  string
	Line  int
	Kind  string // one of the Trigger constants
	Chain int    // index into App.Chains

	MQTT       MQTTTrigger   // Kind mqtt
	Cron       string        // Kind cron: the schedule (5 fields, or @hourly, @daily …)
	Timezone   string        // Kind cron: an IANA name ("" is UTC)
	Every      time.Duration // Kind every
	CloudEvent EventFilter   // Kind cloudevent
	Body       string        // cron, every: the payload of each firing
	Overlap    bool          // cron, every: fire while the last firing's activation is unfinished
}

// MQTTTrigger maps a topic filter to a chain.
type MQTTTrigger struct {
	Topic  string // a topic filter, with + and # wildcards
	QoS    byte   // 0 or 1
	Reply  string // where the chain's result goes when the PUBLISH names no v5 response topic ("" drops it)
	Broker string // an MQTT broker to subscribe to as a client (tcp://host:port); "" is the node's own
}

// EventFilter selects CloudEvents by type and source; every condition set
// must hold. An empty filter matches every event.
type EventFilter struct {
	Type, Source             string // exact
	TypePrefix, SourcePrefix string
}

// Match reports whether an event of type typ from source passes f.
func (f EventFilter) Match(typ, source string) bool {
	return (f.Type == "" || typ == f.Type) && (f.Source == "" || source == f.Source) &&
		strings.HasPrefix(typ, f.TypePrefix) && strings.HasPrefix(source, f.SourcePrefix)
}

var (
	triggerKeys     = []string{"chain", "mqtt", "cron", "timezone", "every", "cloudevent", "body", "overlap"}
	mqttKeys        = []string{"topic", "qos", "reply", "broker"}
	eventKeys       = []string{"type", "source", "typePrefix", "sourcePrefix"}
	activationsKeys = []string{"retention", "result"}
	retentionKeys   = []string{"age", "count"}
	asyncKeys       = []string{"attempts", "maxAge", "backoff", "queue"}
)

type triggerSpec struct {
	name string
	line int
	bad  bool

	chain    value[string]
	mqtt     *mqttSpec
	cron     value[string]
	timezone value[string]
	every    value[time.Duration]
	event    *eventSpec
	body     value[string]
	overlap  value[bool]
}

type mqttSpec struct {
	line   int
	topic  value[string]
	qos    value[int64]
	reply  value[string]
	broker value[string]
}

type eventSpec struct {
	line                                  int
	typ, source, typePrefix, sourcePrefix value[string]
}

type activationsSpec struct {
	line     int
	age      value[time.Duration]
	count    value[int64]
	result   value[uint64]
	retained bool
}

type asyncSpec struct {
	line     int
	attempts value[int64]
	maxAge   value[time.Duration]
	backoff  value[time.Duration]
	queue    value[int64]
}

func (d *decoder) bool(n *yaml.Node, path string) value[bool] {
	x := value[bool]{line: n.Line, bad: true}
	s, ok := d.scalar(n, path, "true or false")
	if !ok {
		return x
	}
	if s.ShortTag() != "!!bool" || s.Decode(&x.v) != nil {
		d.ps.add(n.Line, path, "want true or false, got %s", got(s))
		return x
	}
	x.bad = false
	return x
}

// mapping reports whether n is a mapping (or null), and says what it
// wanted otherwise.
func (d *decoder) mapping(n *yaml.Node, path, want string) bool {
	if m := deref(n); m.Kind != yaml.MappingNode && !isNull(m) {
		d.ps.add(n.Line, path, "want %s, got %s", want, got(m))
		return false
	}
	return true
}

func (d *decoder) trigger(name string, k, v *yaml.Node) *triggerSpec {
	t := &triggerSpec{name: name, line: k.Line}
	path := join("triggers", name)
	if n := deref(v); n.Kind != yaml.MappingNode {
		d.ps.add(v.Line, path, "want a mapping with chain: and one of mqtt:, cron:, every: or cloudevent:, got %s", got(n))
		t.bad = true
		return t
	}
	d.fields(v, path, triggerKeys, func(key string, k, v *yaml.Node) {
		p := join(path, key)
		switch key {
		case "chain":
			t.chain = d.str(v, p)
		case "cron":
			t.cron = d.str(v, p)
		case "timezone":
			t.timezone = d.str(v, p)
		case "every":
			t.every = d.duration(v, p)
		case "body":
			t.body = d.str(v, p)
		case "overlap":
			t.overlap = d.bool(v, p)
		case "mqtt":
			m := &mqttSpec{line: k.Line}
			t.mqtt = m
			if !d.mapping(v, p, `a mapping with topic: and qos:, e.g. {topic: "sensors/+/motion", qos: 1}`) {
				return
			}
			d.fields(v, p, mqttKeys, func(key string, k, v *yaml.Node) {
				pp := join(p, key)
				switch key {
				case "topic":
					m.topic = d.str(v, pp)
				case "qos":
					m.qos = d.int(v, pp)
				case "reply":
					m.reply = d.str(v, pp)
				case "broker":
					m.broker = d.str(v, pp)
				}
			})
		case "cloudevent":
			e := &eventSpec{line: k.Line}
			t.event = e
			if !d.mapping(v, p, "a mapping with type:, source:, typePrefix: or sourcePrefix:") {
				return
			}
			d.fields(v, p, eventKeys, func(key string, k, v *yaml.Node) {
				pp := join(p, key)
				switch key {
				case "type":
					e.typ = d.str(v, pp)
				case "source":
					e.source = d.str(v, pp)
				case "typePrefix":
					e.typePrefix = d.str(v, pp)
				case "sourcePrefix":
					e.sourcePrefix = d.str(v, pp)
				}
			})
		}
	})
	return t
}

func (d *decoder) activations(k, v *yaml.Node) *activationsSpec {
	a := &activationsSpec{line: k.Line}
	if !d.mapping(v, "activations", "a mapping with retention: and result:") {
		return a
	}
	d.fields(v, "activations", activationsKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "result":
			a.result = d.size(v, "activations.result")
		case "retention":
			a.retained = true
			if !d.mapping(v, "activations.retention", "a mapping with age: and count:") {
				return
			}
			d.fields(v, "activations.retention", retentionKeys, func(key string, k, v *yaml.Node) {
				switch key {
				case "age":
					a.age = d.duration(v, "activations.retention.age")
				case "count":
					a.count = d.int(v, "activations.retention.count")
				}
			})
		}
	})
	return a
}

func (d *decoder) async(path string, k, v *yaml.Node) *asyncSpec {
	a := &asyncSpec{line: k.Line}
	if !d.mapping(v, path, "a mapping with attempts:, maxAge:, backoff: and queue:") {
		return a
	}
	d.fields(v, path, asyncKeys, func(key string, k, v *yaml.Node) {
		p := join(path, key)
		switch key {
		case "attempts":
			a.attempts = d.int(v, p)
		case "maxAge":
			a.maxAge = d.duration(v, p)
		case "backoff":
			a.backoff = d.duration(v, p)
		case "queue":
			a.queue = d.int(v, p)
		}
	})
	return a
}

// validateEvents checks activations:, limits.async, each chain's record:
// and async:, and triggers:. It runs after the chains are validated.
func (s *appSpec) validateEvents(a *App, ps *problems) {
	a.Activations = Activations{Retention: Retention{Age: DefaultRetentionAge, Count: DefaultRetentionCount}, Result: DefaultResult}
	if as := s.activations; as != nil {
		if x := as.age; x.ok() {
			if x.v <= 0 {
				ps.add(x.line, "activations.retention.age", "want more than 0s, got %s", x.v)
			} else {
				a.Activations.Retention.Age = x.v
			}
		}
		if x := as.count; x.ok() {
			if x.v < 1 || x.v > 1<<30 {
				ps.add(x.line, "activations.retention.count", "want 1..%d, got %d", 1<<30, x.v)
			} else {
				a.Activations.Retention.Count = int(x.v)
			}
		}
		if x := as.result; x.ok() {
			if x.v > MaxResult {
				ps.add(x.line, "activations.result", "want at most %s, got %s", formatSize(MaxResult), formatSize(x.v))
			} else {
				a.Activations.Result = int(x.v)
			}
		}
	}
	a.Limits.Async = max(1, a.Limits.Inflight/2)
	if x := s.async; x.ok() {
		if x.v < 1 || x.v > int64(a.Limits.Inflight) {
			ps.add(x.line, "limits.async", "want 1..%d (at most limits.inflight), got %d", a.Limits.Inflight, x.v)
		} else {
			a.Limits.Async = int(x.v)
		}
	}
	for i, cs := range s.chains.v {
		if i >= len(a.Chains) {
			break
		}
		cs.validateEvents(a.Chains[i], ps)
	}
	names := map[string]bool{}
	for _, ts := range s.triggers.v {
		t := ts.validate(a, ps)
		t.File = s.file
		if names[t.Name] {
			continue // a duplicate key: reported by the decoder
		}
		names[t.Name] = true
		a.Triggers = append(a.Triggers, t)
	}
}

func (cs *chainSpec) validateEvents(c *Chain, ps *problems) {
	path := join("chains", cs.name)
	c.Record = RecordFailures
	if r := cs.record; r.ok() {
		switch r.v {
		case RecordFailures, RecordAll, RecordNone:
			c.Record = r.v
		default:
			ps.add(r.line, path+".record", "unknown record mode %q (known: failures, all, none)", r.v)
		}
	}
	c.Async = Async{Attempts: DefaultAttempts, MaxAge: DefaultMaxAge, Backoff: DefaultBackoff, Queue: DefaultQueue}
	as := cs.async
	if as == nil {
		return
	}
	p := path + ".async"
	if x := as.attempts; x.ok() {
		if x.v < 1 || x.v > MaxAttempts {
			ps.add(x.line, p+".attempts", "want 1..%d, got %d", MaxAttempts, x.v)
		} else {
			c.Async.Attempts = int(x.v)
		}
	}
	if x := as.maxAge; x.ok() {
		if x.v < time.Second || x.v > MaxMaxAge {
			ps.add(x.line, p+".maxAge", "want 1s..%s, got %s", MaxMaxAge, x.v)
		} else {
			c.Async.MaxAge = x.v
		}
	}
	if x := as.backoff; x.ok() {
		if x.v < time.Millisecond || x.v > MaxBackoff {
			ps.add(x.line, p+".backoff", "want 1ms..%s, got %s", MaxBackoff, x.v)
		} else {
			c.Async.Backoff = x.v
		}
	}
	if x := as.queue; x.ok() {
		if x.v < 1 || x.v > MaxQueue {
			ps.add(x.line, p+".queue", "want 1..%d, got %d", MaxQueue, x.v)
		} else {
			c.Async.Queue = int(x.v)
		}
	}
}

func (ts *triggerSpec) validate(a *App, ps *problems) *Trigger {
	path := join("triggers", ts.name)
	t := &Trigger{Name: ts.name, Line: ts.line, Chain: -1}
	if len(ts.name) > maxName || !name.MatchString(ts.name) {
		ps.add(ts.line, path, "%s is not a valid trigger name: want lower-case letters, digits, '-' and '_' (not '-' or '_' at either end), at most %d characters",
			strconv.Quote(ts.name), maxName)
	}
	if ts.bad {
		return t
	}
	switch c := ts.chain; {
	case c.line == 0:
		ps.add(ts.line, path+".chain", "missing; want the chain the trigger runs")
	case c.bad:
	default:
		var names []string
		for _, ch := range a.Chains {
			names = append(names, ch.Name)
			if ch.Name == c.v {
				t.Chain = ch.Index
			}
		}
		if t.Chain < 0 {
			ps.add(c.line, path+".chain", "unknown chain %q (chains: %s)", c.v, list(names))
		}
	}

	var kinds []string
	if ts.mqtt != nil {
		kinds = append(kinds, "mqtt:")
	}
	if ts.cron.line != 0 {
		kinds = append(kinds, "cron:")
	}
	if ts.every.line != 0 {
		kinds = append(kinds, "every:")
	}
	if ts.event != nil {
		kinds = append(kinds, "cloudevent:")
	}
	switch {
	case len(kinds) == 0:
		ps.add(ts.line, path, "want one of mqtt:, cron:, every: or cloudevent:")
		return t
	case len(kinds) > 1:
		ps.add(ts.line, path, "want only one of mqtt:, cron:, every: or cloudevent:, got %s", strings.Join(kinds, " and "))
		return t
	}
	timed := ts.cron.line != 0 || ts.every.line != 0
	for _, x := range []struct {
		line int
		key  string
	}{{ts.body.line, "body"}, {ts.overlap.line, "overlap"}} {
		if x.line != 0 && !timed {
			ps.add(x.line, path+"."+x.key, "only for cron: and every: triggers")
		}
	}
	if ts.timezone.line != 0 && ts.cron.line == 0 {
		ps.add(ts.timezone.line, path+".timezone", "only for cron: triggers")
	}
	if ts.body.ok() {
		t.Body = ts.body.v
	}
	if ts.overlap.ok() {
		t.Overlap = ts.overlap.v
	}

	switch {
	case ts.mqtt != nil:
		t.Kind = TriggerMQTT
		ts.mqtt.validate(t, path+".mqtt", ps)
	case ts.cron.line != 0:
		t.Kind = TriggerCron
		if !ts.cron.ok() {
			break
		}
		t.Cron = ts.cron.v
		if _, err := cron.ParseStandard(ts.cron.v); err != nil {
			ps.add(ts.cron.line, path+".cron", "%q is not a cron schedule: %v (want 5 fields: minute hour day-of-month month day-of-week, or @hourly, @daily …)", ts.cron.v, err)
		}
		if tz := ts.timezone; tz.ok() {
			if strings.HasPrefix(strings.ToUpper(tz.v), "CRON_TZ=") || strings.HasPrefix(strings.ToUpper(tz.v), "TZ=") {
				ps.add(tz.line, path+".timezone", "want an IANA name like Europe/Paris, got %q", tz.v)
			} else if _, err := time.LoadLocation(tz.v); err != nil || tz.v == "" || tz.v == "Local" {
				ps.add(tz.line, path+".timezone", "unknown time zone %q (want an IANA name like UTC or Europe/Paris)", tz.v)
			} else {
				t.Timezone = tz.v
			}
		}
		if strings.Contains(ts.cron.v, "TZ=") {
			ps.add(ts.cron.line, path+".cron", "set the time zone with timezone:, not in the schedule")
		}
	case ts.every.line != 0:
		t.Kind = TriggerEvery
		if x := ts.every; x.ok() {
			if x.v < MinEvery || x.v > 366*24*time.Hour {
				ps.add(x.line, path+".every", "want %s..8784h, got %s", MinEvery, x.v)
			} else {
				t.Every = x.v
			}
		}
	case ts.event != nil:
		t.Kind = TriggerCloudEvent
		e := ts.event
		for _, x := range []struct {
			v   value[string]
			key string
			dst *string
		}{{e.typ, "type", &t.CloudEvent.Type}, {e.source, "source", &t.CloudEvent.Source},
			{e.typePrefix, "typePrefix", &t.CloudEvent.TypePrefix}, {e.sourcePrefix, "sourcePrefix", &t.CloudEvent.SourcePrefix}} {
			if !x.v.ok() {
				continue
			}
			if x.v.v == "" || !utf8.ValidString(x.v.v) || len(x.v.v) > 1024 {
				ps.add(x.v.line, path+".cloudevent."+x.key, "want a non-empty UTF-8 string of at most 1024 bytes")
				continue
			}
			*x.dst = x.v.v
		}
	}
	return t
}

func (ms *mqttSpec) validate(t *Trigger, path string, ps *problems) {
	m := &t.MQTT
	switch x := ms.topic; {
	case x.line == 0:
		ps.add(ms.line, path+".topic", `missing; want a topic filter, e.g. topic: "sensors/+/motion"`)
	case x.bad:
	default:
		if why := CheckTopic(x.v, true); why != "" {
			ps.add(x.line, path+".topic", "%s is not a topic filter: %s", strconv.Quote(x.v), why)
		} else {
			m.Topic = x.v
		}
	}
	if x := ms.qos; x.ok() {
		switch x.v {
		case 0, 1:
			m.QoS = byte(x.v)
		case 2:
			ps.add(x.line, path+".qos", "QoS 2 is not supported: want 0 (at most once) or 1 (at least once; the broker acknowledges once the activation is stored)")
		default:
			ps.add(x.line, path+".qos", "want 0 or 1, got %d", x.v)
		}
	}
	if x := ms.reply; x.ok() {
		if why := CheckTopic(x.v, false); why != "" {
			ps.add(x.line, path+".reply", "%s is not a topic name: %s", strconv.Quote(x.v), why)
		} else {
			m.Reply = x.v
		}
	}
	if x := ms.broker; x.ok() {
		u, err := url.Parse(x.v)
		switch {
		case err != nil || u.Host == "" || u.Port() == "":
			ps.add(x.line, path+".broker", "want a broker address like tcp://host:1883, got %q", x.v)
		case !slices.Contains([]string{"tcp", "mqtt"}, u.Scheme):
			ps.add(x.line, path+".broker", "unsupported scheme %q (want tcp:// or mqtt://)", u.Scheme)
		default:
			m.Broker = "tcp://" + u.Host
		}
	}
}

// CheckTopic returns why s is not an MQTT topic filter (filter) or topic
// name (!filter), or "".
func CheckTopic(s string, filter bool) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > 65535:
		return "longer than 65535 bytes"
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return "not valid UTF-8 without NUL"
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		if !filter {
			if strings.ContainsAny(l, "+#") {
				return "a topic name has no wildcards (+, #)"
			}
			continue
		}
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return "# must be a whole level, and the last"
		}
		if strings.Contains(l, "+") && l != "+" {
			return "+ must be a whole level"
		}
	}
	return ""
}

// TriggerSource describes where a trigger's events come from, for
// messages and `spry triggers`.
func (t *Trigger) Source() string {
	switch t.Kind {
	case TriggerMQTT:
		b := "embedded broker"
		if t.MQTT.Broker != "" {
			b = t.MQTT.Broker
		}
		return fmt.Sprintf("mqtt %s qos %d (%s)", t.MQTT.Topic, t.MQTT.QoS, b)
	case TriggerCron:
		return fmt.Sprintf("cron %q %s", t.Cron, cmpOr(t.Timezone, "UTC"))
	case TriggerEvery:
		return "every " + t.Every.String()
	case TriggerCloudEvent:
		f := t.CloudEvent
		var parts []string
		for _, p := range [][2]string{{"type", f.Type}, {"type^", f.TypePrefix}, {"source", f.Source}, {"source^", f.SourcePrefix}} {
			if p[1] != "" {
				parts = append(parts, p[0]+"="+p[1])
			}
		}
		if len(parts) == 0 {
			return "cloudevent (every event)"
		}
		return "cloudevent " + strings.Join(parts, " ")
	}
	return t.Kind
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
