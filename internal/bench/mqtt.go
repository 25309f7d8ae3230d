package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/spry-dev/spry/internal/bench/proc"
)

// spry bench mqtt: MQTT publish → a two-step chain (upper, reverse) →
// reply, measured at the publisher: messages per second, p50/p99 from the
// PUBLISH to its reply, and CPU per message of the system under test.
//
//   - spry: the node's embedded broker, a trigger on bench/in/+ with the
//     reply topic bench/out; the payload goes into the pool once and the
//     steps pass a descriptor.
//   - broker: the baseline MQTT connectors build: the same steps as
//     processes subscribed to a broker (the same mochi-mqtt broker, alone
//     in its process), each republishing its output to the next step's
//     topic, the last to bench/out.
//
// QoS 0 and 1, modes taking turns, medians over the rounds.

// MQTTOptions configure spry bench mqtt.
type MQTTOptions struct {
	Duration time.Duration
	Rounds   int
	Clients  int // publishers, each with one message out at a time
	Payload  int
	QoS      []byte
	Exe, Dir string
	Log      io.Writer
}

// MQTTResult is one mode at one QoS.
type MQTTResult struct {
	Mode     string  `json:"mode"`
	QoS      byte    `json:"qos"`
	MsgsPS   float64 `json:"msgsPerSec"`
	P50      float64 `json:"p50Ms"`
	P99      float64 `json:"p99Ms"`
	CPUPerUs float64 `json:"cpuUsPerMsg"`
	// The load generator's own CPU per message (the publishers and the
	// reply subscriber, this process): not the system's, but it runs on
	// the same cores, so it bounds how far messages/s can go.
	LoadCPUPerUs float64 `json:"loadCpuUsPerMsg"`
	Lost         uint64  `json:"lost"` // published, no reply within 10 s
}

// MQTTReport is spry bench mqtt's result.
type MQTTReport struct {
	Machine  Machine        `json:"machine"`
	Clients  int            `json:"clients"`
	Payload  int            `json:"payload"`
	Duration string         `json:"duration"`
	Rounds   [][]MQTTResult `json:"rounds"`
	Median   []MQTTResult   `json:"median"`
	// Per QoS: spry's messages/s ÷ the baseline's (goal ≥ 5), and its
	// CPU per message ÷ the baseline's (goal ≤ 0.2).
	Speedup map[string]float64 `json:"speedup"`
	CPU     map[string]float64 `json:"cpuRatio"`
}

const mqttBenchYAML = `app: mqttbench
pool: {buffers: 2048, bufferSize: 4KiB}
limits: {inflight: 1024, async: 256}
functions:
  upper: {builtin: upper}
  reverse: {builtin: reverse}
chains:
  work:
    route: /work
    steps: [upper, reverse]
    record: none
    async: {queue: 1000000}
activations:
  retention: {count: 200000}
triggers:
  in0: {mqtt: {topic: "bench/q0/+", qos: 0, reply: bench/out}, chain: work}
  in1: {mqtt: {topic: "bench/q1/+", qos: 1, reply: bench/out}, chain: work}
`

// mqttSystem is a system under test: where to publish and its processes.
type mqttSystem struct {
	broker string
	roots  []int
	stop   func()
}

func startSpryMQTT(ctx context.Context, o MQTTOptions) (*mqttSystem, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	n, err := startNode(o.Exe, filepath.Join(o.Dir, "spry"), "spry", mqttBenchYAML, "--mqtt", ports[0])
	if err != nil {
		return nil, err
	}
	if err := n.waitUp(ctx, 60*time.Second, func() error { _, err := fetchStatus(n.admin); return err }); err != nil {
		n.shutdown()
		return nil, err
	}
	return &mqttSystem{broker: ports[0], roots: []int{n.pid()}, stop: func() { n.shutdown() }}, nil
}

