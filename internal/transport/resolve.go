package transport

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Resolve picks the transport for an app configured with name, for the
// daemon's one log line about it. canBPF reports whether this daemon may
// use eBPF (typically: bpf.New succeeded, or the error it returned); it is
// called only for "auto" and "skmsg".
//
//	auto   skmsg when canBPF returns nil, else uds; reason says why
//	skmsg  skmsg, or an error wrapping canBPF's (which names what is missing)
//	other  itself, if known
func Resolve(name string, canBPF func() error) (chosen, reason string, err error) {
	if canBPF == nil {
		canBPF = func() error { return errors.New("no eBPF check given") }
	}
	switch name {
	case "auto", "":
		if err := canBPF(); err != nil {
			return "uds", fmt.Sprintf("eBPF unavailable (%v); uds needs no privileges", err), nil
		}
		return "skmsg", "eBPF available: descriptors are redirected in the kernel", nil
	case "skmsg":
		if err := canBPF(); err != nil {
			return "", "", fmt.Errorf("transport: skmsg configured but unavailable: %w", err)
		}
		return "skmsg", "configured", nil
	}
	if !slices.Contains(Names, name) {
		return "", "", fmt.Errorf("%w %q (known: auto, %s)", ErrUnknown, name, strings.Join(Names, ", "))
	}
	return name, "configured", nil
}

// PoolLayout returns what transport name needs in its app's pool:
// pool.Layout.Endpoints and pool.Layout.RingBytes. endpoints is how many
// endpoints may exist at once: instance slots, gateway endpoints, and room
// for replacements that start before their predecessors are removed.
// uds needs none (0, 0).
func PoolLayout(name string, endpoints uint32) (eps, ringBytes uint32) {
	switch name {
	case "skmsg":
		return endpoints, skmsgEntryBytes
	case "poll", "adaptive":
		return endpoints, RingBytes(Depth)
	}
	return 0, 0
}

// Pollers returns how many threads transport name keeps busy whether or
// not traffic flows, for an app with endpoints endpoints that receive:
// poll spins one core per endpoint; the others sleep when idle (adaptive
// spins only for Options.Spin after each burst). The daemon warns when
// the sum over its apps exceeds the cores it has.
func Pollers(name string, endpoints int) int {
	if name == "poll" {
		return endpoints
	}
	return 0
}
