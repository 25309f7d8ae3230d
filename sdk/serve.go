//go:build !wasip1

package sdk

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/graph"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// Environment an instance is started with (besides the transport's).
const (
	EnvPoolFD      = "SPRY_POOL_FD"     // inherited fd of the app's pool
	EnvSlot        = "SPRY_SLOT"        // the instance's slot in the pool
	EnvConcurrency = "SPRY_CONCURRENCY" // handlers run at once
	EnvFunction    = "SPRY_FUNCTION"    // function name, for messages
	EnvApp         = "SPRY_APP"         // the app's name
	EnvSecrets     = "SPRY_SECRETS"     // the directory of the app's secrets, when it has any
	EnvTimeout     = "SPRY_TIMEOUT_MS"  // the function's timeout: the longest one handler may run
)

// Serve runs h as a Spry function instance until the daemon stops it. It
// never returns: on a setup error (for example when the program is not
// started by spry) it prints the reason and exits with status 2.
func Serve(h Handler) {
	if err := Run(h); err != nil {
		fmt.Fprintln(os.Stderr, "spry function:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// Run is Serve returning its error instead of exiting. It returns nil after
// a clean stop (SIGTERM or SIGINT: finish what is running, then return).
func Run(h Handler) error {
	s, err := attach(os.Getenv)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		s.shutdown()
	}()
	return s.serve(h)
}

// instance is one running function instance.
type instance struct {
	p     *pool.Pool
	c     transport.Conn
	id    uint16
	slot  uint32
	st    *pool.SlotStats
	conc  int
	name  string
	log   *slog.Logger
	rot   atomic.Uint32 // rotates load-balancing ties
	stop  atomic.Bool
	retry time.Duration // longest a send waits for a full or missing destination

	h       Handler
	calls   callTable
	work    chan desc.Desc // concurrency > 1: requests for the workers
	recvTid int            // the receive thread (a handler on it that waits for a call receives meanwhile)
	// backlog holds requests a handler waiting for a call received on the
	// receive thread and could not run (nested too deep): the receive
	// loop runs them next.
	backlog []desc.Desc
	nest    int // handlers running nested on the receive thread
	inline  []*worker
}

func attach(env func(string) string) (*instance, error) {
	if env(transport.EnvTransport) == "" {
		return nil, errors.New("not started by spry: run this program as a function in spry.yaml (go: or exec:)")
	}
	fd, err := strconv.Atoi(env(EnvPoolFD))
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("%s=%q is not an fd", EnvPoolFD, env(EnvPoolFD))
	}
	p, err := pool.Attach(fd)
	if err != nil {
		return nil, err
	}
	slot, err := strconv.ParseUint(env(EnvSlot), 10, 32)
	if err != nil || uint32(slot) >= p.Slots() {
		return nil, fmt.Errorf("%s=%q is not a slot of this pool", EnvSlot, env(EnvSlot))
	}
	conc, err := strconv.Atoi(env(EnvConcurrency))
	if err != nil || conc < 1 {
		conc = 1
	}
	c, err := transport.Attach(env, p)
	if err != nil {
		return nil, err
	}
	name := env(EnvFunction)
	s := &instance{
		p: p, c: c, id: c.ID(), slot: uint32(slot), st: p.Stats(uint32(slot)), conc: conc, name: name,
		log:   slog.New(slog.NewTextHandler(os.Stderr, nil)).With("function", name, "instance", c.ID()),
		retry: 2 * time.Second,
	}
	s.calls.init(s)
	return s, nil
}

// shutdown makes serve return after the handlers that are running finish.
func (s *instance) shutdown() {
	s.stop.Store(true)
	s.c.Close() // wakes the receive loop
}

// serve receives descriptors and runs h on them until shut down.
func (s *instance) serve(h Handler) error {
	s.h = h
	var wg sync.WaitGroup
	if s.conc > 1 {
		s.work = make(chan desc.Desc, s.conc)
		// The receive thread below keeps its processor while it sleeps
		// in the kernel; the handlers get their own.
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.GOMAXPROCS(runtime.NumCPU() + 1)
		}
		for range s.conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := new(worker)
				for d := range s.work {
					w.step(s, d)
				}
			}()
		}
	}

	// Announce readiness: the endpoint exists and this process is about to
	// receive. The daemon puts the instance in the routing table on this.
	ready := desc.Desc{Dst: s.p.Gateway(), Src: s.id, Buf: desc.CtlReady, Flags: desc.FlagControl}
	if err := s.sendPatiently(ready); err != nil {
		return fmt.Errorf("announce ready: %w", err)
	}

	// Receive on a locked OS thread: the thread sleeps in the kernel, and
	// a wake-up goes straight to it rather than through the netpoller.
	runtime.LockOSThread()
	s.recvTid = unix.Gettid()
	var batch [transport.MaxBatch]desc.Desc
	var err error
	lastSched := mono.Now()
	for {
		for len(s.backlog) > 0 {
			d := s.backlog[0]
			s.backlog = s.backlog[1:]
			s.run(d)
		}
		var n int
		n, err = s.c.Recv(batch[:])
		if now := mono.Now(); now-lastSched > 5e6 {
			lastSched = now
			runtime.Gosched()
		}
		if err != nil {
			break
		}
		for _, d := range batch[:n] {
			if s.take(d) {
				s.run(d)
			}
		}
	}
	s.calls.abandonAll()
	if s.work != nil {
		close(s.work)
	}
	wg.Wait()
	if s.stop.Load() && errors.Is(err, transport.ErrClosed) {
		return nil
	}
	return err
}

