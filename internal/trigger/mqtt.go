package trigger

import (
	"bytes"
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
// filter matches, the payload becomes an activation. At QoS 0 it runs at
// once. At QoS 1 the PUBACK goes out only once the activation is durable,
// but the client's read loop (where mochi runs the hook) does not wait
// for the disk: the hook submits the activation to the store and hands
// the PUBLISH to the client's acknowledger, a goroutine that waits for
// the client's PUBLISHes in the order they came (PUBACKs keep that order,
// MQTT 4.6) and acknowledges each once stored — so the messages a client
// has in flight, and those of every other client, share one flush. The
// broker then delivers the message to its other subscribers, if any, as
// usual (from the acknowledger, after the PUBACK).
type broker struct {
	s     *Set
	srv   *mqtt.Server
	ln    net.Listener
	addr  string
	trigs atomic.Pointer[[]*trig] // the triggers on this broker (Update swaps them)

	ackMu   sync.Mutex
	ackRoom *sync.Cond // signalled as acknowledgers take from full queues
	ackers  map[*mqtt.Client]*acker
	stopped bool
	ackWG   sync.WaitGroup
}

// maxUnacked bounds a client's QoS 1 PUBLISHes waiting for their PUBACK:
// past it the client's read loop waits (MQTT 3.1.1 clients have no
// receive maximum; 5 clients are told mochi's, 1024 by default).
const maxUnacked = 1024

// acker is a client's QoS 1 PUBLISHes waiting for their activations to be
// durable, in the order they came, and the goroutine that acknowledges
// them (running while the client is connected).
type acker struct {
	q    []unacked
	wake chan struct{}
	gone bool // the client disconnected: finish the queue and stop
}

// unacked is a QoS 1 PUBLISH whose activations are on their way to the
// disk (subs), or that was refused (err).
type unacked struct {
	pk   packets.Packet
	subs []submitted
	err  error
}

func (b *broker) setTrigs(ts []*trig) { b.trigs.Store(&ts) }

func startBroker(s *Set, addr string, trigs []*trig) (*broker, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("trigger: mqtt broker: %w", err)
	}
	b := &broker{s: s, ln: ln, addr: ln.Addr().String(), ackers: map[*mqtt.Client]*acker{}}
	b.ackRoom = sync.NewCond(&b.ackMu)
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

// stop closes the broker, and waits for the acknowledgers to finish what
// they hold (the activations are stored or refused; the PUBACKs to closed
// connections go nowhere).
func (b *broker) stop() {
	b.srv.Close()
	b.ackMu.Lock()
	b.stopped = true
	for cl, a := range b.ackers {
		b.letGo(cl, a)
	}
	b.ackRoom.Broadcast()
	b.ackMu.Unlock()
	b.ackWG.Wait()
}

// letGo tells cl's acknowledger a to finish its queue and stop (ackMu
// held; the caller wakes the read loops waiting for room).
func (b *broker) letGo(cl *mqtt.Client, a *acker) {
	a.gone = true
	delete(b.ackers, cl)
	a.poke()
}

func (a *acker) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// enqueue hands PUBLISH u of cl to cl's acknowledger (started with the
// client's first), waiting while cl has maxUnacked waiting already.
func (b *broker) enqueue(cl *mqtt.Client, u unacked) {
	b.ackMu.Lock()
	a := b.ackers[cl]
	if a == nil && !b.stopped {
		a = &acker{wake: make(chan struct{}, 1)}
		b.ackers[cl] = a
		b.ackWG.Add(1)
		go b.acknowledge(cl, a)
	}
	for a != nil && len(a.q) >= maxUnacked && !a.gone {
		b.ackRoom.Wait()
	}
	if a == nil || a.gone {
		b.ackMu.Unlock()
		b.settleAll(cl, []unacked{u}, new(bytes.Buffer)) // the broker is stopping: settle it here
		return
	}
	a.q = append(a.q, u)
	b.ackMu.Unlock()
	a.poke()
}

// pendingAcks reports whether cl has PUBLISHes waiting for their PUBACK.
func (b *broker) pendingAcks(cl *mqtt.Client) bool {
	b.ackMu.Lock()
	defer b.ackMu.Unlock()
	a := b.ackers[cl]
	return a != nil && len(a.q) > 0
}

// acknowledge is cl's acknowledger: it settles cl's PUBLISHes in order
// until cl is gone and nothing is left.
func (b *broker) acknowledge(cl *mqtt.Client, a *acker) {
	defer b.ackWG.Done()
	var batch []unacked
	var acks bytes.Buffer
	for {
		b.ackMu.Lock()
		for len(a.q) == 0 && !a.gone {
			b.ackMu.Unlock()
			<-a.wake
			b.ackMu.Lock()
		}
		if len(a.q) == 0 {
			b.ackMu.Unlock()
			return
		}
		full := len(a.q) >= maxUnacked
		batch, a.q = a.q, batch[:0]
		if full {
			b.ackRoom.Broadcast()
		}
		b.ackMu.Unlock()
		b.settleAll(cl, batch, &acks)
		clear(batch)
	}
}

// settleAll settles a run of cl's PUBLISHes in order: it waits for each
// one's activations to be durable and acknowledges it — one write for the
// PUBACKs of the run, then the messages go to the broker's subscribers —
// or, when one was refused, answers it as refuse does (after what came
// before it was acknowledged).
func (b *broker) settleAll(cl *mqtt.Client, run []unacked, acks *bytes.Buffer) {
	from := 0 // run[from:i] are acknowledged in acks
	for i := range run {
		err := run[i].wait()
		if err == nil {
			ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: run[i].pk.PacketID,
				ReasonCode: packets.CodeSuccess.Code, ProtocolVersion: cl.Properties.ProtocolVersion}
			ack.PubackEncode(acks)
			continue
		}
		b.sendAcks(cl, run[from:i], acks)
		b.refuse(cl, run[i].pk, err)
		from = i + 1
	}
	b.sendAcks(cl, run[from:], acks)
}

