// Package contract is the conformance suite of the function contract
// (docs/contract.md): it drives any instance program — an SDK's, an
// adapter's — through the same cases, playing the node itself: it creates
// the app's pool and transport, starts the program as an instance with the
// contract's environment, and acts as the gateway (and as the next step's
// instance, for forwarding).
//
// The program must run the contract handler, whose behaviour the request's
// path selects:
//
//	/inplace          the payload upper-cased (ASCII), in place
//	/fresh            "fresh:" + the payload, written into a fresh buffer
//	/status?code=N    status N, body "status N"
//	/error            an error whose message contains "boom" (a 5xx)
//	/meta             "METHOD PATH QUERY X-Contract" (the forwarded header)
//	/sleep?ms=N       sleeps N ms, then passes the payload on unchanged
//	anything else     passes the payload on unchanged
//
// Reference implementations: Go (internal/contract/gofn), Python
// (sdk/python/tests/contract_fn.py), HTTP servers for the http: adapter
// (internal/contract/httpfn, internal/contract/testdata/server.py), and an
// aws-lambda-go function for the lambda: adapter
// (internal/runtime/lambda/testfn, EVENT=contract). `spry contract test --
// PROGRAM` runs the suite against a program from the command line.
package contract

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	rt "github.com/spry-dev/spry/internal/runtime"
	"github.com/spry-dev/spry/internal/runtime/wasm"
	"github.com/spry-dev/spry/internal/transport"
	"golang.org/x/sys/unix"
)

// Target is a program under test.
type Target struct {
	Argv []string // the instance's command
	Env  []string // added to its environment
	Dir  string

	// What it can do: adapters cannot choose a fresh buffer (their output
	// is always read into the input buffer), and a Lambda runtime runs one
	// invocation at a time.
	NoFresh       bool
	NoConcurrency bool

	// Wasm, when set, is the module of a wasm: function (GOOS=wasip1
	// -buildmode=c-shared) and Argv runs a sandbox host (`spry
	// wasm-host`): the suite plays the node's side of the host's control
	// socket, loads the module, and starts the instance under test in the
	// host, whose endpoint receives for it (pool.StartHosted).
	Wasm string
}

// Result is one case's outcome.
type Result struct {
	Case string
	Err  error // nil: passed
	Skip string
}

// Cases are the names of the suite's cases, in the order they run.
var Cases = []string{"ready", "payload in place", "fresh output buffer", "status", "error",
	"metadata", "forwarding", "concurrency", "stale descriptors", "counters", "shutdown"}

// ids of the endpoints the suite plays.
const (
	gwID   = 1
	sinkID = 2
	fnID   = 3
	hostID = 4 // a sandbox host's endpoint (Target.Wasm)
)

// harness is the node the suite plays for one target.
type harness struct {
	tg     Target
	dir    string
	p      *pool.Pool
	fab    transport.Fabric
	gw     transport.Conn
	sink   transport.Conn
	cmd    *exec.Cmd
	out    bytes.Buffer
	exited chan error
	reqID  uint64
	ctl    net.Conn
	ep     uint16 // the endpoint that receives the target's descriptors: fnID, or hostID
	wire   *wasm.Wire
}

// Run runs every case against tg and returns their results. It stops the
// program and removes what it made before returning.
func Run(tg Target) []Result {
	h, err := start(tg)
	if err != nil {
		return []Result{{Case: "ready", Err: err}}
	}
	defer h.close()
	var res []Result
	for _, c := range []struct {
		name string
		run  func() error
		skip string
	}{
		{"ready", func() error { return nil }, ""},
		{"payload in place", h.inPlace, ""},
		{"fresh output buffer", h.fresh, skipIf(tg.NoFresh, "adapters write their output into the input buffer")},
		{"status", h.status, ""},
		{"error", h.errorCase, ""},
		{"metadata", h.meta, ""},
		{"forwarding", h.forwarding, ""},
		{"concurrency", h.concurrency, skipIf(tg.NoConcurrency, "one invocation at a time")},
		{"stale descriptors", h.stale, ""},
		{"counters", h.counters, ""},
		{"shutdown", h.shutdown, ""},
	} {
		if c.skip != "" {
			res = append(res, Result{Case: c.name, Skip: c.skip})
			continue
		}
		err := c.run()
		if err == nil {
			err = h.settled()
		}
		res = append(res, Result{Case: c.name, Err: err})
	}
	return res
}

