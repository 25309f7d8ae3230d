package wasm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// The control channel between the node and a sandbox host: JSON objects,
// one a line, over a Unix socket the host inherits (EnvControlFD). It
// carries what changes rarely — which functions the host runs and which
// instances it holds; requests never pass through it.

// Environment a sandbox host is started with, besides the SDK's pool fd
// and the transport's variables for its own endpoint.
const (
	EnvControlFD = "SPRY_WASM_CONTROL_FD" // the control socket
	EnvCacheDir  = "SPRY_WASM_CACHE"      // where compiled modules are kept
	EnvApp       = "SPRY_APP"             // the app's name, for messages
)

// Commands from the node.
const (
	OpLoad  = "load"  // load function Fn from Module
	OpStart = "start" // start instance ID of function Fn in Slot
	OpStop  = "stop"  // stop instance ID (the node drained it)
)

// Command is one message from the node to its sandbox host.
type Command struct {
	Op   string `json:"op"`
	Fn   int    `json:"fn"`             // function index in the app
	ID   uint16 `json:"id,omitempty"`   // instance id (start, stop)
	Slot uint32 `json:"slot,omitempty"` // instance slot (start)

	// load
	Name    string        `json:"name,omitempty"`
	Module  string        `json:"module,omitempty"`  // path of the .wasm
	Memory  uint64        `json:"memory,omitempty"`  // per-instance memory limit, bytes
	Timeout time.Duration `json:"timeout,omitempty"` // longest one step may run
	Grants  Grants        `json:"grants"`
	Spares  int           `json:"spares,omitempty"` // clones kept ready for fast starts
	// InitTimeout bounds the guest's own initialisation.
	InitTimeout time.Duration `json:"initTimeout,omitempty"`
}

// Events from the host.
const (
	EvUp        = "up"        // the host receives on its endpoint
	EvLoaded    = "loaded"    // function Fn is ready to start instances (or Err)
	EvReady     = "ready"     // instance ID runs (or Err: it could not start)
	EvRestarted = "restarted" // instance ID failed (Why) and was replaced in place
	EvStopped   = "stopped"   // instance ID is gone after a stop
)

// Event is one message from a sandbox host to the node.
type Event struct {
	Ev  string `json:"ev"`
	Fn  int    `json:"fn,omitempty"`
	ID  uint16 `json:"id,omitempty"`
	Err string `json:"err,omitempty"` // the command failed
	Why string `json:"why,omitempty"` // restarted: what happened to the instance
	// Micros: loaded, the initialisation; ready, the instance's start.
	Micros float64 `json:"us,omitempty"`
	// loaded: the snapshot's size and stored bytes (0 without one).
	Snapshot uint64 `json:"snapshot,omitempty"`
	Stored   uint64 `json:"stored,omitempty"`
	PID      int    `json:"pid,omitempty"` // up
	// loaded: how long compiling and initialising took, in microseconds.
	CompileMicros float64 `json:"compileUs,omitempty"`
	InitMicros    float64 `json:"initUs,omitempty"`
}

// maxLine bounds one control message.
const maxLine = 1 << 20

// Wire reads and writes control messages on one connection. Writes are
// safe for concurrent use.
type Wire struct {
	mu sync.Mutex
	w  io.Writer
	r  *bufio.Scanner
}

// NewWire wraps a connection.
func NewWire(rw io.ReadWriter) *Wire {
	sc := bufio.NewScanner(rw)
	sc.Buffer(make([]byte, 4096), maxLine)
	return &Wire{w: rw, r: sc}
}

// Send writes v as one line.
func (w *Wire) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err = w.w.Write(append(b, '\n'))
	return err
}

// Recv reads the next message into v; io.EOF when the peer is gone.
func (w *Wire) Recv(v any) error {
	if !w.r.Scan() {
		if err := w.r.Err(); err != nil {
			return err
		}
		return io.EOF
	}
	if err := json.Unmarshal(w.r.Bytes(), v); err != nil {
		return fmt.Errorf("wasm: control message: %w", err)
	}
	return nil
}