func startBrokerMQTT(ctx context.Context, o MQTTOptions) (*mqttSystem, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(o.Dir, "broker")
	var kids []*child
	stop := func() {
		for i := len(kids) - 1; i >= 0; i-- {
			kids[i].stop(5 * time.Second)
		}
	}
	b, err := startChild("broker", exec.Command(o.Exe, "bench-mqtt", "broker", "--listen", ports[0]), filepath.Join(dir+"-broker.log"))
	if err != nil {
		return nil, err
	}
	kids = append(kids, b)
	for i := 0; ; i++ {
		if c, err := net.DialTimeout("tcp", ports[0], time.Second); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			stop()
			return nil, fmt.Errorf("bench: the baseline broker did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, q := range []string{"0", "1"} {
		for _, s := range []struct{ in, out, fn string }{
			{"bench/q" + q + "/+", "bench/s1q" + q, "upper"}, {"bench/s1q" + q, "bench/out", "reverse"},
		} {
			name := "step-" + s.fn + "-q" + q
			c, err := startChild(name, exec.Command(o.Exe, "bench-mqtt", "step", "--broker", ports[0], "--in", s.in, "--out", s.out,
				"--fn", s.fn, "--qos", q), filepath.Join(dir+"-"+name+".log"))
			if err != nil {
				stop()
				return nil, err
			}
			kids = append(kids, c)
		}
	}
	time.Sleep(time.Second) // the steps subscribed
	var roots []int
	for _, k := range kids {
		roots = append(roots, k.pid())
	}
	return &mqttSystem{broker: ports[0], roots: roots, stop: stop}, nil
}

// RunMQTT runs spry bench mqtt.
func RunMQTT(ctx context.Context, o MQTTOptions) (*MQTTReport, error) {
	o.Rounds = max(o.Rounds, 1)
	if o.Clients < 1 {
		o.Clients = 16
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Payload <= 0 {
		o.Payload = 64
	}
	if len(o.QoS) == 0 {
		o.QoS = []byte{0, 1}
	}
	logf := lineLogger(o.Log)
	cleanup, err := workspace(&o.Exe, &o.Dir, "spry-bench-mqtt-")
	defer cleanup()
	if err != nil {
		return nil, err
	}
	systems := map[string]*mqttSystem{}
	for _, m := range []struct {
		name  string
		start func(context.Context, MQTTOptions) (*mqttSystem, error)
	}{{"spry", startSpryMQTT}, {"broker", startBrokerMQTT}} {
		s, err := m.start(ctx, o)
		if err != nil {
			return nil, fmt.Errorf("bench mqtt: %s: %w", m.name, err)
		}
		defer s.stop()
		systems[m.name] = s
	}
	rep := &MQTTReport{Machine: machine(), Clients: o.Clients, Payload: o.Payload, Duration: o.Duration.String(),
		Speedup: map[string]float64{}, CPU: map[string]float64{}}
	logf("bench mqtt: publish → upper → reverse → reply, %d B, %d publishers, %s per mode and QoS, %d round(s)", o.Payload, o.Clients, o.Duration, o.Rounds)
	for r := range o.Rounds {
		var round []MQTTResult
		for _, q := range o.QoS {
			for _, mode := range []string{"spry", "broker"} {
				res, err := mqttLoad(ctx, systems[mode], q, o)
				if err != nil {
					return nil, fmt.Errorf("bench mqtt: %s qos %d: %w", mode, q, err)
				}
				res.Mode = mode
				round = append(round, res)
				logf("bench mqtt: round %d/%d: %-6s qos %d: %.0f msgs/s, p50 %.2f ms, p99 %.2f ms, %.1f µs CPU/msg (load generator %.1f), %d lost",
					r+1, o.Rounds, mode, q, res.MsgsPS, res.P50, res.P99, res.CPUPerUs, res.LoadCPUPerUs, res.Lost)
			}
		}
		rep.Rounds = append(rep.Rounds, round)
	}
	for i := range rep.Rounds[0] {
		m := MQTTResult{Mode: rep.Rounds[0][i].Mode, QoS: rep.Rounds[0][i].QoS}
		var rate, p50, p99, cpu, lcpu []float64
		for _, rd := range rep.Rounds {
			rate, p50, p99, cpu = append(rate, rd[i].MsgsPS), append(p50, rd[i].P50), append(p99, rd[i].P99), append(cpu, rd[i].CPUPerUs)
			lcpu = append(lcpu, rd[i].LoadCPUPerUs)
			m.Lost += rd[i].Lost
		}
		m.MsgsPS, m.P50, m.P99, m.CPUPerUs, m.LoadCPUPerUs = median(rate), median(p50), median(p99), median(cpu), median(lcpu)
		rep.Median = append(rep.Median, m)
	}
	for _, q := range o.QoS {
		var speed, cpu []float64
		for _, rd := range rep.Rounds {
			var s, b MQTTResult
			for _, x := range rd {
				if x.QoS == q && x.Mode == "spry" {
					s = x
				} else if x.QoS == q {
					b = x
				}
			}
			if b.MsgsPS > 0 && b.CPUPerUs > 0 {
				speed, cpu = append(speed, s.MsgsPS/b.MsgsPS), append(cpu, s.CPUPerUs/b.CPUPerUs)
			}
		}
		k := fmt.Sprintf("qos%d", q)
		rep.Speedup[k], rep.CPU[k] = median(speed), median(cpu)
	}
	return rep, nil
}

// mqttLoad publishes for o.Duration from o.Clients publishers, each with
// one message out at a time (closed loop), and times every reply.
func mqttLoad(ctx context.Context, s *mqttSystem, qos byte, o MQTTOptions) (MQTTResult, error) {
	res := MQTTResult{QoS: qos}
	var mu sync.Mutex
	waiting := map[string]chan struct{}{}
	replies := make(chan []byte, 4096)
	sub, err := mqttClient(ctx, s.broker, "bench-sub", []string{"bench/out"}, qos, func(p []byte) { replies <- p })
	if err != nil {
		return res, err
	}
	defer disconnect(sub)
	go func() {
		for p := range replies {
			mu.Lock()
			ch := waiting[string(p)]
			delete(waiting, string(p))
			mu.Unlock()
			if ch != nil {
				close(ch)
			}
		}
	}()
	defer close(replies)
	var pubs []*autopaho.ConnectionManager
	for i := range min(o.Clients, 8) {
		c, err := mqttClient(ctx, s.broker, fmt.Sprintf("bench-pub-%d", i), nil, qos, nil)
		if err != nil {
			return res, err
		}
		defer disconnect(c)
		pubs = append(pubs, c)
	}
	hist := hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
	var hmu sync.Mutex
	var done, lost atomic.Uint64
	var measuring atomic.Bool
	warm := min(2*time.Second, o.Duration/4)
	stopAt := time.Now().Add(warm + o.Duration)
	var wg sync.WaitGroup
	for c := range o.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pub := pubs[c%len(pubs)]
			body := make([]byte, o.Payload)
			for seq := 0; time.Now().Before(stopAt) && ctx.Err() == nil; seq++ {
				tok := fmt.Sprintf("c%03ds%09d", c, seq)
				n := copy(body, strings.ToLower(tok))
				for i := n; i < len(body); i++ {
					body[i] = 'a' + byte(i%26)
				}
				want := expectReply(body)
				ch := make(chan struct{})
				mu.Lock()
				waiting[string(want)] = ch
				mu.Unlock()
				began := time.Now()
				if _, err := pub.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("bench/q%d/c%d", qos, c), QoS: qos, Payload: body}); err != nil {
					mu.Lock()
					delete(waiting, string(want))
					mu.Unlock()
					lost.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				select {
				case <-ch:
					if measuring.Load() {
						hmu.Lock()
						hist.RecordValue(max(time.Since(began).Microseconds(), 1))
						hmu.Unlock()
						done.Add(1)
					}
				case <-time.After(10 * time.Second):
					mu.Lock()
					delete(waiting, string(want))
					mu.Unlock()
					lost.Add(1)
				}
			}
		}()
	}
	time.Sleep(warm)
	pids, self := allDescendants(s.roots), []int{os.Getpid()}
	cpu0, load0 := proc.CPUOf(pids), proc.CPUOf(self)
	t0 := time.Now()
	measuring.Store(true)
	time.Sleep(o.Duration)
	measuring.Store(false)
	el := time.Since(t0)
	cpu, loadCPU := proc.CPUOf(pids)-cpu0, proc.CPUOf(self)-load0
	wg.Wait()
	n := done.Load()
	res.MsgsPS = float64(n) / el.Seconds()
	res.P50, res.P99 = float64(hist.ValueAtQuantile(50))/1000, float64(hist.ValueAtQuantile(99))/1000
	res.CPUPerUs, res.LoadCPUPerUs = perUs(cpu, n), perUs(loadCPU, n)
	res.Lost = lost.Load()
	return res, nil
}