func skipIf(b bool, why string) string {
	if b {
		return why
	}
	return ""
}

// Layout of the suite's app: function 0 is the target (slot 0), function 1
// the "next step" the suite plays (slot 1). Chain 0 runs [target], chain 1
// [target, next].
const (
	buffers    = 32
	bufferSize = 64 << 10
	conc       = 4
)

func start(tg Target) (*harness, error) {
	h := &harness{tg: tg, exited: make(chan error, 1), ep: fnID}
	if tg.Wasm != "" {
		h.ep = hostID
	}
	var err error
	if h.dir, err = os.MkdirTemp("", "spry-contract-"); err != nil {
		return nil, err
	}
	eps, rb := transport.PoolLayout("uds", 8)
	h.p, err = pool.Create("contract", pool.Layout{Buffers: buffers, BufferSize: bufferSize, Functions: 2, Chains: 2, Slots: 2, Endpoints: eps, RingBytes: rb})
	if err != nil {
		h.close()
		return nil, err
	}
	h.p.SetFunction(0, 0, 1)
	h.p.SetFunction(1, 1, 1)
	h.p.SetChain(0, []uint16{0})
	h.p.SetChain(1, []uint16{0, 1})
	if h.fab, err = transport.New("uds", transport.Options{App: "contract", Dir: h.dir, UID: -1, GID: -1, Pool: h.p}); err != nil {
		h.close()
		return nil, err
	}
	if h.gw, err = h.fab.Open(gwID); err != nil {
		h.close()
		return nil, err
	}
	h.p.SetGateway(gwID)
	if h.sink, err = h.fab.Open(sinkID); err != nil {
		h.close()
		return nil, err
	}
	h.p.StartSlot(1, sinkID, 1)
	h.p.SetSlotState(1, pool.SlotReady)
	ho, err := h.fab.Add(h.ep)
	if err != nil {
		h.close()
		return nil, err
	}
	defer ho.Close()
	if tg.Wasm == "" {
		h.p.StartSlot(0, fnID, 1)
	}
	pf, err := dupFile(h.p.Fd())
	if err != nil {
		h.close()
		return nil, err
	}
	defer pf.Close()
	if len(tg.Argv) == 0 {
		h.close()
		return nil, errors.New("contract: no program to test")
	}
	h.cmd = exec.Command(tg.Argv[0], tg.Argv[1:]...)
	h.cmd.Dir = tg.Dir
	h.cmd.ExtraFiles = append([]*os.File{pf}, ho.Files...)
	env := append(rt.BaseEnv(), "HOME="+os.Getenv("HOME"))
	env = append(env, tg.Env...)
	if tg.Wasm != "" {
		return h.startHost(env, ho)
	}
	env = append(env, rt.Instance{App: "contract", Function: "fut", Slot: 0, ID: fnID, Concurrency: conc,
		Timeout: 30 * time.Second, Files: len(ho.Files)}.Env()...)
	if err := h.launch(env, ho); err != nil {
		return nil, err
	}
	// Ready: the control descriptor, within 2 minutes (a hang, not a
	// speed, is what this bounds: a Python runtime starting at nice 19 on
	// a loaded machine once took longer than 30 s).
	got := make(chan error, 1)
	go func() {
		var ds [8]desc.Desc
		n, err := h.gw.Recv(ds[:])
		switch {
		case err != nil:
			got <- err
		case n != 1 || !ds[0].Is(desc.FlagControl) || ds[0].Buf != desc.CtlReady || ds[0].Src != fnID:
			got <- fmt.Errorf("want one ready control descriptor from %d, got %v", fnID, ds[:n])
		default:
			got <- nil
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			h.close()
			return nil, fmt.Errorf("ready: %w\n%s", err, h.output())
		}
	case err := <-h.exited:
		h.exited <- err
		h.close()
		return nil, fmt.Errorf("ready: the program exited (%v) before announcing itself\n%s", err, h.output())
	case <-time.After(readyWithin):
		h.close()
		return nil, fmt.Errorf("ready: no ready descriptor within %v\n%s", readyWithin, h.output())
	}
	h.p.SetSlotState(0, pool.SlotReady)
	return h, nil
}

