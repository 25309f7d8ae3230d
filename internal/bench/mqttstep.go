package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/eclipse/paho.golang/paho"

	"github.com/spry-dev/spry/internal/trigger"
)

// The processes of spry bench mqtt's baseline: a broker alone (the same
// mochi-mqtt broker a node embeds), and steps as MQTT connectors build
// them: subscribe to a topic, run the function on the payload, publish the
// output to the next topic.

// RunMQTTBroker serves an MQTT broker on addr until SIGTERM.
func RunMQTTBroker(addr string) error {
	s, err := trigger.Start(trigger.Config{MQTT: addr, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	defer s.Close()
	waitSignal()
	return nil
}

func waitSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
	<-ch
}

// RunMQTTStep runs one step until SIGTERM: each message on in (a topic
// filter) is transformed by fn (upper or reverse) and published to out.
func RunMQTTStep(broker, in, out, fn string, qos byte) error {
	var f func([]byte)
	switch fn {
	case "upper":
		f = func(p []byte) {
			for i, c := range p {
				if 'a' <= c && c <= 'z' {
					p[i] = c - 'a' + 'A'
				}
			}
		}
	case "reverse":
		f = func(p []byte) {
			for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
				p[i], p[j] = p[j], p[i]
			}
		}
	default:
		return fmt.Errorf("bench-mqtt step: unknown function %q (upper, reverse)", fn)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	work := make(chan []byte, 4096)
	cm, err := mqttClient(ctx, broker, "step-"+fn+"-"+out, []string{in}, qos, func(p []byte) {
		b := append([]byte(nil), p...)
		work <- b
	})
	if err != nil {
		return err
	}
	defer disconnect(cm)
	// Publishers: up to 64 messages waiting for their PUBACK at once.
	for range 64 {
		go func() {
			for p := range work {
				f(p)
				cm.Publish(ctx, &paho.Publish{Topic: out, QoS: qos, Payload: p})
			}
		}()
	}
	waitSignal()
	return nil
}