func allDescendants(roots []int) []int {
	var out []int
	for _, r := range roots {
		out = append(out, proc.Descendants(r)...)
	}
	return out
}

// expectReply is what upper then reverse make of p.
func expectReply(p []byte) []byte {
	out := make([]byte, len(p))
	for i, c := range p {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		out[len(p)-1-i] = c
	}
	return out
}

// mqttClient connects an MQTT 5 client to broker (subscribed to topics
// when given, delivering payloads to got) and waits for the connection.
func mqttClient(ctx context.Context, broker, id string, topics []string, qos byte, got func([]byte)) (*autopaho.ConnectionManager, error) {
	u, _ := url.Parse("mqtt://" + broker)
	up := make(chan error, 1)
	var subs []paho.SubscribeOptions
	for _, t := range topics {
		subs = append(subs, paho.SubscribeOptions{Topic: t, QoS: qos})
	}
	cfg := autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			var err error
			if len(subs) > 0 {
				_, err = cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
			}
			select {
			case up <- err:
			default:
			}
		},
		ClientConfig: paho.ClientConfig{ClientID: fmt.Sprintf("%s-%d", id, time.Now().UnixNano())},
	}
	if got != nil {
		cfg.ClientConfig.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { got(pr.Packet.Payload); return true, nil }}
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		return nil, err
	}
	select {
	case err := <-up:
		if err != nil {
			disconnect(cm)
			return nil, err
		}
	case <-time.After(10 * time.Second):
		disconnect(cm)
		return nil, fmt.Errorf("no MQTT connection to %s in 10 s", broker)
	}
	return cm, nil
}

