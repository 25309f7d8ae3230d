// Package activation runs asynchronous invocations and keeps activation
// records: one per invocation of a chain, with what caused it, its state,
// status, times, each step's duration, attempts, result and error.
//
// The Store is Shards bbolt files under the node's data directory. Every
// write to a shard goes through its one writer goroutine, which commits
// all waiting writes in one transaction (group commit), so durability
// costs one disk flush per batch rather than per activation, and the
// shards flush side by side; a kill -9 at any instant leaves every file
// consistent and every acknowledged activation in it (TestKillMidBatch).
//
// The Manager owns the life of an activation:
//
//	accept ──durable──▶ queued ──▶ running ──▶ succeeded | failed
//	                       ▲           │
//	                       └─back-off──┤ 5xx, 429, not admitted
//	                                   ▼ attempts or age used up
//	                                  dead ──redrive──▶ queued
//
// It is at-least-once: an attempt whose outcome was not yet stored when
// the node died (it was running, or had finished a moment before) runs
// again after the restart.
//
// # Driving it
//
// The daemon opens the store, makes the manager with an Invoker per app
// (the gateway's admission path) and starts it:
//
//	s, err := activation.Open(dataDir)
//	m, err := activation.New(activation.Config{Store: s, Invoker: invokerOf,
//		Apps: apps, Chains: chains, Retention: r, OnDone: publishReply})
//	n, err := m.Start() // re-queues what was owed before a restart
//	…
//	a, err := m.Accept(activation.Spec{App: "shop", Chain: "order",
//		Cause: activation.Cause{Kind: activation.CauseAsync}, Body: body})
//	// a.ID is durable: answer 202 now
//	…
//	m.Close()
//	s.Close()
package activation
