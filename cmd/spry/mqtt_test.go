package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/spry-dev/spry/internal/activation"
)

const mqttYAML = `
app: iot
functions:
  upper: {builtin: upper}
chains:
  detect: {route: /detect, steps: [upper]}
triggers:
  motion: {mqtt: {topic: "sensors/+/motion", qos: 1, reply: alerts/motion}, chain: detect}
  raw: {mqtt: {topic: "raw/#", qos: 0, reply: alerts/raw}, chain: detect}
  tick: {every: 200ms, chain: detect, body: tick}
`

// needMosquitto skips without Debian's mosquitto-clients, or fails when
// SPRY_REQUIRE_MOSQUITTO is set (CI: .ci/setup.d/mqtt.sh installs them).
func needMosquitto(t *testing.T) {
	t.Helper()
	for _, p := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("SPRY_REQUIRE_MOSQUITTO") != "" {
				t.Fatalf("%s not found and SPRY_REQUIRE_MOSQUITTO is set: %v", p, err)
			}
			t.Skipf("%s not found (apt-get install mosquitto-clients): %v", p, err)
		}
	}
}

// mosquittoSub starts mosquitto_sub for one message on topic and returns
// a function that waits for it.
func mosquittoSub(t *testing.T, port, topic string, extra ...string) func() string {
	t.Helper()
	args := append([]string{"-h", "127.0.0.1", "-p", port, "-t", topic, "-C", "1", "-W", "20"}, extra...)
	cmd := exec.Command("mosquitto_sub", args...)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(300 * time.Millisecond) // subscribed before anything is published
	return func() string {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("mosquitto_sub %s: %v\n%s", topic, err, out.String())
		}
		return strings.TrimSpace(out.String())
	}
}

