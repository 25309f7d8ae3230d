package trigger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/spry-dev/spry/internal/activation"
)

// The embedded broker is mochi-mqtt (MQTT 3.1.1 and 5). A hook sees every
// PUBLISH before the broker acknowledges it: for each trigger whose topic
// filter matches, the payload becomes an activation; at QoS 1 the hook
// returns (and the broker sends PUBACK) only once the activation is
// durable. The broker goes on to deliver the message to its other
// subscribers as usual.
type broker struct {
	s     *Set
	srv   *mqtt.Server
	ln    net.Listener
	addr  string
	trigs atomic.Pointer[[]*trig] // the triggers on this broker (Update swaps them)
}

func (b *broker) setTrigs(ts []*trig) { b.trigs.Store(&ts) }

func startBroker(s *Set, addr string, trigs []*trig) (*broker, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("trigger: mqtt broker: %w", err)
	}
	b := &broker{s: s, ln: ln, addr: ln.Addr().String()}
	b.setTrigs(trigs)
	log := s.log.With("component", "mqtt")
	b.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(levelFilter{log.Handler(), slog.LevelWarn})})
	if err := b.srv.AddHook(new(allowHook), nil); err != nil {
		ln.Close()
		return nil, err
	}
	if err := b.srv.AddHook(&publishHook{b: b}, nil); err != nil {
		ln.Close()
		return nil, err
	}
	if err := b.srv.AddListener(listeners.NewNet("spry", ln)); err != nil {
		ln.Close()
		return nil, err
	}
	if err := b.srv.Serve(); err != nil {
		b.srv.Close()
		return nil, fmt.Errorf("trigger: mqtt broker: %w", err)
	}
	s.log.Info("mqtt broker listening", "addr", b.addr, "triggers", len(trigs))
	return b, nil
}

func (b *broker) stop() { b.srv.Close() }

// publish sends a chain's reply through the embedded broker.
func (b *broker) publish(r activation.Reply, payload []byte) error {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: r.QoS},
		TopicName:   r.Topic,
		Payload:     payload,
		PacketID:    uint16(r.QoS),
	}
	if r.Correlation != nil {
		pk.Properties.CorrelationData = r.Correlation
	}
	cl, ok := b.srv.Clients.Get(mqtt.InlineClientId)
	if !ok {
		return errors.New("trigger: the broker has no inline client")
	}
	return b.srv.InjectPacket(cl, pk)
}

// allowHook lets every client connect, publish and subscribe: the broker
// listens where the node is told to (127.0.0.1 by default); put it behind
// a network boundary you trust.
type allowHook struct{ mqtt.HookBase }

func (h *allowHook) ID() string { return "allow-all" }

func (h *allowHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *allowHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *allowHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// publishHook is the broker hook that turns PUBLISHes into activations.
type publishHook struct {
	mqtt.HookBase
	b *broker
}

func (h *publishHook) ID() string { return "spry-triggers" }

func (h *publishHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *publishHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // a reply the node publishes
	}
	for _, t := range *h.b.trigs.Load() {
		if !Match(t.def.MQTT.Topic, pk.TopicName) {
			continue
		}
		qos := min(pk.FixedHeader.Qos, t.def.MQTT.QoS)
		_, err := h.b.s.fire(t, mqttSpec(t, pk.TopicName, pk.Payload, qos, pk.Properties.ResponseTopic, pk.Properties.CorrelationData, ""))
		if err == nil || qos == 0 {
			continue
		}
		// Not accepted at QoS 1: the publisher must not be told it was.
		if cl.Properties.ProtocolVersion == 5 {
			code := packets.ErrQuotaExceeded
			if errors.Is(err, activation.ErrUnknownChain) {
				code = packets.ErrUnspecifiedError
			} else if strings.Contains(err.Error(), "larger than a pool buffer") {
				code = packets.ErrPacketTooLarge
			}
			return pk, code // PUBACK with the reason
		}
		// MQTT 3.1.1 has no negative acknowledgement: withhold the PUBACK
		// and drop the connection, so the client sends it again when it
		// reconnects.
		go h.b.srv.DisconnectClient(cl, packets.ErrQuotaExceeded)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// mqttSpec is the activation of one message on t's topic filter.
func mqttSpec(t *trig, topic string, payload []byte, qos byte, respTopic string, corr []byte, brokerURL string) activation.Spec {
	spec := activation.Spec{
		Cause:    activation.Cause{Kind: activation.CauseMQTT},
		Body:     payload,
		Topic:    topic,
		Volatile: qos == 0,
	}
	spec.Request.Headers = [][2]string{{"Mqtt-Topic", topic}}
	switch {
	case respTopic != "":
		spec.Reply = activation.Reply{Broker: brokerURL, Topic: respTopic, Correlation: corr, QoS: t.def.MQTT.QoS}
	case t.def.MQTT.Reply != "":
		spec.Reply = activation.Reply{Broker: brokerURL, Topic: t.def.MQTT.Reply, QoS: t.def.MQTT.QoS}
	}
	return spec
}

// Publish sends an activation's result to its reply topic (on the broker
// it came from). It reports false when there is no reply topic.
func (s *Set) Publish(r activation.Reply, payload []byte) (bool, error) {
	if r.Topic == "" {
		return false, nil
	}
	if r.Broker == "" {
		if s.broker == nil {
			return true, errors.New("trigger: no embedded broker to publish the reply on")
		}
		return true, s.broker.publish(r, payload)
	}
	s.mu.Lock()
	rm := s.remote[r.Broker]
	s.mu.Unlock()
	if rm == nil {
		return true, fmt.Errorf("trigger: no connection to %s to publish the reply on", r.Broker)
	}
	return true, rm.publish(r, payload)
}

// Match reports whether topic name topic matches topic filter filter
// (MQTT 4.7): + matches one level, # the rest; a wildcard in the first
// level does not match a topic starting with $.
func Match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			// One ran out: a match only if both did, or the filter's
			// next (last) level is # ("a/#" matches "a").
			return fmore == tmore || fmore && frest == "#"
		}
		filter, topic = frest, trest
	}
}

