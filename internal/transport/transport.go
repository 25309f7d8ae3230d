// Package transport moves descriptors between the endpoints of an app: its
// function instances and its gateway.
//
// Every transport implements the same two halves:
//
//   - Fabric, the daemon's side for one app: it creates an endpoint for an
//     instance before the instance process starts (so nothing is ever sent to
//     an instance that cannot receive), hands the instance what it needs
//     (inherited files and environment), and removes the endpoint when the
//     instance is gone.
//   - Conn, one endpoint's view: Send a descriptor to another endpoint of the
//     same app, Recv the descriptors sent to this one.
//
// An instance rebuilds its Conn with Attach from what the Fabric handed it.
//
// Transports:
//
//	skmsg     loopback TCP sockets in the node's eBPF sockmap; the kernel
//	          program (internal/bpf) redirects each descriptor to the
//	          destination socket and keeps apps apart. Needs CAP_BPF and
//	          CAP_NET_ADMIN in the daemon. Idle receivers sleep in read(2).
//	uds       Unix datagram sockets in a per-app directory; no privileges needed.
//	poll      a lock-free multi-producer ring per endpoint in the app's pool;
//	          the receiver busy-polls (one core per endpoint, always). Kept
//	          as the comparison point.
//	adaptive  the same rings; the receiver spins for a budget it learns
//	          (at most Options.Spin), then sleeps on a futex in the ring, and
//	          a sender wakes it only when it announced sleep.
//
// Receiving blocks in the kernel (or waits on a futex, for ring transports) on
// a goroutine locked to its OS thread: Go's netpoller would add a wake-up hop
// of ~15 µs per round trip.
//
// # Endpoint table
//
// skmsg, poll and adaptive keep one entry per endpoint in the pool's ring
// region (pool.Layout.Endpoints entries of RingBytes each; PoolLayout says
// how big). The first word of every entry holds the owning instance id in
// its top 16 bits, so a sender in any process finds a destination by id
// and checks, in the same atomic operation that reserves room, that the
// entry still belongs to it. For skmsg the entry counts the descriptors in
// flight to the endpoint (the kernel queue is otherwise unbounded); for
// the ring transports it is the ring.
//
// # Full and gone
//
// Send never blocks. ErrFull: the destination has Depth descriptors
// waiting (ring transports: its ring is full; skmsg: Depth descriptors
// sent and not yet read; uds: the kernel's datagram queue is full).
// ErrGone: the destination has no endpoint in this app (never made,
// removed, or of another app), decided from the endpoint table (or the
// socket path, uds) at the time of the send. A destination removed while
// a send to it is under way may still take that descriptor and lose it
// with the endpoint, as with any crash; the buffer it names is reclaimed
// by the daemon.
//
// # Driving it
//
// The daemon, once:
//
//	sm, bpfErr := bpf.New() // the node's sockmap; bpfErr says why not
//	canBPF := func() error { return bpfErr }
//
// Per app:
//
//	name, why, err := transport.Resolve(cfg.Transport, canBPF) // log why
//	eps, ringBytes := transport.PoolLayout(name, slots+gateways+spare)
//	p, err := pool.Create("shop", pool.Layout{…, Endpoints: eps, RingBytes: ringBytes})
//	pollers += transport.Pollers(name, int(eps)) // warn if > runtime.NumCPU()
//	f, err := transport.New(name, transport.Options{App: "shop", Dir: dir, UID: uid, GID: gid,
//		Pool: p, BPF: sm, AppID: 7})
//	gw, err := f.Open(gatewayID)         // the gateway's own endpoint
//	h, err := f.Add(instanceID)          // before starting the instance
//	cmd.ExtraFiles = append(cmd.ExtraFiles, h.Files...)
//	cmd.Env = append(cmd.Env, h.Env...)  // plus SPRY_ID and SPRY_TRANSPORT_FDS, see Attach
//	… cmd.Start(); h.Close()             // the child holds the endpoint now
//	f.Remove(instanceID)                 // after it exited
//	f.Close(); gw.Close(); p.Close()     // app gone; sm.Close() at exit
//
// With skmsg the daemon holds the other end of every endpoint's
// connection; when the daemon dies, instances read end-of-file (Recv
// returns ErrClosed) and the kernel frees the program and maps.
//
// The instance:
//
//	c, err := transport.Attach(os.Getenv, p)
//	runtime.LockOSThread()
//	n, err := c.Recv(batch)
//	err = c.Send(d) // to d.Dst
package transport

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
)