// launch starts the target's program with env (and the handoff's), its
// output kept, and watches for its exit.
func (h *harness) launch(env []string, ho transport.Handoff) error {
	h.cmd.Env = append(env, ho.Env...)
	h.cmd.Stdout, h.cmd.Stderr = &h.out, &h.out
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		h.close()
		return fmt.Errorf("start %s: %w", h.tg.Argv[0], err)
	}
	go func() { h.exited <- h.cmd.Wait() }()
	return nil
}

// readyWithin bounds the wait for a program's ready descriptor.
const readyWithin = 2 * time.Minute

// startHost starts the sandbox host with its control socket, loads the
// module and starts the instance under test in slot 0, as the node does.
func (h *harness) startHost(env []string, ho transport.Handoff) (*harness, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		h.close()
		return nil, err
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "control"), os.NewFile(uintptr(fds[1]), "control")
	defer theirs.Close()
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		h.close()
		return nil, err
	}
	h.ctl = conn
	h.wire = wasm.NewWire(conn)
	h.cmd.ExtraFiles = append(h.cmd.ExtraFiles, theirs)
	env = append(env, rt.Instance{App: "contract", Function: "wasm-host", ID: hostID, Concurrency: 1, Files: len(ho.Files)}.Env()...)
	env = append(env, wasm.EnvControlFD+"="+strconv.Itoa(rt.PoolFD+1+len(ho.Files)),
		wasm.EnvCacheDir+"="+filepath.Join(h.dir, "cache"), wasm.EnvApp+"=contract")
	if err := h.launch(env, ho); err != nil {
		return nil, err
	}
	events := make(chan wasm.Event, 8)
	go func() {
		for {
			var ev wasm.Event
			if err := h.wire.Recv(&ev); err != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()
	// up, loaded, then ready for the instance, each within 60 s (the
	// module compiles first).
	next := func(want string) error {
		select {
		case ev, ok := <-events:
			switch {
			case !ok:
				return fmt.Errorf("%s: the control socket closed\n%s", want, h.output())
			case ev.Ev != want:
				return fmt.Errorf("%s: got event %+v", want, ev)
			case ev.Err != "":
				return fmt.Errorf("%s: %s\n%s", want, ev.Err, h.output())
			}
			return nil
		case err := <-h.exited:
			h.exited <- err
			return fmt.Errorf("%s: the sandbox host exited (%v)\n%s", want, err, h.output())
		case <-time.After(60 * time.Second):
			return fmt.Errorf("%s: no event within 60s\n%s", want, h.output())
		}
	}
	steps := []func() error{
		func() error { return next(wasm.EvUp) },
		func() error {
			// The clock grant: the handler's /sleep sleeps.
			if err := h.wire.Send(wasm.Command{Op: wasm.OpLoad, Fn: 0, Name: "fut", Module: h.tg.Wasm,
				Timeout: 30 * time.Second, Grants: wasm.Grants{Clock: true}, Spares: 1}); err != nil {
				return err
			}
			return next(wasm.EvLoaded)
		},
		func() error {
			h.p.StartHosted(0, fnID, hostID, 1)
			if err := h.wire.Send(wasm.Command{Op: wasm.OpStart, Fn: 0, Slot: 0, ID: fnID}); err != nil {
				return err
			}
			return next(wasm.EvReady)
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			h.close()
			return nil, fmt.Errorf("ready: %w", err)
		}
	}
	h.p.SetSlotState(0, pool.SlotReady)
	return h, nil
}

func (h *harness) output() string {
	s := h.out.String()
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	return strings.TrimSpace(s)
}

func (h *harness) close() {
	if h.cmd != nil && h.cmd.Process != nil && h.cmd.ProcessState == nil {
		h.cmd.Process.Kill()
		select {
		case <-h.exited:
		case <-time.After(5 * time.Second):
		}
	}
	if h.ctl != nil {
		h.ctl.Close()
	}
	if h.fab != nil {
		h.fab.Close()
	}
	if h.gw != nil {
		h.gw.Close()
	}
	if h.sink != nil {
		h.sink.Close()
	}
	if h.p != nil {
		h.p.Close()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
}

// request is one request the suite sends as the gateway.
type request struct {
	chain   uint16
	method  string
	target  string // path?query
	header  [2]string
	ctype   string
	body    []byte
	timeout time.Duration
}

// reply is what came back.
type reply struct {
	buf    uint32
	hop    uint8
	status int
	ctype  string
	body   string
	stop   bool
	start  int64 // hop 0's stamps
	end    int64
	at     transport.Conn // who received it (gateway or sink)
}

// send writes r into a fresh buffer and forwards it to the target.
func (h *harness) send(r request) (uint32, error) {
	buf, ok := h.p.Alloc(gwID)
	if !ok {
		return 0, errors.New("the pool is exhausted: buffers were not given back")
	}
	hd := h.p.Header(buf)
	h.reqID++
	hd.SetReqID(h.reqID)
	hd.SetChain(r.chain)
	path, query, _ := strings.Cut(r.target, "?")
	m := hd.WriteMeta()
	_ = m.Request([]byte(cmpOr(r.method, "POST")), []byte(path), []byte(query))
	if r.header[0] != "" {
		m.Header([]byte(r.header[0]), []byte(r.header[1]))
	}
	n := copy(h.p.Buffer(buf), r.body)
	hd.SetData(0, uint32(n))
	if r.ctype != "" {
		hd.SetContentTypeString(r.ctype)
	}
	now := mono.Now()
	hd.SetTimes(now, now+int64(cmpOr(r.timeout, 20*time.Second)))
	d := desc.Desc{Buf: buf, Chain: r.chain}
	if err := transport.Forward(h.p, h.gw, 0, d, 0); err != nil {
		h.p.Free(buf, gwID)
		return 0, fmt.Errorf("forward to the instance: %w", err)
	}
	return buf, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// recv waits for one descriptor at c and takes its buffer.
func (h *harness) recv(c transport.Conn, within time.Duration) (reply, error) {
	type got struct {
		d   desc.Desc
		err error
	}
	ch := make(chan got, 1)
	go func() {
		var ds [1]desc.Desc
		for {
			n, err := c.Recv(ds[:])
			if err != nil {
				ch <- got{err: err}
				return
			}
			if n == 1 && !ds[0].Is(desc.FlagControl) {
				ch <- got{d: ds[0]}
				return
			}
		}
	}()
	var g got
	select {
	case g = <-ch:
	case err := <-h.exited:
		h.exited <- err
		return reply{}, fmt.Errorf("the program exited (%v)\n%s", err, h.output())
	case <-time.After(within):
		return reply{}, fmt.Errorf("no descriptor within %s\n%s", within, h.output())
	}
	if g.err != nil {
		return reply{}, g.err
	}
	d := g.d
	if !h.p.Accept(d.Buf, d.Gen, d.Src, c.ID()) {
		return reply{}, fmt.Errorf("the descriptor %v does not announce a transfer to %d (the ownership word is %+v)", d, c.ID(), h.p.Header(d.Buf).Own())
	}
	if d.Src != h.ep {
		return reply{}, fmt.Errorf("descriptor from %d, want %d", d.Src, h.ep)
	}
	hd := h.p.Header(d.Buf)
	s, e := hd.HopTimes(0)
	r := reply{buf: d.Buf, hop: d.Hop, status: int(hd.Status()), ctype: string(hd.ContentType()),
		body: string(h.p.Data(d.Buf)), stop: hd.Flags()&pool.FlagStop != 0, start: s, end: e, at: c}
	if r.status == 0 {
		r.status = 200
	}
	if c == h.gw && !d.Is(desc.FlagReply) {
		return r, fmt.Errorf("a descriptor to the gateway without the reply flag: %v", d)
	}
	return r, nil
}

// exchange sends r and waits for the reply at the gateway.
func (h *harness) exchange(r request) (reply, error) {
	if _, err := h.send(r); err != nil {
		return reply{}, err
	}
	rep, err := h.recv(h.gw, 20*time.Second)
	if err == nil {
		h.p.Free(rep.buf, rep.at.ID())
	}
	return rep, err
}

// settled checks that every buffer is back and no request is counted as
// queued or running.
func (h *harness) settled() error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		st := h.p.Stats(0)
		free, q, in := h.p.FreeBuffers(), st.Queue.Load(), st.InFlight.Load()
		if free == buffers && q == 0 && in == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after the case: %d of %d buffers free, queue %d, in flight %d", free, buffers, q, in)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) inPlace() error {
	for i := range 20 {
		in := "payload " + strconv.Itoa(i) + " in place"
		buf, err := h.send(request{target: "/inplace", body: []byte(in)})
		if err != nil {
			return err
		}
		r, err := h.recv(h.gw, 20*time.Second)
		if err != nil {
			return err
		}
		h.p.Free(r.buf, gwID)
		switch {
		case r.status != 200 || r.body != strings.ToUpper(in):
			return fmt.Errorf("got %d %q, want 200 %q", r.status, r.body, strings.ToUpper(in))
		case r.buf != buf:
			return fmt.Errorf("the output came back in buffer %d, not the input's %d: not in place", r.buf, buf)
		case r.start == 0 || r.end < r.start:
			return fmt.Errorf("hop 0 stamped %d..%d, want a start and an end after it", r.start, r.end)
		case r.stop:
			return errors.New("the stop flag is set on a plain answer")
		}
	}
	return nil
}

func (h *harness) fresh() error {
	buf, err := h.send(request{target: "/fresh", body: []byte("abc"), ctype: "text/x-in"})
	if err != nil {
		return err
	}
	r, err := h.recv(h.gw, 20*time.Second)
	if err != nil {
		return err
	}
	h.p.Free(r.buf, gwID)
	switch {
	case r.body != "fresh:abc":
		return fmt.Errorf("got %q, want %q", r.body, "fresh:abc")
	case r.buf == buf:
		return errors.New("the output came back in the input buffer, not a fresh one")
	case h.p.Header(buf).Owner() != pool.OwnerFree:
		return fmt.Errorf("the input buffer was not freed (ownership %+v)", h.p.Header(buf).Own())
	}
	return nil
}

func (h *harness) status() error {
	r, err := h.exchange(request{chain: 1, target: "/status?code=418", body: []byte("x")})
	if err != nil {
		return err
	}
	if r.status != 418 || r.body != "status 418" || !r.stop {
		return fmt.Errorf("got %d %q stop=%v, want 418 \"status 418\" with the stop flag (and not forwarded to the next step)", r.status, r.body, r.stop)
	}
	return nil
}

func (h *harness) errorCase() error {
	before := h.p.Stats(0).Errors.Load()
	r, err := h.exchange(request{chain: 1, target: "/error", body: []byte("x")})
	if err != nil {
		return err
	}
	if r.status < 500 || r.status > 599 || !strings.Contains(r.body, "boom") || !r.stop {
		return fmt.Errorf("got %d %q stop=%v, want a 5xx with \"boom\" and the stop flag", r.status, r.body, r.stop)
	}
	if got := h.p.Stats(0).Errors.Load(); got != before+1 {
		return fmt.Errorf("errors counter %d, want %d", got, before+1)
	}
	return nil
}

func (h *harness) meta() error {
	r, err := h.exchange(request{method: "PUT", target: "/meta?a=1&b=2", header: [2]string{"X-Contract", "forwarded"}, body: []byte("x")})
	if err != nil {
		return err
	}
	if want := "PUT /meta a=1&b=2 forwarded"; r.body != want {
		return fmt.Errorf("got %q, want %q", r.body, want)
	}
	return nil
}

func (h *harness) forwarding() error {
	if _, err := h.send(request{chain: 1, target: "/inplace", body: []byte("next")}); err != nil {
		return err
	}
	r, err := h.recv(h.sink, 20*time.Second)
	if err != nil {
		return fmt.Errorf("the next step's instance: %w", err)
	}
	h.p.Free(r.buf, sinkID)
	if r.hop != 1 || r.body != "NEXT" {
		return fmt.Errorf("the next step got hop %d %q, want hop 1 \"NEXT\"", r.hop, r.body)
	}
	if q := h.p.Stats(1).Queue.Load(); q != 1 {
		return fmt.Errorf("the next step's queue is %d, want 1 (the sender counts what it sends)", q)
	}
	h.p.Stats(1).Queue.Store(0) // the suite's instance takes it
	return nil
}

func (h *harness) concurrency() error {
	done := make(chan error, conc)
	for i := range conc {
		if _, err := h.send(request{target: "/sleep?ms=400", body: []byte(strconv.Itoa(i))}); err != nil {
			return err
		}
	}
	peak := int32(0)
	go func() {
		for range conc {
			r, err := h.recv(h.gw, 20*time.Second)
			if err == nil {
				h.p.Free(r.buf, gwID)
			}
			done <- err
		}
	}()
	var errs []error
	for got := 0; got < conc; {
		select {
		case err := <-done:
			got++
			errs = append(errs, err)
		case <-time.After(time.Millisecond):
			peak = max(peak, h.p.Stats(0).InFlight.Load())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if peak != conc {
		return fmt.Errorf("at most %d handlers ran at once, want %d (SPRY_CONCURRENCY)", peak, conc)
	}
	return nil
}

func (h *harness) stale() error {
	st := h.p.Stats(0)
	before, poolBefore := st.Stale.Load(), h.p.Stale()
	buf, ok := h.p.Alloc(gwID)
	if !ok {
		return errors.New("pool exhausted")
	}
	hd := h.p.Header(buf)
	m := hd.WriteMeta()
	m.Request([]byte("POST"), []byte("/inplace"), nil)
	gen, ok := h.p.Transfer(buf, gwID, fnID)
	if !ok {
		return errors.New("transfer failed")
	}
	// A stale generation, then a forged source: both must be dropped
	// unread; then the real one is taken. A descriptor for a buffer that
	// does not exist is dropped too: an instance counts it as its own; a
	// sandbox host, which receives for several instances, cannot tell
	// whose it was meant to be and counts it in the pool's stale counter
	// (the sender takes back the queue count it added).
	want, wantPool := before+3, poolBefore
	for i, d := range []desc.Desc{
		{Dst: h.ep, Src: gwID, Buf: buf, Gen: gen + 1},
		{Dst: h.ep, Src: sinkID, Buf: buf, Gen: gen},
		{Dst: h.ep, Src: gwID, Buf: buffers + 5, Gen: gen},
	} {
		if i == 2 && h.tg.Wasm != "" {
			want, wantPool = before+2, poolBefore+1
		} else {
			st.Queue.Add(1)
		}
		if err := h.gw.Send(d); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.Stale.Load() < want || h.p.Stale() < wantPool {
		if time.Now().After(deadline) {
			return fmt.Errorf("stale counter %d, want %d (the pool's %d, want %d): the instance did not drop them", st.Stale.Load(), want, h.p.Stale(), wantPool)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if o := hd.Own(); o.Holder != gwID || o.Transit != fnID {
		return fmt.Errorf("a stale descriptor moved the buffer: %+v", o)
	}
	st.Queue.Add(1)
	if err := h.gw.Send(desc.Desc{Dst: h.ep, Src: gwID, Buf: buf, Gen: gen}); err != nil {
		return err
	}
	r, err := h.recv(h.gw, 20*time.Second)
	if err != nil {
		return err
	}
	h.p.Free(r.buf, gwID)
	return nil
}

func (h *harness) counters() error {
	st := h.p.Stats(0)
	a0, s0, l0 := st.Arrivals.Load(), st.Served.Load(), st.Latency.Snapshot()
	b0 := st.BusyNanos.Load()
	for range 5 {
		if _, err := h.exchange(request{target: "/inplace", body: []byte("x")}); err != nil {
			return err
		}
	}
	l1 := st.Latency.Snapshot()
	l := l1.Sub(l0)
	switch {
	case st.Arrivals.Load() != a0+5 || st.Served.Load() != s0+5:
		return fmt.Errorf("arrivals %d, served %d; want %d, %d", st.Arrivals.Load(), st.Served.Load(), a0+5, s0+5)
	case l.Count() != 5:
		return fmt.Errorf("the latency histogram counted %d, want 5", l.Count())
	case st.BusyNanos.Load() <= b0:
		return errors.New("busy time did not grow")
	case st.BusySince.Load() == 0:
		return errors.New("busy-since was never set")
	}
	return nil
}

func (h *harness) shutdown() error {
	if _, err := h.send(request{target: "/sleep?ms=300", body: []byte("last")}); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.p.Stats(0).InFlight.Load() == 0 {
		if time.Now().After(deadline) {
			return errors.New("the request did not start")
		}
		time.Sleep(time.Millisecond)
	}
	h.p.SetSlotState(0, pool.SlotDraining)
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.exited:
		h.exited <- err
		if err != nil {
			return fmt.Errorf("after SIGTERM the program exited with %v, want 0\n%s", err, h.output())
		}
	case <-time.After(10 * time.Second):
		return errors.New("the program did not exit within 10s of SIGTERM")
	}
	// The handler that ran at SIGTERM finished: its output was passed on
	// (a reply), or is held by the exited instance, finished, for the node
	// to take back and send on.
	var out reply
	if r, err := h.recv(h.gw, 200*time.Millisecond); err == nil {
		h.p.Free(r.buf, gwID)
		out = r
	} else {
		n := h.p.Reclaim(h.ep, func(buf uint32) {
			hd := h.p.Header(buf)
			_, end := hd.HopTimes(0)
			out = reply{body: string(h.p.Data(buf)), end: end}
			h.p.Free(buf, pool.OwnerDaemon)
		})
		if n != 1 || out.end == 0 {
			return fmt.Errorf("the request running at SIGTERM was neither answered nor left finished (%d buffers held, hop end %d)", n, out.end)
		}
	}
	if out.body != "last" {
		return fmt.Errorf("the request running at SIGTERM: got %q, want \"last\"", out.body)
	}
	h.p.SetSlotState(0, pool.SlotEmpty)
	return nil
}

// Report formats results, one line each, and says whether all passed.
func Report(rs []Result) (string, bool) {
	var b strings.Builder
	ok := true
	for _, r := range rs {
		switch {
		case r.Skip != "":
			fmt.Fprintf(&b, "skip  %s (%s)\n", r.Case, r.Skip)
		case r.Err != nil:
			ok = false
			fmt.Fprintf(&b, "FAIL  %s: %v\n", r.Case, r.Err)
		default:
			fmt.Fprintf(&b, "ok    %s\n", r.Case)
		}
	}
	return b.String(), ok
}

// Abs resolves a program path for a Target.
func Abs(p string) string {
	if strings.Contains(p, "/") {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
	}
	return p
}
