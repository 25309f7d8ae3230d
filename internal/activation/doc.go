// Package activation runs asynchronous invocations and keeps activation
// records: one per invocation of a chain, with what caused it, its state,
// status, times, each step's duration, attempts, result and error.
//
// The Store is a write-ahead log in front of Shards bbolt files under the
// node's data directory. One writer goroutine appends every write that
// must be durable to the log and flushes it once for all the writes
// waiting at that moment (group commit: an accepted activation costs its
// share of one fdatasync, not bbolt's page writes and two flushes); an
// applier goroutine then applies the log, a few times a second, to the
// bbolt files, which stay the store that reads, lists, retention and
// redrive use, and retires the log segments wholly applied. Open replays
// what the files had not applied. A kill -9 at any instant loses no
// acknowledged activation (TestKillMidBatch kills a writer process with
// most of what it acknowledged only in the log; TestWALTornWrite tears a
// write).
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