// remote is a client connection (paho, MQTT 5) to a broker of the user's,
// subscribed to the topic filters of the triggers that name it. The
// session persists across reconnects and restarts (a fixed client id, no
// clean start), so QoS 1 messages published while the node was down are
// delivered when it is back; each is acknowledged once its activation is
// durable.
type remote struct {
	s         *Set
	url       string
	trigs     []*trig
	cm        *autopaho.ConnectionManager
	cancel    context.CancelFunc
	connected atomic.Bool
	wg        sync.WaitGroup
}

func (r *remote) start() error {
	u, err := url.Parse(r.url)
	if err != nil {
		return fmt.Errorf("trigger: broker %s: %w", r.url, err)
	}
	u.Scheme = "mqtt"
	host, _ := os.Hostname()
	id := "spry-" + host
	if len(id) > 23 {
		id = id[:23]
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	var subs []paho.SubscribeOptions
	for _, t := range r.trigs {
		subs = append(subs, paho.SubscribeOptions{Topic: t.def.MQTT.Topic, QoS: t.def.MQTT.QoS})
	}
	log := r.s.log.With("component", "mqtt", "broker", r.url)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         24 * 3600,
		ReconnectBackoff:              autopaho.NewExponentialBackoff(100*time.Millisecond, 10*time.Second, 500*time.Millisecond, 2),
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			r.connected.Store(true)
			log.Info("mqtt: connected; subscribing", "filters", len(subs))
			if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
				log.Warn("mqtt: subscribe", "err", err)
			}
		},
		OnConnectError: func(err error) {
			r.connected.Store(false)
			log.Warn("mqtt: connect", "err", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID:                   id,
			EnableManualAcknowledgment: true,
			OnPublishReceived:          []func(paho.PublishReceived) (bool, error){r.onPublish},
			OnServerDisconnect:         func(*paho.Disconnect) { r.connected.Store(false) },
			OnClientError:              func(error) { r.connected.Store(false) },
		},
	}
	r.cm, err = autopaho.NewConnection(ctx, cfg)
	if err != nil {
		cancel()
		return fmt.Errorf("trigger: broker %s: %w", r.url, err)
	}
	return nil
}

// onPublish turns a delivered message into activations. It runs on paho's
// delivery goroutine: the durable write and the acknowledgement happen on
// another, so messages keep flowing while batches commit (paho sends the
// acknowledgements in order).
func (r *remote) onPublish(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	var corr []byte
	resp := ""
	if p.Properties != nil {
		resp, corr = p.Properties.ResponseTopic, p.Properties.CorrelationData
	}
	var match []*trig
	for _, t := range r.trigs {
		if Match(t.def.MQTT.Topic, p.Topic) {
			match = append(match, t)
		}
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for _, t := range match {
			qos := min(p.QoS, t.def.MQTT.QoS)
			if _, err := r.s.fire(t, mqttSpec(t, p.Topic, p.Payload, qos, resp, corr, r.url)); err != nil {
				r.s.log.Warn("mqtt: message not accepted", "trigger", t.def.Name, "topic", p.Topic, "err", err)
			}
		}
		if p.QoS > 0 {
			pr.Client.Ack(p)
		}
	}()
	return true, nil
}

func (r *remote) publish(rep activation.Reply, payload []byte) error {
	p := &paho.Publish{Topic: rep.Topic, QoS: rep.QoS, Payload: payload}
	if rep.Correlation != nil {
		p.Properties = &paho.PublishProperties{CorrelationData: rep.Correlation}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.cm.Publish(ctx, p)
	return err
}

func (r *remote) stop() {
	if r.cm != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r.cm.Disconnect(ctx)
		cancel()
	}
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
}

// levelFilter drops log records below a level (mochi logs every
// connection at info).
type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (l levelFilter) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.Handler.Enabled(ctx, lv)
}

func (l levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{l.Handler.WithAttrs(a), l.min}
}

func (l levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{l.Handler.WithGroup(n), l.min}
}