// Errors a Conn returns. Send never blocks: a full destination is ErrFull
// (try another instance, or later), a vanished one ErrGone.
var (
	ErrFull         = errors.New("transport: destination queue full")
	ErrGone         = errors.New("transport: no such endpoint")
	ErrClosed       = errors.New("transport: endpoint closed")
	ErrNotSupported = errors.New("transport: not supported on this platform")
	ErrUnknown      = errors.New("transport: unknown transport")

	errMixed = errors.New("transport: a batch's descriptors name different destinations")
)

// sendEach is SendBatch by one Send after another, for transports whose
// sends do not batch.
func sendEach(c Conn, ds []desc.Desc) (int, error) {
	for i, d := range ds {
		if d.Dst != ds[0].Dst {
			return i, errMixed
		}
		if err := c.Send(d); err != nil {
			return i, err
		}
	}
	return len(ds), nil
}

// Conn is one endpoint: an instance's or a gateway's.
type Conn interface {
	// ID returns this endpoint's instance id.
	ID() uint16
	// Send delivers d to the endpoint d.Dst without blocking. Safe for
	// concurrent use.
	Send(d desc.Desc) error
	// SendBatch sends ds, in order, without blocking; every descriptor
	// must name the same destination (ds[0].Dst). It returns how many
	// went: ds[:n] were sent, and err says why ds[n:] were not. skmsg
	// sends up to MaxBatch of them in one message, which the kernel
	// delivers whole or not at all (one wake-up of the receiver for the
	// batch); the other transports send them one by one. Safe for
	// concurrent use.
	SendBatch(ds []desc.Desc) (int, error)
	// Recv blocks until at least one descriptor arrives, then fills ds
	// with as many as are queued, up to len(ds). Only one goroutine may
	// call Recv, and it should be locked to its OS thread. After Close it
	// returns ErrClosed.
	Recv(ds []desc.Desc) (int, error)
	// Close wakes a blocked Recv and releases the endpoint.
	Close() error
}

// Poller is implemented by endpoints whose descriptors arrive on a file
// descriptor (skmsg, uds): an event loop can watch FD for readability
// among its other sockets and take what arrived with TryRecv, instead of
// giving the endpoint a thread that sleeps in Recv. Only one goroutine
// may receive, by Recv or TryRecv.
type Poller interface {
	// FD returns the socket the descriptors arrive on. The caller may
	// duplicate it to watch it, never close it; Close makes it readable
	// (end of file) only after marking the endpoint closed, so a TryRecv
	// after that readiness returns ErrClosed: a watcher needs no second
	// look.
	FD() int
	// TryRecv fills ds with the descriptors queued now, up to len(ds)
	// (at most MaxBatch), without blocking: 0 and nil when none are. A
	// call that returns fewer than it was asked for took all that was
	// queued: the next descriptor to arrive makes FD readable again.
	TryRecv(ds []desc.Desc) (int, error)
}

// Fabric is the daemon's side of a transport for one app.
type Fabric interface {
	// Name returns the transport's name ("uds", …).
	Name() string
	// Add creates instance id's endpoint, ready to receive, and returns
	// what the instance process must inherit. The caller closes the
	// Handoff once the process started.
	Add(id uint16) (Handoff, error)
	// Open creates an endpoint for the daemon itself (the gateway).
	Open(id uint16) (Conn, error)
	// Remove deletes id's endpoint: later sends to id fail with ErrGone.
	// Removing an unknown id is not an error.
	Remove(id uint16) error
	// Close removes every endpoint the fabric made.
	Close() error
}

// Repairer is implemented by fabrics whose endpoint table is in the app's
// pool (skmsg, poll, adaptive), where any process of the app can write it.
// Repair writes every endpoint's owner back into its entry, so that a
// process of the app that scribbled there cannot cut the others off for
// good; the daemon calls it now and then.
type Repairer interface {
	Repair()
}

// Handoff is what an instance process inherits for its endpoint.
type Handoff struct {
	Files []*os.File // appended to the process's ExtraFiles
	Env   []string   // KEY=value, added to its environment
}

// Close closes the daemon's copies of the handed-off files.
func (h Handoff) Close() {
	for _, f := range h.Files {
		f.Close()
	}
}

// Options configure a Fabric.
type Options struct {
	App  string // app name, for messages
	Dir  string // per-app directory for endpoint files (uds); must exist
	UID  int    // owner given to endpoint files; -1 leaves them to the daemon
	GID  int
	Pool *pool.Pool // the app's pool, laid out per PoolLayout (skmsg, poll, adaptive)

	// skmsg only.
	BPF   Sockmap // the node's sockmap: a *bpf.Sockmap (bpf.New, once per daemon)
	AppID uint32  // non-zero, different for every app on the node: the kernel keeps apps apart by it

	// adaptive only: the most an idle receiver spins before it sleeps
	// (each receiver learns how much of it pays). 0 means DefaultSpin.
	Spin time.Duration
}