func disconnect(cm *autopaho.ConnectionManager) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cm.Disconnect(ctx)
}

// WriteMQTTReport writes report.json and report.md into dir.
func WriteMQTTReport(dir string, r *MQTTReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# spry bench mqtt\n\n%s, %d cores; publish → upper → reverse → reply, %d B, %d publishers (one message out each), %s per mode and QoS, %d round(s) (medians).\n\n",
		r.Machine.CPU, r.Machine.Cores, r.Payload, r.Clients, r.Duration, len(r.Rounds))
	fmt.Fprintf(&b, "| mode | QoS | msgs/s | p50 ms | p99 ms | CPU µs/msg | load generator CPU µs/msg | lost |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, m := range r.Median {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.2f | %.2f | %.1f | %.1f | %d |\n", m.Mode, m.QoS, m.MsgsPS, m.P50, m.P99, m.CPUPerUs, m.LoadCPUPerUs, m.Lost)
	}
	fmt.Fprintln(&b)
	for k, v := range r.Speedup {
		fmt.Fprintf(&b, "- %s: spry ÷ broker republish: **%.1fx** messages/s (goal ≥ 5), **%.2fx** CPU per message (goal ≤ 0.2)\n", k, v, r.CPU[k])
	}
	if err := writeJSON(dir, r); err != nil {
		return err
	}
	return writeMarkdown(dir, func(w io.Writer) { io.WriteString(w, b.String()) })
}