// onRecvThread reports whether the caller runs on the receive thread.
func (s *instance) onRecvThread() bool { return s.recvTid != 0 && unix.Gettid() == s.recvTid }

// take accepts what descriptor d announces and reports whether it is a
// request to run: a call's answer goes to its waiting call, control
// messages and stale or forged descriptors are dropped.
func (s *instance) take(d desc.Desc) bool {
	if d.Is(desc.FlagControl) {
		return false // wake-ups of a waiting call; nothing else for instances yet
	}
	if d.Is(desc.FlagReturn) {
		if s.p.Accept(d.Buf, d.Gen, d.Src, s.id) {
			s.calls.complete(d.Buf)
		} else {
			s.st.Stale.Add(1)
		}
		return false
	}
	s.st.Queue.Add(-1)
	crash.Point("recv.popped")
	// Taking the buffer is one compare-and-swap that only the transfer
	// this descriptor announces lets succeed: a stale, forged or
	// duplicate descriptor, or one whose buffer the daemon took back (its
	// sender died), is dropped unread.
	if !s.p.Accept(d.Buf, d.Gen, d.Src, s.id) {
		s.st.Stale.Add(1)
		return false
	}
	crash.Point("recv.accepted")
	s.st.Arrivals.Add(1)
	return true
}

// run runs the step d names: on this thread (concurrency 1), or on a
// worker.
func (s *instance) run(d desc.Desc) {
	if s.work != nil {
		s.work <- d
		return
	}
	if s.nest >= len(s.inline) {
		s.inline = append(s.inline, new(worker))
	}
	w := s.inline[s.nest]
	s.nest++
	w.step(s, d)
	s.nest--
}

// worker holds the per-request state one handler goroutine reuses.
type worker struct {
	req Request
	res Response
}

// step runs the handler on the buffer d names and sends the output on.
func (w *worker) step(s *instance, d desc.Desc) {
	p := s.p
	hdr := p.Header(d.Buf)
	start := mono.Now()
	node := d.Hop
	if d.Is(desc.FlagCall) {
		node = pool.CallNode
	}
	hdr.SetPlace(node, pool.PhaseRunning)
	if dl := hdr.Deadline(); dl != 0 && start > dl {
		// Past the deadline: the handler does not run, and the buffer
		// goes back as the 504 it is (the gateway may not have answered
		// yet: whichever side completes the request, the client gets 504).
		s.fail(d.Buf, 504, "spry: the request's deadline passed before this step ran")
		return
	}
	if s.st.InFlight.Add(1) == 1 {
		s.st.BusySince.Store(start)
	}
	// When the request reached this step: when it was sent here, or the
	// gateway's receipt. Read now: the input buffer may be freed below.
	arrived := hdr.Sent()
	if arrived == 0 {
		arrived = hdr.Ingress()
	}
	hdr.HopStart(int(node), start)
	w.req.reset(s, d.Buf, node)
	w.res.reset(s, &w.req)
	err := call(s.h, &w.req, &w.res)
	out := w.res.finish(err)
	w.req.end()
	end := mono.Now()
	oh := p.Header(out)
	oh.HopEnd(int(node), end)
	oh.SetPlace(node, pool.PhaseDone)
	s.st.BusyNanos.Add(uint64(end - start))
	if arrived != 0 {
		s.st.Latency.Observe(end - arrived)
	}
	switch c := w.res.outcome; {
	case c >= 500:
		s.st.Errors.Add(1)
	case c >= 400:
		s.st.ClientErrors.Add(1)
	}
	s.st.Served.Add(1)
	s.st.BusySince.Store(end)
	s.st.InFlight.Add(-1)
	s.route(out)
}

// call runs the handler, turning a panic into an error.
func call(h Handler, req *Request, res *Response) (err error) {
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(os.Stderr, "panic in handler: %v\n%s", v, debug.Stack())
			err = fmt.Errorf("function panicked: %v", v)
		}
	}()
	return h(req, res)
}

