package bpf

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/spry-dev/spry/internal/bpf/loopback"
	"golang.org/x/sys/unix"
)

// Sockmap is the node's sockmap with the verdict program attached, and
// the registry of which socket belongs to which instance and app.
// Methods are safe for concurrent use.
type Sockmap struct {
	socks, peers, apps, counts *ebpf.Map
	prog                       *ebpf.Program

	mu     sync.Mutex
	ids    map[uint16]member // registered instances
	ports  map[uint16]uint16 // local port → instance id, for registered sockets
	closed bool
	once   sync.Once // release

	sink    int // the sink socket (in the sockmap under SinkID) and its peer
	sinkEnd int
	drained chan struct{}
	refused atomic.Uint64 // messages the sink swallowed
}

type member struct {
	app  uint32
	port uint16
}

// New creates the maps, loads the verdict program, attaches it to the
// sockmap and sets up the sink. The daemon calls it once; Close releases
// everything (so does the daemon's exit). When the process may not load
// eBPF, the error wraps ErrPermission or ErrNotSupported and names the
// reason (a missing capability, the kernel feature).
func New() (*Sockmap, error) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK (later ones
	// to the memory cgroup). Raise it where allowed; if that was needed
	// and not allowed, loading fails below and diagnose says so. (Not
	// cilium/ebpf's rlimit package: its init probes with a bpf(2) call in
	// every process that links it.)
	unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY})
	s := &Sockmap{ids: map[uint16]member{}, ports: map[uint16]uint16{}, sink: -1, sinkEnd: -1}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	var err error
	socks, peers, apps, counts := mapSpecs()
	for _, m := range []struct {
		dst  **ebpf.Map
		spec *ebpf.MapSpec
	}{{&s.socks, socks}, {&s.peers, peers}, {&s.apps, apps}, {&s.counts, counts}} {
		if *m.dst, err = ebpf.NewMap(m.spec); err != nil {
			return nil, fmt.Errorf("bpf: create map %s: %w", m.spec.Name, diagnose(err))
		}
	}
	s.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "spry_verdict",
		Type:         ebpf.SkMsg,
		Instructions: verdict(s.socks, s.peers, s.apps, s.counts),
		License:      "Dual BSD/GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("bpf: load SK_MSG program: %w", diagnose(err))
	}
	// Attached to the map, not pinned: the map holds the program, the
	// daemon's fds hold the map, and the kernel frees both when they close.
	err = link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: s.socks.FD(), Program: s.prog, Attach: ebpf.AttachSkMsgVerdict,
	})
	if err != nil {
		return nil, fmt.Errorf("bpf: attach SK_MSG program to sockmap: %w", diagnose(err))
	}
	if err := s.openSink(); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// openSink makes the socket refused messages are redirected into, and a
// goroutine that drains it so they cost no memory.
func (s *Sockmap) openSink() error {
	a, b, err := loopback.Pair()
	if err != nil {
		return fmt.Errorf("bpf: sink socket: %w", err)
	}
	s.sink, s.sinkEnd = a, b
	if err := s.socks.Update(uint32(SinkID), uint32(a), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: put sink into sockmap: %w", diagnose(err))
	}
	s.drained = make(chan struct{})
	go s.drain()
	return nil
}

func (s *Sockmap) drain() {
	defer close(s.drained)
	var buf [4096]byte
	for {
		n, err := unix.Read(s.sink, buf[:])
		switch {
		case n > 0:
			s.refused.Add(uint64(n) / descSize)
		case err == unix.EINTR:
		case err == unix.EAGAIN && !s.isClosed():
			// A wake-up without data (tcp_bpf returns EAGAIN then).
		default:
			return // closed (shutdown wakes the read) or broken
		}
	}
}

func (s *Sockmap) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Refused returns how many refused messages the sink has swallowed.
func (s *Sockmap) Refused() uint64 { return s.refused.Load() }

// localPort returns the local port of a connected IPv4 TCP socket.
func localPort(fd int) (uint16, error) {
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || t != unix.SOCK_STREAM {
		return 0, ErrBadSocket
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, ErrBadSocket
	}
	in, ok := sa.(*unix.SockaddrInet4)
	if !ok || in.Port == 0 {
		return 0, ErrBadSocket
	}
	if _, err := unix.Getpeername(fd); err != nil {
		return 0, ErrBadSocket
	}
	return uint16(in.Port), nil
}

