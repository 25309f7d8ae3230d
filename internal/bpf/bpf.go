package bpf

import "errors"

// Errors returned by New.
var (
	// ErrNotSupported: this platform or kernel cannot run the program.
	ErrNotSupported = errors.New("bpf: not supported")
	// ErrPermission: the process lacks what loading needs (a capability,
	// usually); the wrapping error names it.
	ErrPermission = errors.New("bpf: not permitted")
)

// Errors returned by Register and Unregister.
var (
	ErrBadID      = errors.New("bpf: instance id 0 is reserved")
	ErrRegistered = errors.New("bpf: instance id already registered")
	ErrBadSocket  = errors.New("bpf: not a connected IPv4 TCP socket")
	ErrClosed     = errors.New("bpf: sockmap closed")
)

// Counters are one instance's message counts, kept by the kernel program.
type Counters struct {
	Sent     uint64 // descriptors it sent that were delivered
	Received uint64 // descriptors delivered to it
	Dropped  uint64 // descriptors it sent that the program refused
}

// SinkID is the sockmap key of the sink that swallows refused messages.
// No instance can have it: it is also desc.None.
const SinkID = 0
