package trigger

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/spry-dev/spry/internal/activation"
	"github.com/spry-dev/spry/internal/config"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false},
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"#", "a/b", true}, {"+/+", "a/b", true}, {"+", "a/b", false},
		{"sensors/+/motion", "sensors/hall/motion", true}, {"sensors/+/motion", "sensors/hall/door", false},
		{"+/b", "/b", true}, {"#", "$SYS/x", false}, {"+/x", "$SYS/x", false}, {"$SYS/#", "$SYS/x", true},
		{"a/b", "a/b/", false}, {"a/+", "a/", true}, {"a/b/c", "a/b", false},
	} {
		if got := Match(c.filter, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

// recorder is a Target that keeps what it is given (the node's tests use
// the real one).
type recorder struct {
	mu     sync.Mutex
	specs  []activation.Spec
	delay  time.Duration
	refuse atomic.Bool
	active atomic.Bool
	got    chan activation.Spec
}

func newRecorder() *recorder { return &recorder{got: make(chan activation.Spec, 100)} }

func (r *recorder) Accept(s activation.Spec) (activation.Accepted, error) {
	time.Sleep(r.delay)
	if r.refuse.Load() {
		return activation.Accepted{}, activation.ErrQueueFull
	}
	s.Body = append([]byte(nil), s.Body...)
	r.mu.Lock()
	r.specs = append(r.specs, s)
	r.mu.Unlock()
	r.got <- s
	return activation.Accepted{ID: activation.NewID(time.Now())}, nil
}

func (r *recorder) Active(string) bool { return r.active.Load() }

func (r *recorder) next(t *testing.T) activation.Spec {
	t.Helper()
	select {
	case s := <-r.got:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("nothing fired in 10 s")
	}
	return activation.Spec{}
}

func def(name, kind string, tr config.Trigger) Def {
	tr.Name, tr.Kind = name, kind
	return Def{App: "iot", Chain: "detect", Route: "/detect", MaxBody: 1024, Trigger: tr}
}

func TestEvery(t *testing.T) {
	t.Parallel()
	r := newRecorder()
	s, err := Start(Config{Target: r, Triggers: []Def{
		def("tick", config.TriggerEvery, config.Trigger{Every: 100 * time.Millisecond, Body: `{"n":1}`}),
		def("nightly", config.TriggerCron, config.Trigger{Cron: "0 3 * * *", Timezone: "Europe/Paris"}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sp := r.next(t)
	if sp.Cause != (activation.Cause{Kind: activation.CauseCron, Trigger: "tick"}) || string(sp.Body) != `{"n":1}` ||
		sp.Request.ContentType != "application/json" || sp.Request.Path != "/detect" || sp.App != "iot" || sp.Chain != "detect" {
		t.Fatalf("firing: %+v", sp)
	}
	// overlap: false — the last firing is unfinished: skip.
	r.active.Store(true)
	waitFor(t, func() bool { return s.Status()[1].Skipped > 0 })
	for _, st := range s.Status() {
		switch st.Name {
		case "nightly":
			next := st.NextFire.In(mustZone(t, "Europe/Paris"))
			if next.Hour() != 3 || next.Minute() != 0 || st.Fired != 0 {
				t.Fatalf("nightly: %+v (next %v)", st, next)
			}
		case "tick":
			if st.Accepted == 0 || st.LastID == "" || st.LastFire.IsZero() {
				t.Fatalf("tick: %+v", st)
			}
		}
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
	}
}

var clientSeq atomic.Int64

// client connects a paho (MQTT 5) client to addr, subscribed to filters,
// delivering messages to got.
func client(t *testing.T, addr string, filters []string, got chan *paho.Publish) *autopaho.ConnectionManager {
	t.Helper()
	u, _ := url.Parse("mqtt://" + addr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	up := make(chan struct{}, 1)
	var subs []paho.SubscribeOptions
	for _, f := range filters {
		subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			if len(subs) > 0 {
				if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
					t.Error(err)
				}
			}
			up <- struct{}{}
		},
		ClientConfig: paho.ClientConfig{ClientID: fmt.Sprintf("%s-%d", t.Name(), clientSeq.Add(1)), OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		t.Fatal("no MQTT connection in 10 s")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cm.Disconnect(ctx)
	})
	return cm
}

func TestEmbeddedBroker(t *testing.T) {
	t.Parallel()
	r := newRecorder()
	r.delay = 50 * time.Millisecond // the "durable write": PUBACK must wait for it
	s, err := Start(Config{Target: r, MQTT: "127.0.0.1:0", Triggers: []Def{
		def("motion", config.TriggerMQTT, config.Trigger{MQTT: config.MQTTTrigger{Topic: "sensors/+/motion", QoS: 1, Reply: "alerts"}}),
		def("all", config.TriggerMQTT, config.Trigger{MQTT: config.MQTTTrigger{Topic: "sensors/#"}}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	replies := make(chan *paho.Publish, 10)
	client(t, s.BrokerAddr(), []string{"alerts", "resp/me"}, replies)
	pub := client(t, s.BrokerAddr(), nil, make(chan *paho.Publish, 1))
	ctx := context.Background()

	began := time.Now()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "sensors/hall/motion", QoS: 1, Payload: []byte("m1"),
		Properties: &paho.PublishProperties{ResponseTopic: "resp/me", CorrelationData: []byte("c-1")}}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d < r.delay {
		t.Fatalf("PUBACK after %v, before the activation was accepted (%v)", d, r.delay)
	}
	a, b := r.next(t), r.next(t)
	if a.Cause.Trigger != "motion" {
		a, b = b, a
	}
	if a.Cause != (activation.Cause{Kind: activation.CauseMQTT, Trigger: "motion"}) || a.Topic != "sensors/hall/motion" || string(a.Body) != "m1" ||
		a.Volatile || a.Reply.Topic != "resp/me" || string(a.Reply.Correlation) != "c-1" {
		t.Fatalf("motion: %+v", a)
	}
	if b.Cause.Trigger != "all" || !b.Volatile {
		t.Fatalf("all (qos 0): %+v", b)
	}
	// The reply, with its correlation data.
	if ok, err := s.Publish(a.Reply, []byte("seen")); !ok || err != nil {
		t.Fatal(ok, err)
	}
	select {
	case p := <-replies:
		if p.Topic != "resp/me" || string(p.Payload) != "seen" || p.Properties == nil || string(p.Properties.CorrelationData) != "c-1" {
			t.Fatalf("reply %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
	}
	// Without a response topic, the trigger's reply topic.
	pub.Publish(ctx, &paho.Publish{Topic: "sensors/door/motion", QoS: 1, Payload: []byte("m2")})
	if a := r.next(t); a.Cause.Trigger == "motion" && a.Reply.Topic != "alerts" {
		t.Fatalf("reply topic %q", a.Reply.Topic)
	}
	r.next(t)

	// Refused at QoS 1: a v5 publisher gets a PUBACK with a reason.
	r.refuse.Store(true)
	_, err = pub.Publish(ctx, &paho.Publish{Topic: "sensors/x/motion", QoS: 1, Payload: []byte("m3")})
	if err == nil {
		t.Fatal("a refused QoS 1 message was acknowledged as accepted")
	}
	t.Logf("refused: %v", err)
}

// gated is a Submitter whose activations become "durable" when the test
// opens their gate (by payload), or fail with fail.
type gated struct {
	recorder
	mu    sync.Mutex
	gates map[string]chan error
	subs  chan string // payloads, in the order Submit saw them
}

func (g *gated) gate(p string) chan error {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.gates[p]
	if c == nil {
		c = make(chan error, 1)
		g.gates[p] = c
	}
	return c
}

type gatedWait struct{ c chan error }

func (w gatedWait) Wait() (activation.Accepted, error) {
	if err := <-w.c; err != nil {
		return activation.Accepted{}, err
	}
	return activation.Accepted{ID: activation.NewID(time.Now())}, nil
}

func (g *gated) Submit(s activation.Spec) (Waiter, error) {
	if g.refuse.Load() {
		return nil, activation.ErrQueueFull
	}
	g.subs <- string(s.Body)
	return gatedWait{g.gate(string(s.Body))}, nil
}

// QoS 1 PUBLISHes are acknowledged once their activations are durable,
// in the order they came, without holding up the client's read loop; the
// broker's subscribers get them after the PUBACK.
func TestQoS1AcknowledgedInOrderWhenStored(t *testing.T) {
	t.Parallel()
	g := &gated{recorder: *newRecorder(), gates: map[string]chan error{}, subs: make(chan string, 10)}
	s, err := Start(Config{Target: g, MQTT: "127.0.0.1:0", Triggers: []Def{
		def("motion", config.TriggerMQTT, config.Trigger{MQTT: config.MQTTTrigger{Topic: "sensors/+/motion", QoS: 1}}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seen := make(chan *paho.Publish, 10)
	client(t, s.BrokerAddr(), []string{"sensors/#"}, seen)
	pub := client(t, s.BrokerAddr(), nil, make(chan *paho.Publish, 1))
	ctx := context.Background()
	acked := make(chan string, 10)
	publish := func(topic, p string) {
		go func() {
			_, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(p)})
			if err != nil {
				p += ": " + err.Error()
			}
			acked <- p
		}()
	}
	submitted := func(want string) {
		t.Helper()
		select {
		case p := <-g.subs:
			if p != want {
				t.Fatalf("submitted %q, want %q", p, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not submitted in 10 s: the read loop waits for an earlier PUBLISH", want)
		}
	}
	notYet := func(what string) {
		t.Helper()
		select {
		case p := <-acked:
			t.Fatalf("%s acknowledged %s", p, what)
		case p := <-seen:
			t.Fatalf("subscriber got %q %s", p.Payload, what)
		case <-time.After(200 * time.Millisecond):
		}
	}
	publish("sensors/a/motion", "m1")
	submitted("m1")
	publish("sensors/b/motion", "m2")
	submitted("m2") // read while m1 is not yet stored
	notYet("before it was stored")
	g.gate("m2") <- nil
	notYet("before an earlier PUBLISH was (PUBACKs in order)")
	g.gate("m1") <- nil
	// (The PUBACKs went out in order; the publishing goroutines return
	// in any.)
	got := map[string]bool{}
	for range 2 {
		select {
		case p := <-acked:
			got[p] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("not acknowledged in 10 s (got %v)", got)
		}
	}
	if !got["m1"] || !got["m2"] {
		t.Fatalf("acknowledged %v, want m1 and m2", got)
	}
	for _, want := range []string{"m1", "m2"} {
		select {
		case p := <-seen:
			if string(p.Payload) != want {
				t.Fatalf("subscriber got %q, want %q", p.Payload, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber did not get %s", want)
		}
	}
	// Not stored (the store failed) or refused: a PUBACK with a reason,
	// and the subscribers do not get it.
	publish("sensors/c/motion", "m3")
	submitted("m3")
	g.gate("m3") <- errors.New("activation: write-ahead log failed")
	g.refuse.Store(true)
	publish("sensors/d/motion", "m4")
	for range 2 {
		select {
		case p := <-acked:
			if !strings.Contains(p, "limit has been exceeded") {
				t.Fatalf("refused: %q, want a PUBACK with reason quota exceeded", p)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a refused PUBLISH got no PUBACK in 10 s")
		}
	}
	select {
	case p := <-seen:
		t.Fatalf("subscriber got %q, which was not stored", p.Payload)
	default:
	}
	// A QoS 1 PUBLISH no trigger takes goes through at once.
	g.refuse.Store(false)
	publish("other", "m5")
	select {
	case p := <-acked:
		if p != "m5" {
			t.Fatal(p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a PUBLISH without a trigger was not acknowledged")
	}
}

// A QoS 1 PUBLISH of an MQTT 3.1.1 client that is not accepted gets no
// PUBACK (3.1.1 has no negative acknowledgement): the broker drops the
// connection, so the client sends it again when it reconnects.
func TestQoS1RefusedMQTT311(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		if os.Getenv("SPRY_REQUIRE_MOSQUITTO") != "" {
			t.Fatalf("mosquitto_pub not found and SPRY_REQUIRE_MOSQUITTO is set: %v", err)
		}
		t.Skipf("mosquitto_pub not found (apt-get install mosquitto-clients): %v", err)
	}
	t.Parallel()
	g := &gated{recorder: *newRecorder(), gates: map[string]chan error{}, subs: make(chan string, 10)}
	g.refuse.Store(true)
	s, err := Start(Config{Target: g, MQTT: "127.0.0.1:0", Triggers: []Def{
		def("motion", config.TriggerMQTT, config.Trigger{MQTT: config.MQTTTrigger{Topic: "sensors/+/motion", QoS: 1}}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	host, port, _ := strings.Cut(s.BrokerAddr(), ":")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mosquitto_pub", "-V", "mqttv311", "-h", host, "-p", port, "-q", "1", "-t", "sensors/x/motion", "-m", "m").CombinedOutput()
	if err == nil {
		t.Fatalf("a refused QoS 1 PUBLISH was acknowledged: %s", out)
	}
	if ctx.Err() != nil {
		t.Fatal("mosquitto_pub still waiting after 20 s: the connection was not dropped")
	}
	t.Logf("mosquitto_pub: %v: %s", err, out)
	// Accepted again: acknowledged.
	g.refuse.Store(false)
	go func() { g.gate("ok") <- nil }()
	if out, err := exec.CommandContext(ctx, "mosquitto_pub", "-V", "mqttv311", "-h", host, "-p", port, "-q", "1", "-t", "sensors/x/motion", "-m", "ok").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
}
