// Package bpf loads and drives Spry's eBPF data path: one SK_MSG verdict
// program attached to one sockmap for the whole node.
//
// Every endpoint of every app (function instances and gateways) owns a
// loopback TCP socket that the daemon puts into the sockmap under the
// endpoint's instance id. A descriptor written to such a socket never
// reaches TCP: the verdict program reads the destination id (the u16 at
// offset 0 of the 16-byte descriptor, see internal/desc; the first one's,
// for a batch) and moves the message straight onto the destination
// socket's receive queue with bpf_msg_redirect_map(BPF_F_INGRESS). The receiving thread sleeps in a
// plain blocking read until then, so an idle endpoint costs no CPU.
//
// # What the program enforces
//
// The app boundary (the "SPROXY" filter). The sender is identified by the
// socket the kernel runs the program for, never by the descriptor's Src
// field: the program looks up the sending socket's local port, which the
// daemon bound and registered, and gets the sender's instance and app. A
// message is delivered only when its destination is registered and
// belongs to the sender's app; anything else (another app's instance, an
// unregistered id, a message that is not whole descriptors, or more than
// MaxDescs of them) is refused, counted, and never delivered.
//
// Batches. A message may carry up to MaxDescs descriptors for one
// destination (one write of k × 16 bytes): the program reads the first
// one's Dst and moves the whole message there, or refuses it whole, so a
// batch is delivered all or nothing. Receivers read whole descriptors
// from the byte stream and never trust a descriptor's Dst (a sender could
// put any value in the later ones; they still reach only the first one's
// endpoint, in the sender's app).
//
// Refused messages are not answered with SK_DROP: on this kernel line a
// drop verdict sticks to the sending socket (every later send from it
// fails with EACCES), so one forged or racing descriptor would cut an
// instance off for good. The program instead redirects refused messages
// into a sink socket the Sockmap owns and drains. The sender's write
// succeeds; the descriptor is gone. Senders learn that a destination does
// not exist from the transport's registry in the app's pool before they
// write (see internal/transport), and the kernel check here is the
// boundary that holds even when an instance bypasses that.
//
// Counters (the event-driven metrics): per instance id, descriptors sent,
// received and refused ("dropped"), kept by the program in an array map
// with atomic adds. Counters reads them; nothing runs while nothing moves.
//
// # Lifetime
//
// Nothing is pinned. The program and maps live as long as the daemon's
// file descriptors: when the daemon exits, however it exits (kill -9
// included), the kernel frees them, and every registered socket drops out
// of the sockmap. Instances then read end-of-file on their sockets, which
// the transport reports as ErrClosed.
//
// # Driving it
//
// The daemon, once:
//
//	sm, err := bpf.New() // error names a missing capability, if that is why
//	defer sm.Close()
//
// and hands sm to every skmsg app as transport.Options.BPF. Per endpoint
// (the skmsg fabric does this in Add and Remove):
//
//	a, peer, err := loopback.Pair()  // keep peer open while a is in use
//	err = sm.Register(id, appID, a)  // before anyone may send to id
//	…
//	err = sm.Unregister(id)
//
// Metrics, for /v1/status:
//
//	c, err := sm.Counters(id) // c.Sent, c.Received, c.Dropped
//	sm.Each(func(id uint16, app uint32, c bpf.Counters) { … }) // every registered id
//	n := sm.Refused()         // refused messages the sink swallowed, all apps
package bpf
