// Package trigger starts chains on events that are not HTTP requests to
// their routes: cron schedules and every: intervals, MQTT PUBLISHes on a
// topic filter (through the node's embedded broker, mochi-mqtt, or as a
// paho client of a broker of the user's), and CloudEvents sent to the
// node's event endpoint (Knative-Broker-like filters on type and source).
// Each firing, message or event becomes an activation (package
// activation) caused by the trigger.
//
// # Driving it
//
//	set, err := trigger.Start(trigger.Config{Triggers: defs, Target: node, MQTT: "127.0.0.1:1883"})
//	…
//	set.Publish(rec.Reply, result) // a chain's result to its MQTT reply topic
//	for _, t := range set.Events("com.example.order", "/shop") { … } // the event endpoint's fan-out
//	set.Close()
package trigger