// Register puts fd, a connected loopback TCP socket, into the sockmap
// under instance id of app (non-zero, node-unique per app). From the time
// it returns, descriptors sent to id by endpoints of app are delivered to
// fd, and descriptors written on fd are checked against app. The caller
// keeps fd's peer open and may close its own copy of fd once the
// instance holds it: the sockmap keeps the socket.
//
// Register resets id's counters.
func (s *Sockmap) Register(id uint16, app uint32, fd int) error {
	if id == SinkID {
		return ErrBadID
	}
	if app == 0 {
		return errors.New("bpf: app id 0 is reserved")
	}
	port, err := localPort(fd)
	if err != nil {
		return fmt.Errorf("bpf: register instance %d: fd %d: %w", id, fd, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.ids[id]; ok {
		return fmt.Errorf("bpf: register instance %d: %w", id, ErrRegistered)
	}
	if other, ok := s.ports[port]; ok {
		return fmt.Errorf("bpf: register instance %d: port %d already belongs to instance %d", id, port, other)
	}
	// Order: counters and identities first, the socket last. The program
	// only runs for sockets in the sockmap, so by the time fd can send or
	// be sent to, everything it is checked against is in place.
	if err := s.counts.Update(uint32(id), [3]uint64{}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: register instance %d: reset counters: %w", id, err)
	}
	if err := s.peers.Update(uint32(port), [2]uint32{uint32(id), app}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: register instance %d: %w", id, err)
	}
	if err := s.apps.Update(uint32(id), app, ebpf.UpdateAny); err != nil {
		s.peers.Update(uint32(port), [2]uint32{}, ebpf.UpdateAny)
		return fmt.Errorf("bpf: register instance %d: %w", id, err)
	}
	if err := s.socks.Update(uint32(id), uint32(fd), ebpf.UpdateAny); err != nil {
		s.apps.Update(uint32(id), uint32(0), ebpf.UpdateAny)
		s.peers.Update(uint32(port), [2]uint32{}, ebpf.UpdateAny)
		return fmt.Errorf("bpf: register instance %d: put socket into sockmap: %w", id, err)
	}
	s.ids[id] = member{app: app, port: port}
	s.ports[port] = id
	return nil
}

// Unregister takes id out: descriptors sent to it are refused from now on.
// Unregistering an unknown id is not an error. Counters stay readable
// until id is registered again.
func (s *Sockmap) Unregister(id uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	m, ok := s.ids[id]
	if !ok {
		return nil
	}
	var errs []error
	// The socket first: nothing reaches it after this. The kernel has
	// already removed it if it was closed; deleting an empty sockmap slot
	// then fails with EINVAL.
	if err := s.socks.Delete(uint32(id)); err != nil &&
		!errors.Is(err, ebpf.ErrKeyNotExist) && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, err)
	}
	if err := s.apps.Update(uint32(id), uint32(0), ebpf.UpdateAny); err != nil {
		errs = append(errs, err)
	}
	if err := s.peers.Update(uint32(m.port), [2]uint32{}, ebpf.UpdateAny); err != nil {
		errs = append(errs, err)
	}
	delete(s.ids, id)
	delete(s.ports, m.port)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bpf: unregister instance %d: %w", id, err)
	}
	return nil
}

// Registered reports whether id is registered, and under which app.
func (s *Sockmap) Registered(id uint16) (app uint32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.ids[id]
	return m.app, ok
}

// Counters returns instance id's counters. Id 0 holds the refusals of
// senders the program could not identify (none, unless something is
// wrong).
func (s *Sockmap) Counters(id uint16) (Counters, error) {
	var v [3]uint64
	if err := s.counts.Lookup(uint32(id), &v); err != nil {
		return Counters{}, fmt.Errorf("bpf: counters of %d: %w", id, err)
	}
	return Counters{Sent: v[0], Received: v[1], Dropped: v[2]}, nil
}

// Each calls fn with the counters of every registered instance, in no
// particular order. fn must not call back into s.
func (s *Sockmap) Each(fn func(id uint16, app uint32, c Counters)) error {
	s.mu.Lock()
	ids := make(map[uint16]uint32, len(s.ids))
	for id, m := range s.ids {
		ids[id] = m.app
	}
	s.mu.Unlock()
	for id, app := range ids {
		c, err := s.Counters(id)
		if err != nil {
			return err
		}
		fn(id, app, c)
	}
	return nil
}

// MapIDs returns the kernel ids of the program and the maps, for tests
// and diagnostics (bpftool prog show id …).
func (s *Sockmap) MapIDs() (prog uint32, maps []uint32) {
	if info, err := s.prog.Info(); err == nil {
		if id, ok := info.ID(); ok {
			prog = uint32(id)
		}
	}
	for _, m := range []*ebpf.Map{s.socks, s.peers, s.apps, s.counts} {
		if info, err := m.Info(); err == nil {
			if id, ok := info.ID(); ok {
				maps = append(maps, uint32(id))
			}
		}
	}
	return prog, maps
}

// Close detaches everything: registered sockets leave the sockmap, the
// program and maps are freed. Later calls return ErrClosed.
func (s *Sockmap) Close() error {
	s.once.Do(s.release)
	return nil
}

// release closes whatever New made, in reverse order.
func (s *Sockmap) release() {
	s.mu.Lock()
	s.closed = true
	// Empty the sockmap before closing it. A socket in the map holds the
	// program, the program holds the map, the map holds the socket: that
	// cycle only breaks when the socket leaves the map. Closing our fds
	// alone would keep everything alive until every instance closed its
	// socket.
	if s.socks != nil {
		for id := range s.ids {
			s.socks.Delete(uint32(id))
		}
		s.socks.Delete(uint32(SinkID))
	}
	s.mu.Unlock()
	if s.sink >= 0 {
		// Wakes the drain goroutine's blocked read; it then sees closed.
		unix.Shutdown(s.sink, unix.SHUT_RDWR)
		if s.drained != nil {
			<-s.drained
		}
		unix.Close(s.sink)
		unix.Close(s.sinkEnd)
	}
	if s.prog != nil {
		s.prog.Close()
	}
	for _, m := range []*ebpf.Map{s.socks, s.peers, s.apps, s.counts} {
		if m != nil {
			m.Close()
		}
	}
}
