package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEventsConfig(t *testing.T) {
	t.Parallel()
	y := yml(`
		app: iot
		limits: {inflight: 64, async: 16}
		activations:
		  retention: {age: 48h, count: 500}
		  result: 1KiB
		functions:
		  f: {builtin: upper}
		chains:
		  detect:
		    route: /detect
		    steps: [f]
		    record: all
		    async: {attempts: 5, maxAge: 1h, backoff: 200ms, queue: 10}
		  report: {route: /report, steps: [f]}
		triggers:
		  motion: {mqtt: {topic: "sensors/+/motion", qos: 1}, chain: detect}
		  remote: {mqtt: {topic: "a/#", reply: "alerts/motion", broker: "mqtt://127.0.0.1:1884"}, chain: detect}
		  nightly: {cron: "0 3 * * *", timezone: UTC, chain: report}
		  tick: {every: 10s, chain: report, body: '{"tick":true}', overlap: true}
		  orders: {cloudevent: {type: com.example.order.created, sourcePrefix: /shop/}, chain: detect}
		`)
	a, err := Parse("spry.yaml", []byte(y), "", builtins)
	if err != nil {
		t.Fatal(err)
	}
	if a.Limits.Async != 16 || a.Activations.Retention.Age != 48*time.Hour || a.Activations.Retention.Count != 500 || a.Activations.Result != 1024 {
		t.Fatalf("limits %+v activations %+v", a.Limits, a.Activations)
	}
	d := a.Chain("detect")
	if d.Record != RecordAll || d.Async != (Async{Attempts: 5, MaxAge: time.Hour, Backoff: 200 * time.Millisecond, Queue: 10}) {
		t.Fatalf("detect: record %q async %+v", d.Record, d.Async)
	}
	if r := a.Chain("report"); r.Record != RecordFailures || r.Async.Attempts != DefaultAttempts {
		t.Fatalf("report defaults: %q %+v", r.Record, r.Async)
	}
	if len(a.Triggers) != 5 {
		t.Fatalf("%d triggers", len(a.Triggers))
	}
	m := a.Triggers[0]
	if m.Name != "motion" || m.Kind != TriggerMQTT || m.MQTT != (MQTTTrigger{Topic: "sensors/+/motion", QoS: 1}) || m.Chain != 0 {
		t.Fatalf("motion: %+v", m)
	}
	if r := a.Triggers[1]; r.MQTT.Broker != "tcp://127.0.0.1:1884" || r.MQTT.Reply != "alerts/motion" || r.MQTT.QoS != 0 {
		t.Fatalf("remote: %+v", r.MQTT)
	}
	if n := a.Triggers[2]; n.Kind != TriggerCron || n.Cron != "0 3 * * *" || n.Timezone != "UTC" || n.Chain != 1 {
		t.Fatalf("nightly: %+v", n)
	}
	if k := a.Triggers[3]; k.Kind != TriggerEvery || k.Every != 10*time.Second || k.Body != `{"tick":true}` || !k.Overlap {
		t.Fatalf("tick: %+v", k)
	}
	o := a.Triggers[4]
	if o.Kind != TriggerCloudEvent || o.CloudEvent != (EventFilter{Type: "com.example.order.created", SourcePrefix: "/shop/"}) {
		t.Fatalf("orders: %+v", o)
	}
	if !o.CloudEvent.Match("com.example.order.created", "/shop/eu") || o.CloudEvent.Match("com.example.order.created", "/other") ||
		o.CloudEvent.Match("com.example.order.paid", "/shop/eu") {
		t.Fatal("filter matches wrong")
	}
}

