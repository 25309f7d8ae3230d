// Package pool is an app's shared-memory pool: one memfd, mapped by the
// daemon and by that app's instances only, holding every request payload
// the app processes so that functions pass descriptors, never data.
//
// # Layout
//
//	page 0            header: magic, version, layout, free-list head, counters
//	routing region    gateway endpoint, functions → instance slots, chains → steps,
//	                  slot id/state/capacity  (read-only in instances; the
//	                  daemon reads only its own copy)
//	stats region      per-slot counters: queue, in flight, served, busy time …
//	ring region       per-endpoint descriptor rings (only for ring transports)
//	buffer headers    HeaderSize bytes per buffer: generation, owner, length,
//	                  request id, status, content type, hop timestamps,
//	                  request metadata (method, path, query, selected headers)
//	arena             the payloads, BufferSize bytes each
//
// # Ownership
//
// Every buffer has an ownership word (generation, holder, transit; see
// own.go). A sender marks the buffer in transit to the destination
// (Transfer) and sends the descriptor; the receiver becomes the holder only
// by Accept, a compare-and-swap that fails for a stale, forged or duplicate
// descriptor. Free bumps the generation. When an endpoint dies, the
// daemon's Reclaim takes back every buffer it held or that was in transit
// from or to it.
//
// # Driving it
//
// The daemon:
//
//	p, err := pool.Create("shop", pool.Layout{Buffers: 1024, BufferSize: 64 << 10,
//		Functions: 3, Chains: 1, Slots: 6})
//	p.SetFunction(0, 0, 2) // function 0 owns slots 0 and 1 …
//	p.SetChain(0, []uint16{0, 1, 2})
//	p.StartSlot(0, id, capacity) // before starting the instance process
//	p.SetSlotState(0, pool.SlotReady) // once its endpoint is ready
//
// An instance, with the fd it inherited:
//
//	p, err := pool.Attach(fd)
//	if !p.Accept(d.Buf, d.Gen, d.Src, self) { /* stale or forged: drop and count */ }
//	payload := p.Data(d.Buf) // a slice of shared memory, no copy
//	fn, ok := p.Step(d.Chain, int(d.Hop)+1)
//	slot, next, ok := p.Pick(fn, rotate)
//
// Alloc and Free are lock-free (a Treiber stack whose head carries an ABA
// tag), safe across processes, and allocate nothing.
package pool