// route sends out, which this instance holds and whose step is done (its
// header says where it is), where its chain's graph sends it: the next
// step's least-loaded instance (direct function routing: the gateway is
// not on the path), every branch of a fan-out, the gateway (a join's
// input, or the answer), or the caller of a call.
func (s *instance) route(out uint32) {
	r, err := graph.Next(s.p, out)
	if err != nil {
		s.fail(out, 502, "spry: "+err.Error())
		return
	}
	switch r.Kind {
	case graph.Forward:
		s.forward(out, r.Node)
	case graph.FanOut:
		var bs [pool.MaxNext]graph.Branch
		branches, err := graph.Split(s.p, s.id, out, r, mono.Now(), &bs)
		switch {
		case errors.Is(err, transport.ErrLost):
			return
		case errors.Is(err, pool.ErrNoRoom):
			s.fail(out, 503, "spry: no free pool buffer for the branches of a fan-out")
			return
		case err != nil:
			s.fail(out, 502, "spry: "+err.Error())
			return
		}
		for _, b := range branches {
			if b.Join {
				s.toGateway(b.Buf, graph.Route{Kind: graph.Join, Node: b.Node})
			} else {
				s.forward(b.Buf, b.Node)
			}
		}
	default:
		s.toGateway(out, r)
	}
}

// forward sends buf to the least-loaded ready instance of node's function,
// retrying while no instance can take it (one may be starting).
func (s *instance) forward(buf uint32, node uint8) {
	deadline := time.Now().Add(s.retry)
	asked := false
	send := graph.Send
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		err := send(s.p, s.c, buf, node, s.rot.Add(1))
		send = graph.Resend
		if err == nil || errors.Is(err, transport.ErrLost) {
			// Sent, or reclaimed with a destination that died: the
			// daemon answers the request then.
			return
		}
		if errors.Is(err, graph.ErrBadGraph) {
			s.fail(buf, 502, "spry: "+err.Error())
			return
		}
		if s.stop.Load() {
			// Stopping: keep the finished output (queued at its next
			// step). This process holds the buffer when it exits, and
			// the daemon's reclaim sends it on (see node's salvage).
			return
		}
		if errors.Is(err, transport.ErrNoInstance) && !asked {
			// The next function may be scaled to zero: ask the daemon
			// (through the gateway) for an instance, once.
			asked = true
			fn, _ := s.p.Step(s.p.Header(buf).Chain(), int(node))
			s.c.Send(desc.Desc{Dst: s.p.Gateway(), Src: s.id, Buf: desc.CtlNoInstance, Chain: fn, Flags: desc.FlagControl})
		}
		if time.Now().After(deadline) {
			s.fail(buf, 503, "spry: no instance of the next step could take the request")
			return
		}
		time.Sleep(wait)
	}
}

// fail ends buf's part of the chain with status and msg: its join gets it
// as a failed input, its caller as a failed answer, or the client.
func (s *instance) fail(buf uint32, status uint16, msg string) {
	p := s.p
	if o := p.Header(buf).Own(); o.Holder != s.id || o.Transit != 0 {
		return // not ours any more (its request is over: the daemon took it)
	}
	p.Clear(buf, s.id) // its payload may be shared: the message goes in its own
	h := p.Header(buf)
	n := copy(p.Buffer(buf), msg)
	h.SetData(0, uint32(n))
	h.SetReplyContentType("text/plain; charset=utf-8")
	h.SetStatus(status)
	h.SetFlags(h.Flags() | pool.FlagStop)
	h.SetPlace(h.Node(), pool.PhaseDone)
	r, err := graph.Next(p, buf)
	if err != nil {
		r = graph.Route{Kind: graph.Reply}
	}
	s.toGateway(buf, r)
}

// toGateway hands buf to the gateway (the answer, or a join's input), or a
// call's answer to its caller.
func (s *instance) toGateway(buf uint32, r graph.Route) {
	deadline := time.Now().Add(s.retry)
	send := graph.ToGateway
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		err := send(s.p, s.c, buf, r)
		send = graph.ToGatewayAgain
		if err == nil || errors.Is(err, transport.ErrLost) {
			return
		}
		if r.Kind == graph.Return && errors.Is(err, transport.ErrGone) {
			// The caller is gone: nobody wants the answer.
			s.p.Free(buf, s.id)
			return
		}
		if !errors.Is(err, transport.ErrFull) || time.Now().After(deadline) {
			// The gateway is gone or wedged. This process still holds
			// the buffer; the daemon takes it back when it stops.
			s.log.Error("send to the gateway failed", "err", err)
			return
		}
		time.Sleep(wait)
	}
}

// sendPatiently retries a send to a full destination for a while: replies
// and control messages must not be dropped because of a burst.
func (s *instance) sendPatiently(d desc.Desc) error {
	deadline := time.Now().Add(s.retry)
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		err := s.c.Send(d)
		if !errors.Is(err, transport.ErrFull) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
	}
}