func TestEventsConfigBad(t *testing.T) {
	t.Parallel()
	base := "app: a\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"no kind", base + "triggers: {t: {chain: c}}\n", []string{
			"spry.yaml:4: triggers.t: want one of mqtt:, cron:, every: or cloudevent:"}},
		{"two kinds", base + "triggers: {t: {chain: c, cron: '* * * * *', every: 1s}}\n", []string{
			"spry.yaml:4: triggers.t: want only one of mqtt:, cron:, every: or cloudevent:, got cron: and every:"}},
		{"unknown chain", base + "triggers: {t: {chain: d, every: 1s}}\n", []string{
			`spry.yaml:4: triggers.t.chain: unknown chain "d" (chains: c)`}},
		{"no chain", base + "triggers: {t: {every: 1s}}\n", []string{
			"spry.yaml:4: triggers.t.chain: missing; want the chain the trigger runs"}},
		{"bad cron", base + "triggers: {t: {chain: c, cron: '61 * * * *'}}\n", []string{
			`spry.yaml:4: triggers.t.cron: "61 * * * *" is not a cron schedule: end of range (61) above maximum (59): 61 (want 5 fields: minute hour day-of-month month day-of-week, or @hourly, @daily …)`}},
		{"bad zone", base + "triggers: {t: {chain: c, cron: '@daily', timezone: Mars/Olympus}}\n", []string{
			`spry.yaml:4: triggers.t.timezone: unknown time zone "Mars/Olympus" (want an IANA name like UTC or Europe/Paris)`}},
		{"zone without cron", base + "triggers: {t: {chain: c, every: 1s, timezone: UTC}}\n", []string{
			`spry.yaml:4: triggers.t.timezone: only for cron: triggers`}},
		{"every too short", base + "triggers: {t: {chain: c, every: 1ms}}\n", []string{
			`spry.yaml:4: triggers.t.every: want 100ms..8784h, got 1ms`}},
		{"body on mqtt", base + "triggers: {t: {chain: c, mqtt: {topic: a}, body: x}}\n", []string{
			`spry.yaml:4: triggers.t.body: only for cron: and every: triggers`}},
		{"bad filter", base + "triggers: {t: {chain: c, mqtt: {topic: 'a/b#', qos: 2}}}\n", []string{
			`spry.yaml:4: triggers.t.mqtt.topic: "a/b#" is not a topic filter: # must be a whole level, and the last`,
			`spry.yaml:4: triggers.t.mqtt.qos: QoS 2 is not supported: want 0 (at most once) or 1 (at least once; the broker acknowledges once the activation is stored)`}},
		{"wildcard reply", base + "triggers: {t: {chain: c, mqtt: {topic: 'a/+', reply: 'b/+', broker: 'http://x:1'}}}\n", []string{
			`spry.yaml:4: triggers.t.mqtt.reply: "b/+" is not a topic name: a topic name has no wildcards (+, #)`,
			`spry.yaml:4: triggers.t.mqtt.broker: unsupported scheme "http" (want tcp:// or mqtt://)`}},
		{"no topic", base + "triggers: {t: {chain: c, mqtt: {qos: 1}}}\n", []string{
			`spry.yaml:4: triggers.t.mqtt.topic: missing; want a topic filter, e.g. topic: "sensors/+/motion"`}},
		{"unknown key", base + "triggers: {t: {chain: c, cloudevent: {kind: x}}}\n", []string{
			`spry.yaml:4: triggers.t.cloudevent.kind: unknown field (known: type, source, typePrefix, sourcePrefix)`}},
		{"bad trigger name", base + "triggers: {T!: {chain: c, every: 1s}}\n", []string{
			`spry.yaml:4: triggers["T!"]: "T!" is not a valid trigger name: want lower-case letters, digits, '-' and '_' (not '-' or '_' at either end), at most 64 characters`}},
		{"async out of range", "app: a\nlimits: {inflight: 8, async: 9}\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f], record: some, async: {attempts: 0, maxAge: 1ms, queue: 0, backoff: 1h}}}\n", []string{
			`spry.yaml:2: limits.async: want 1..8 (at most limits.inflight), got 9`,
			`spry.yaml:4: chains.c.record: unknown record mode "some" (known: failures, all, none)`,
			`spry.yaml:4: chains.c.async.attempts: want 1..100, got 0`,
			`spry.yaml:4: chains.c.async.maxAge: want 1s..168h0m0s, got 1ms`,
			`spry.yaml:4: chains.c.async.backoff: want 1ms..5m0s, got 1h0m0s`,
			`spry.yaml:4: chains.c.async.queue: want 1..1048576, got 0`}},
		{"retention", base + "activations: {retention: {age: 0s, count: 0}, result: 65MiB}\n", []string{
			`spry.yaml:4: activations.retention.age: want more than 0s, got 0s`,
			`spry.yaml:4: activations.retention.count: want 1..1073741824, got 0`,
			`spry.yaml:4: activations.result: want at most 64MiB, got 65MiB`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("spry.yaml", []byte(tt.yaml), "", builtins)
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v", err)
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestCheckTopic(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "a/b", "+", "#", "a/+/b", "a/#", "/a", "a//b", "+/+"} {
		if why := CheckTopic(ok, true); why != "" {
			t.Errorf("filter %q: %s", ok, why)
		}
	}
	for _, bad := range []string{"", "a#", "a/#/b", "a+", "a/b+/c", "x\x00"} {
		if CheckTopic(bad, true) == "" {
			t.Errorf("filter %q accepted", bad)
		}
	}
	if CheckTopic("a/+", false) == "" || CheckTopic("a/b", false) != "" {
		t.Error("topic names")
	}
}