// sendAcks writes the PUBACKs of run (encoded in acks) to cl at once, as
// mochi writes a packet (under the client's lock, so they never land
// inside another packet), and then delivers run's messages to the
// broker's subscribers.
func (b *broker) sendAcks(cl *mqtt.Client, run []unacked, acks *bytes.Buffer) {
	if acks.Len() == 0 {
		return
	}
	defer acks.Reset()
	if cl.Closed() || cl.Net.Conn == nil {
		return
	}
	cl.Lock()
	_, err := cl.Net.Conn.Write(acks.Bytes())
	cl.Unlock()
	if err != nil {
		return
	}
	for i := range run {
		b.forward(run[i].pk)
	}
}

// wait waits for u's activations to be durable: nil, or why one was not
// (u's own refusal first).
func (u *unacked) wait() error {
	err := u.err
	for _, x := range u.subs {
		if e := x.wait(); e != nil && err == nil {
			err = e
		}
	}
	return err
}

// refuse answers a PUBLISH one of whose activations was refused: a PUBACK
// with the reason (MQTT 5) or, as 3.1.1 has no negative acknowledgement,
// the connection dropped without a PUBACK (the client sends it again when
// it reconnects).
func (b *broker) refuse(cl *mqtt.Client, pk packets.Packet, err error) {
	if cl.Properties.ProtocolVersion == 5 {
		code := refusal(err)
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID, ReasonCode: code.Code}
		ack.Properties.ReasonString = code.Reason
		cl.WritePacket(ack)
		return
	}
	b.srv.DisconnectClient(cl, packets.ErrQuotaExceeded)
}

// forward delivers a PUBLISH the hook held back to the broker's
// subscribers of its topic (and keeps it, when retained), as mochi would
// have: from the node's inline client, so the hook lets it through.
func (b *broker) forward(pk packets.Packet) {
	if !pk.FixedHeader.Retain {
		subs := b.srv.Topics.Subscribers(pk.TopicName)
		if len(subs.Subscriptions) == 0 && len(subs.Shared) == 0 && len(subs.InlineSubscriptions) == 0 {
			return
		}
	}
	if cl, ok := b.srv.Clients.Get(mqtt.InlineClientId); ok {
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
		b.srv.InjectPacket(cl, pk)
	}
}