func TestMQTTTriggers(t *testing.T) {
	needMosquitto(t)
	t.Parallel()
	n := startNode(t, "-f", writeConfig(t, mqttYAML), "--mqtt", "127.0.0.1:0")
	s := n.mustStatus()
	if s.Events == nil || s.Events.MQTT == "" {
		t.Fatalf("no broker address in the status: %+v", s.Events)
	}
	port := s.Events.MQTT[strings.LastIndexByte(s.Events.MQTT, ':')+1:]

	// QoS 1, a wildcard filter, the trigger's reply topic.
	wait := mosquittoSub(t, port, "alerts/motion")
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "sensors/hall/motion", "-m", "someone moved").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	if got := wait(); got != "SOMEONE MOVED" {
		t.Fatalf("reply %q", got)
	}
	// QoS 0, MQTT 3.1.1, a multi-level wildcard.
	wait = mosquittoSub(t, port, "alerts/raw", "-V", "mqttv311")
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "0", "-V", "mqttv311", "-t", "raw/a/b", "-m", "r").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	if got := wait(); got != "R" {
		t.Fatalf("reply %q", got)
	}
	// Not matched: sensors/+/motion does not match two levels.
	exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "sensors/a/b/motion", "-m", "no").Run()

	// A paho (MQTT 5) client: the reply goes to its response topic with
	// its correlation data.
	u, _ := url.Parse("mqtt://" + s.Events.MQTT)
	got := make(chan *paho.Publish, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up := make(chan struct{}, 1)
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "replies/me", QoS: 1}}})
			up <- struct{}{}
		},
		ClientConfig: paho.ClientConfig{ClientID: "e2e-paho", OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	<-up
	if _, err := cm.Publish(ctx, &paho.Publish{Topic: "sensors/door/motion", QoS: 1, Payload: []byte("door"),
		Properties: &paho.PublishProperties{ResponseTopic: "replies/me", CorrelationData: []byte("req-42")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if string(p.Payload) != "DOOR" || p.Properties == nil || string(p.Properties.CorrelationData) != "req-42" {
			t.Fatalf("v5 reply: %q %+v", p.Payload, p.Properties)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no reply on the response topic")
	}
	dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
	cm.Disconnect(dctx)
	dcancel()

	// Records: caused by mqtt and by the every: trigger.
	var list struct{ Activations []activation.Record }
	waitFor(t, 10*time.Second, func() bool {
		n.getJSON("/v1/activations?chain=detect&limit=200", &list)
		kinds := map[string]int{}
		for _, a := range list.Activations {
			kinds[a.Cause.Kind+":"+a.Cause.Trigger]++
			if a.Cause.Kind == "mqtt" && a.Topic == "sensors/a/b/motion" {
				t.Fatalf("a topic outside the filter triggered: %+v", a)
			}
		}
		// QoS 0 runs like a synchronous request: recorded only when it
		// fails (the chain's default record setting).
		return kinds["mqtt:motion"] == 2 && kinds["mqtt:raw"] == 0 && kinds["cron:tick"] > 0
	})
	var trigs struct {
		Triggers []struct {
			Name     string
			Accepted uint64
		}
	}
	n.getJSON("/v1/triggers", &trigs)
	for _, tr := range trigs.Triggers {
		if tr.Name == "raw" && tr.Accepted != 1 {
			t.Fatalf("trigger raw accepted %d, want 1", tr.Accepted)
		}
	}
	out, err := exec.Command(spryBin, "triggers", "--admin", n.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mqtt sensors/+/motion qos 1 (embedded broker)") || !strings.Contains(string(out), "every 200ms") {
		t.Fatalf("spry triggers: %v\n%s", err, out)
	}
}

// A QoS 1 PUBLISH is acknowledged only once its activation is durable,
// even though the broker no longer waits for the disk before reading the
// next: every message PUBACKed before a kill -9 has its activation after
// the restart.
func TestMQTTQoS1SurvivesKill9(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	cfg := writeConfig(t, mqttYAML)
	n := startNode(t, "-f", cfg, "--data-dir", data, "--mqtt", "127.0.0.1:0")
	s := n.mustStatus()
	if s.Events == nil || s.Events.MQTT == "" {
		t.Fatalf("no broker address in the status: %+v", s.Events)
	}
	u, _ := url.Parse("mqtt://" + s.Events.MQTT)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up := make(chan struct{}, 1)
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		OnConnectionUp: func(*autopaho.ConnectionManager, *paho.Connack) {
			select {
			case up <- struct{}{}:
			default:
			}
		},
		ClientConfig: paho.ClientConfig{ClientID: "kill9-pub"},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-up:
	case <-time.After(20 * time.Second):
		t.Fatal("no MQTT connection in 20 s")
	}
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				topic := fmt.Sprintf("sensors/m%d/motion", i)
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := cm.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("moved")})
				pcancel()
				if err == nil {
					mu.Lock()
					acked[topic] = true
					mu.Unlock()
				}
			}
		}()
	}
	for i := range 2000 {
		mu.Lock()
		k := len(acked)
		mu.Unlock()
		if k >= 300 {
			break
		}
		next <- i
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exit
	cancel()
	close(next)
	wg.Wait()
	if len(acked) < 300 {
		t.Fatalf("only %d PUBLISHes acknowledged before the kill", len(acked))
	}
	t.Logf("%d PUBLISHes acknowledged before kill -9", len(acked))

	m := startNode(t, "-f", cfg, "--data-dir", data, "--mqtt", "127.0.0.1:0")
	found := map[string]bool{}
	before := ""
	for {
		var list struct {
			Activations []activation.Record
			Next        string
		}
		q := "/v1/activations?chain=detect&limit=1000"
		if before != "" {
			q += "&before=" + before
		}
		if st := m.getJSON(q, &list); st != 200 {
			t.Fatalf("GET %s: %d", q, st)
		}
		for _, a := range list.Activations {
			if a.Cause.Kind == activation.CauseMQTT {
				found[a.Topic] = true
			}
		}
		if list.Next == "" {
			break
		}
		before = list.Next
	}
	for topic := range acked {
		if !found[topic] {
			t.Fatalf("the PUBLISH on %s was acknowledged but has no activation after the restart (%d acknowledged, %d found)", topic, len(acked), len(found))
		}
	}
}
