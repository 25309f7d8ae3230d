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

	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/desc"
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
	return &instance{
		p: p, c: c, id: c.ID(), slot: uint32(slot), st: p.Stats(uint32(slot)), conc: conc, name: name,
		log:   slog.New(slog.NewTextHandler(os.Stderr, nil)).With("function", name, "instance", c.ID()),
		retry: 2 * time.Second,
	}, nil
}

// shutdown makes serve return after the handlers that are running finish.
func (s *instance) shutdown() {
	s.stop.Store(true)
	s.c.Close() // wakes the receive loop
}

// serve receives descriptors and runs h on them until shut down.
func (s *instance) serve(h Handler) error {
	work := make(chan desc.Desc, s.conc)
	var wg sync.WaitGroup
	if s.conc > 1 {
		// The receive thread below keeps its processor while it sleeps
		// in the kernel; the handlers get their own.
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.GOMAXPROCS(runtime.NumCPU() + 1)
		}
		for range s.conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var w worker
				for d := range work {
					w.step(s, h, d)
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
	var inline worker
	var batch [transport.MaxBatch]desc.Desc
	var err error
	for {
		var n int
		n, err = s.c.Recv(batch[:])
		if err != nil {
			break
		}
		for _, d := range batch[:n] {
			if d.Is(desc.FlagControl) {
				continue // nothing for instances yet
			}
			s.st.Queue.Add(-1)
			crash.Point("recv.popped")
			// Taking the buffer is one compare-and-swap that only the
			// transfer this descriptor announces lets succeed: a stale,
			// forged or duplicate descriptor, or one whose buffer the
			// daemon took back (its sender died), is dropped unread.
			if !s.p.Accept(d.Buf, d.Gen, d.Src, s.id) {
				s.st.Stale.Add(1)
				continue
			}
			crash.Point("recv.accepted")
			s.st.Arrivals.Add(1)
			if s.conc == 1 {
				inline.step(s, h, d)
			} else {
				work <- d
			}
		}
	}
	close(work)
	wg.Wait()
	if s.stop.Load() && errors.Is(err, transport.ErrClosed) {
		return nil
	}
	return err
}

// worker holds the per-request state one handler goroutine reuses.
type worker struct {
	req Request
	res Response
}

// step runs h on the buffer d names and passes the result on.
func (w *worker) step(s *instance, h Handler, d desc.Desc) {
	hdr := s.p.Header(d.Buf)
	start := mono.Now()
	if dl := hdr.Deadline(); dl != 0 && start > dl {
		// Past the deadline: the handler does not run, and the buffer
		// goes back as the 504 it is (the gateway may not have answered
		// yet: whichever side completes the request, the client gets 504).
		s.fail(d.Chain, d.Hop, d.Buf, 504, "spry: the request's deadline passed before this step ran")
		return
	}
	if s.st.InFlight.Add(1) == 1 {
		s.st.BusySince.Store(start)
	}
	hop := int(d.Hop)
	// When the request reached this step: the previous step's end, or the
	// gateway's receipt. Read now: the input buffer may be freed below.
	arrived := hdr.Ingress()
	if hop > 0 {
		if _, e := hdr.HopTimes(hop - 1); e != 0 {
			arrived = e
		}
	}
	hdr.HopStart(hop, start)
	w.req.reset(s.p, d.Buf, hop)
	w.res.reset(s.p, s.id, d.Buf)
	err := call(h, &w.req, &w.res)
	out, stop := w.res.finish(err)
	end := mono.Now()
	s.p.Header(out).HopEnd(hop, end)
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
	if stop {
		s.reply(d.Chain, d.Hop, out)
		return
	}
	s.forward(d.Chain, d.Hop, out)
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

// forward sends buf to the least-loaded ready instance of the next step
// (direct function routing: the gateway is not on the path), or back to
// the gateway after the last step.
func (s *instance) forward(chain uint16, hop uint8, buf uint32) {
	fn, ok := s.p.Step(chain, int(hop)+1)
	if !ok {
		s.reply(chain, hop, buf)
		return
	}
	d := desc.Desc{Src: s.id, Buf: buf, Chain: chain, Hop: hop + 1}
	deadline := time.Now().Add(s.retry)
	asked := false
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		err := transport.Forward(s.p, s.c, fn, d, s.rot.Add(1))
		if err == nil || errors.Is(err, transport.ErrLost) {
			// Sent, or reclaimed with a destination that died: the
			// daemon answers the request then.
			return
		}
		if s.stop.Load() {
			// Stopping: keep the finished output. This process holds
			// the buffer when it exits, and the daemon's reclaim sends
			// it on to the next step (see node's salvage).
			return
		}
		if errors.Is(err, transport.ErrNoInstance) && !asked {
			// The next function may be scaled to zero: ask the daemon
			// (through the gateway) for an instance, once.
			asked = true
			s.c.Send(desc.Desc{Dst: s.p.Gateway(), Src: s.id, Buf: desc.CtlNoInstance, Chain: fn, Flags: desc.FlagControl})
		}
		if time.Now().After(deadline) {
			s.fail(chain, hop, buf, 503, "no instance of the next step could take the request")
			return
		}
		time.Sleep(wait)
	}
}

// fail ends the chain with status and msg in buf.
func (s *instance) fail(chain uint16, hop uint8, buf uint32, status uint16, msg string) {
	h := s.p.Header(buf)
	n := copy(s.p.Buffer(buf), msg)
	h.SetData(0, uint32(n))
	h.SetReplyContentType("text/plain; charset=utf-8")
	h.SetStatus(status)
	h.SetFlags(h.Flags() | pool.FlagStop)
	s.reply(chain, hop, buf)
}

// reply hands buf back to the app's gateway.
func (s *instance) reply(chain uint16, hop uint8, buf uint32) {
	d := desc.Desc{Dst: s.p.Gateway(), Src: s.id, Buf: buf, Chain: chain, Hop: hop, Flags: desc.FlagReply}
	deadline := time.Now().Add(s.retry)
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		err := transport.Pass(s.p, s.c, d)
		if err == nil || errors.Is(err, transport.ErrLost) {
			return
		}
		if !errors.Is(err, transport.ErrFull) || time.Now().After(deadline) {
			// The gateway is gone or wedged. This process still holds
			// the buffer; the daemon takes it back when it stops.
			s.log.Error("reply to gateway failed", "err", err)
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