// refusal is the MQTT 5 reason code of an activation not accepted.
func refusal(err error) packets.Code {
	switch {
	case errors.Is(err, activation.ErrUnknownChain):
		return packets.ErrUnspecifiedError
	case strings.Contains(err.Error(), "larger than a pool buffer"):
		return packets.ErrPacketTooLarge
	}
	return packets.ErrQuotaExceeded
}

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

func (h *publishHook) Provides(b byte) bool { return b == mqtt.OnPublish || b == mqtt.OnDisconnect }

// OnDisconnect lets cl's acknowledger finish and stop.
func (h *publishHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	b := h.b
	b.ackMu.Lock()
	if a := b.ackers[cl]; a != nil {
		b.letGo(cl, a)
		b.ackRoom.Broadcast()
	}
	b.ackMu.Unlock()
}

func (h *publishHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // a reply the node publishes, or a PUBLISH forwarded after its PUBACK
	}
	if pk.FixedHeader.Qos == 1 {
		if sub, ok := h.b.s.target.(Submitter); ok {
			return h.onQoS1(cl, pk, sub)
		}
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
			return pk, refusal(err) // PUBACK with the reason
		}
		// MQTT 3.1.1 has no negative acknowledgement: withhold the PUBACK
		// and drop the connection, so the client sends it again when it
		// reconnects.
		go h.b.srv.DisconnectClient(cl, packets.ErrQuotaExceeded)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// onQoS1 submits the activations of a QoS 1 PUBLISH (through sub, the
// Set's target) and hands it to its client's acknowledger; mochi neither
// acknowledges nor delivers it (ErrRejectPacket): the acknowledger does
// both once it is stored. A
// PUBLISH no trigger takes goes the same way while the client has others
// waiting (PUBACKs keep their order), else mochi handles it at once.
func (h *publishHook) onQoS1(cl *mqtt.Client, pk packets.Packet, sub Submitter) (packets.Packet, error) {
	u := unacked{pk: pk}
	for _, t := range *h.b.trigs.Load() {
		if !Match(t.def.MQTT.Topic, pk.TopicName) {
			continue
		}
		qos := min(pk.FixedHeader.Qos, t.def.MQTT.QoS)
		x, err := submit(sub, t, mqttSpec(t, pk.TopicName, pk.Payload, qos, pk.Properties.ResponseTopic, pk.Properties.CorrelationData, ""))
		if err != nil {
			if qos == 0 {
				continue
			}
			u.err = err
			break
		}
		u.subs = append(u.subs, x)
	}
	if u.subs == nil && u.err == nil && !h.b.pendingAcks(cl) {
		return pk, nil
	}
	h.b.enqueue(cl, u)
	return pk, packets.ErrRejectPacket
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
// it came from). It reports false when there is no reply topic. It does
// not block (activation.Config.OnDone) and does not keep payload: the
// embedded broker copies it into each subscriber's queue; a reply to
// another broker is copied and sent in the background.
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
	ctx       context.Context // ends at stop
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
	r.ctx, r.cancel = ctx, cancel
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

// publish sends a reply to the user's broker. It does not wait (Publish
// may be called on the gateway's receive thread, and a QoS 1 PUBLISH
// waits for its PUBACK): the payload is copied and sent from a goroutine;
// a failure is logged.
func (r *remote) publish(rep activation.Reply, payload []byte) error {
	p := &paho.Publish{Topic: rep.Topic, QoS: rep.QoS, Payload: bytes.Clone(payload)}
	if rep.Correlation != nil {
		p.Properties = &paho.PublishProperties{CorrelationData: rep.Correlation}
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		if _, err := r.cm.Publish(ctx, p); err != nil {
			r.s.log.Warn("mqtt reply not published", "broker", r.url, "topic", rep.Topic, "err", err)
		}
	}()
	return nil
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