// Sockmap is what the skmsg transport needs of the node's sockmap;
// *bpf.Sockmap implements it. An interface, so that function instances,
// which link this package, do not link the eBPF loader.
type Sockmap interface {
	// Register puts fd, a connected loopback TCP socket, into the sockmap
	// under instance id of app.
	Register(id uint16, app uint32, fd int) error
	// Unregister takes id out.
	Unregister(id uint16) error
}

// DefaultSpin is the most an adaptive receiver spins before it sleeps: a
// few futex wake-ups' worth, so a steady stream never pays for one.
const DefaultSpin = 50 * time.Microsecond

// MaxBatch is the most descriptors one Recv takes (from the kernel, or
// from a ring).
const MaxBatch = 64

// Depth is how many descriptors may wait for one endpoint (skmsg, poll,
// adaptive) before Send says ErrFull.
const Depth = 1024

// Environment variables an instance reads in Attach.
const (
	EnvTransport = "SPRY_TRANSPORT"     // transport name
	EnvID        = "SPRY_ID"            // the instance's id
	EnvFDs       = "SPRY_TRANSPORT_FDS" // comma-separated inherited fds, in Handoff.Files order
	EnvUDSDir    = "SPRY_UDS_DIR"       // uds: the app's endpoint directory
	EnvEndpoint  = "SPRY_ENDPOINT"      // skmsg, poll, adaptive: the entry in the pool's endpoint table
	EnvSpin      = "SPRY_SPIN_NS"       // adaptive: Options.Spin in nanoseconds
)

// Names lists the transports this build knows, in the order `auto` prefers.
var Names = []string{"skmsg", "uds", "adaptive", "poll"}

// New makes the Fabric of transport name for one app.
func New(name string, o Options) (Fabric, error) {
	switch name {
	case "uds":
		return newUDSFabric(o)
	case "skmsg":
		return newSkmsgFabric(o)
	case "poll", "adaptive":
		return newRingFabric(name, o)
	}
	return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Names, ", "))
}

// Attach rebuilds an instance's Conn from its environment (read through
// env, normally os.Getenv) and inherited files.
func Attach(env func(string) string, p *pool.Pool) (Conn, error) {
	id, err := strconv.ParseUint(env(EnvID), 10, 16)
	if err != nil || id == 0 {
		return nil, fmt.Errorf("transport: %s=%q is not an instance id", EnvID, env(EnvID))
	}
	var fds []int
	if s := env(EnvFDs); s != "" {
		for _, f := range strings.Split(s, ",") {
			fd, err := strconv.Atoi(f)
			if err != nil || fd < 0 {
				return nil, fmt.Errorf("transport: %s=%q: bad fd %q", EnvFDs, s, f)
			}
			fds = append(fds, fd)
		}
	}
	switch name := env(EnvTransport); name {
	case "uds":
		if len(fds) != 1 {
			return nil, fmt.Errorf("transport: uds wants 1 inherited fd, %s=%q", EnvFDs, env(EnvFDs))
		}
		return attachUDS(uint16(id), fds[0], env(EnvUDSDir))
	case "skmsg":
		if len(fds) != 1 {
			return nil, fmt.Errorf("transport: skmsg wants 1 inherited fd, %s=%q", EnvFDs, env(EnvFDs))
		}
		ep, err := endpointEnv(env)
		if err != nil {
			return nil, err
		}
		return attachSkmsg(uint16(id), fds[0], ep, p)
	case "poll", "adaptive":
		ep, err := endpointEnv(env)
		if err != nil {
			return nil, err
		}
		spin := DefaultSpin
		if s := env(EnvSpin); s != "" {
			ns, err := strconv.ParseInt(s, 10, 64)
			if err != nil || ns < 0 {
				return nil, fmt.Errorf("transport: %s=%q is not a duration in ns", EnvSpin, s)
			}
			spin = time.Duration(ns)
		}
		return attachRing(name, uint16(id), ep, p, spin)
	case "":
		return nil, fmt.Errorf("transport: %s not set: is this process started by spry?", EnvTransport)
	default:
		return nil, fmt.Errorf("%w %q", ErrUnknown, name)
	}
}

func endpointEnv(env func(string) string) (uint32, error) {
	ep, err := strconv.ParseUint(env(EnvEndpoint), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("transport: %s=%q is not an endpoint index", EnvEndpoint, env(EnvEndpoint))
	}
	return uint32(ep), nil
}
