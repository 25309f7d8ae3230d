package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spry-dev/spry/internal/auth"
	"github.com/spry-dev/spry/internal/hist"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/route"
)

// Chain is a route the gateway serves: requests to Route run the app's
// chain Index, whose first step is function First.
type Chain struct {
	Name      string
	Route     string
	App       *App
	Index     uint16        // chain index in the app's routing table
	First     uint16        // function index of the first step
	FirstName string        // its name, for messages
	Methods   []string      // accepted methods; HEAD is served wherever GET is
	Headers   []string      // request headers forwarded to the functions
	Timeout   time.Duration // whole-chain deadline
	// Auth, when set, checks every request routed to the chain by its path
	// before anything is taken for it (401/403 otherwise). Requests that
	// name the chain themselves (Request.Chain: triggers, hops from other
	// nodes) are the platform's own and are not checked.
	Auth *auth.Checker
	// Recorder, when set, gets the replies of synchronous requests that
	// ended with 400 or more, or every reply with RecordAll (the chain's
	// activation record setting).
	Recorder  Recorder
	RecordAll bool

	allow   []byte   // the methods it accepts, for the Allow field of 405s
	headers [][]byte // Headers, as bytes for the metadata writer
	codes   [1000]atomic.Uint64
	latency hist.H

	timeoutMsg    []byte // the body of its 504s
	noInstanceMsg []byte // the body of its 503s for want of an instance
}

// Allow returns the methods the chain accepts, as an Allow field's value.
func (ch *Chain) Allow() []byte { return ch.allow }

// count counts a response of the chain, to a request that arrived at
// began (mono ns).
func (ch *Chain) count(status int, began int64) {
	if status < 100 || status > 999 {
		status = 500
	}
	ch.codes[status].Add(1)
	ch.latency.Observe(mono.Now() - began)
}

// Codes calls fn with every status code the chain answered with and how
// often.
func (ch *Chain) Codes(fn func(code int, n uint64)) { eachCode(&ch.codes, fn) }

// Latency returns the chain's response times, from the gateway's receipt
// of the request head to the response written.
func (ch *Chain) Latency() hist.Snapshot { return ch.latency.Snapshot() }

func eachCode(codes *[1000]atomic.Uint64, fn func(code int, n uint64)) {
	for code := range codes {
		if n := codes[code].Load(); n != 0 {
			fn(code, n)
		}
	}
}

// Config configures a Gateway.
type Config struct {
	Chains []*Chain
	Log    *slog.Logger
	// TLS, when set, makes every listener serve TLS (with ALPN h2 and
	// http/1.1); certificates come from its GetCertificate, so they can
	// change while connections stay up.
	TLS *tls.Config
	// IdleTimeout bounds how long a keep-alive connection waits for its
	// next request (default 2 minutes); HeaderTimeout how long a request
	// head and body may take to arrive (default 30 s).
	IdleTimeout, HeaderTimeout time.Duration
}

// Gateway is a node's ingress: the admission path every protocol ends in
// (admit.go), and the listener whose connections speak HTTP/1.1 to it
// (conn.go). It writes each request's body once into a buffer of the
// app's pool, hands the chain a descriptor and answers from the buffer that
// comes back.
type Gateway struct {
	routes atomic.Pointer[route.Table[*Chain]] // swapped whole by SetChains
	maxBuf atomic.Int64                        // the largest pool buffer of any chain's app
	tls    *tls.Config
	log    *slog.Logger
	idle   time.Duration
	header time.Duration
	date   atomic.Pointer[[]byte]
	// The date loop runs while responses use the date: dateUsed says one
	// did since its last tick; dateIdle that it stopped (a second with
	// none), so that an idle gateway wakes for nothing (see dateBytes).
	dateUsed, dateIdle atomic.Bool
	mu                 sync.Mutex
	lns                []net.Listener
	loopLns            []func() // stop the event loops' listeners
	conns              map[*conn]struct{}
	closing            atomic.Bool
	wg                 sync.WaitGroup
	stop               chan struct{}
	stopped            sync.Once
	refused            [1000]atomic.Uint64 // responses to requests no chain served
	events             Events              // asynchronous requests and CloudEvents (nil: none)
	// activationURL prefixes an activation id in a 202's Location (the
	// admin API's /v1/activations/).
	activationURL string
}

// Refused calls fn with every status code the gateway answered requests
// that reached no chain with (malformed, unknown route), and how often.
func (g *Gateway) Refused(fn func(code int, n uint64)) { eachCode(&g.refused, fn) }

// maxBody returns the largest body any chain takes.
func (g *Gateway) maxBody() int { return int(g.maxBuf.Load()) }

// count counts a response to a request that reached no chain.
func (g *Gateway) count(status int) {
	if status >= 100 && status <= 999 {
		g.refused[status].Add(1)
	}
}

// Chains returns the chains the gateway serves.
func (g *Gateway) Chains() []*Chain {
	t := g.routes.Load()
	out := make([]*Chain, 0, t.Len())
	t.Each(func(ch *Chain) { out = append(out, ch) })
	return out
}

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("gateway: closed")

// New makes a gateway serving the given chains.
func New(c Config) (*Gateway, error) {
	g := &Gateway{
		log: c.Log, idle: c.IdleTimeout, header: c.HeaderTimeout,
		conns: map[*conn]struct{}{}, stop: make(chan struct{}),
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	if g.idle <= 0 {
		g.idle = 2 * time.Minute
	}
	if g.header <= 0 {
		g.header = 30 * time.Second
	}
	if c.TLS != nil {
		g.tls = c.TLS.Clone()
		g.tls.NextProtos = []string{"h2", "http/1.1"}
		if g.tls.MinVersion == 0 {
			g.tls.MinVersion = tls.VersionTLS12
		}
	}
	if err := g.SetChains(c.Chains); err != nil {
		return nil, err
	}
	g.tickDate(time.Now())
	go g.dateLoop()
	return g, nil
}

// SetChains replaces the chains the gateway serves, all at once: a request
// whose head is parsed from then on runs on the new chains; requests
// already admitted finish on the ones they started on. On error nothing
// changes.
func (g *Gateway) SetChains(chains []*Chain) error {
	for _, ch := range chains {
		if ch.Timeout <= 0 {
			return fmt.Errorf("gateway: chain %s has no timeout", ch.Name)
		}
		if ch.allow == nil {
			// Once, before the chain is first published (a chain that
			// stays across SetChains is being served: left as it is).
			ch.allow = []byte(allowHeader(ch.Methods))
			ch.timeoutMsg = []byte("spry: chain " + ch.Name + ErrDeadline.Msg + "\n")
			ch.noInstanceMsg = []byte("spry: no instance of function " + ch.FirstName + ErrNoInstance.Msg + "\n")
			ch.headers = make([][]byte, len(ch.Headers))
			for i, h := range ch.Headers {
				ch.headers[i] = []byte(h)
			}
		}
	}
	t := &route.Table[*Chain]{}
	byRoute := map[string]*Chain{}
	for _, ch := range chains {
		if err := t.Add(ch.Route, ch); err != nil {
			var c *route.ErrConflict
			if errors.As(err, &c) {
				old := byRoute[c.Other]
				return fmt.Errorf("gateway: route %s served by both %s/%s and %s/%s", ch.Route, old.App.name, old.Name, ch.App.name, ch.Name)
			}
			return fmt.Errorf("gateway: chain %s: route %s: %w", ch.Name, ch.Route, err)
		}
		byRoute[ch.Route] = ch
	}
	g.routes.Store(t)
	for _, ch := range chains {
		if n := int64(ch.App.pool.BufferSize()); n > g.maxBuf.Load() {
			g.maxBuf.Store(n)
		}
	}
	return nil
}

func allowHeader(methods []string) string {
	s := ""
	get, head := false, false
	for i, m := range methods {
		if i > 0 {
			s += ", "
		}
		s += m
		get = get || m == "GET"
		head = head || m == "HEAD"
	}
	if get && !head {
		s += ", HEAD"
	}
	return s
}

// allows reports whether the chain accepts method.
func (ch *Chain) allows(method []byte) bool {
	for _, m := range ch.Methods {
		if string(method) == m {
			return true
		}
	}
	return string(method) == "HEAD" && ch.allows(get)
}

var get = []byte("GET")

// tickDate formats the Date header once a second rather than per response.
func (g *Gateway) tickDate(t time.Time) {
	b := t.UTC().AppendFormat(make([]byte, 0, 32), http.TimeFormat)
	g.date.Store(&b)
}

func (g *Gateway) dateLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			if !g.dateUsed.Swap(false) {
				// A second with no response: stop, unless one came
				// just now and found the loop still running.
				g.dateIdle.Store(true)
				if !g.dateUsed.Load() || !g.dateIdle.CompareAndSwap(true, false) {
					return
				}
			}
			g.tickDate(now)
		case <-g.stop:
			return
		}
	}
}

// dateBytes is the Date header's value, formatted once a second by the
// date loop, which it starts again when it had stopped.
func (g *Gateway) dateBytes() []byte {
	if !g.dateUsed.Load() {
		g.dateUsed.Store(true)
		if g.dateIdle.CompareAndSwap(true, false) {
			g.tickDate(time.Now())
			go g.dateLoop()
		}
	}
	return *g.date.Load()
}

// Serve accepts connections on ln until Shutdown. It returns ErrClosed
// after Shutdown, or the accept error that stopped it.
func (g *Gateway) Serve(ln net.Listener) error {
	g.mu.Lock()
	if g.closing.Load() {
		g.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	g.lns = append(g.lns, ln)
	g.mu.Unlock()
	if err, ok := g.serveLoop(ln); ok {
		return err
	}
	var wait time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if g.closing.Load() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors or a transient failure: back
				// off rather than spin, and keep serving.
				wait = min(max(2*wait, 5*time.Millisecond), time.Second)
				g.log.Warn("gateway: accept", "err", err, "retry_in", wait)
				time.Sleep(wait)
				continue
			}
			return fmt.Errorf("gateway: accept: %w", err)
		}
		wait = 0
		c := newConn(g, nc)
		g.mu.Lock()
		if g.closing.Load() {
			g.mu.Unlock()
			nc.Close()
			return ErrClosed
		}
		g.conns[c] = struct{}{}
		g.wg.Add(1)
		g.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting connections, closes idle ones, and waits until
// every request in flight is answered (or ctx ends; then it closes the
// rest).
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.stopped.Do(func() { close(g.stop) })
	g.mu.Lock()
	g.closing.Store(true)
	for _, ln := range g.lns {
		ln.Close()
	}
	for _, stop := range g.loopLns {
		stop()
	}
	for c := range g.conns {
		c.closeIfIdle()
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-tick.C:
			// Connections that finished a request since: close them too.
			g.mu.Lock()
			for c := range g.conns {
				c.closeIfIdle()
			}
			g.mu.Unlock()
		case <-ctx.Done():
			g.mu.Lock()
			for c := range g.conns {
				switch {
				case c.lp != nil:
					c.closeLoop(true)
				case c.nc != nil:
					c.nc.Close()
				}
			}
			g.mu.Unlock()
			<-done
			return ctx.Err()
		}
	}
}

func (g *Gateway) forget(c *conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
	g.wg.Done()
}

// statusLines holds "HTTP/1.1 <code> <text>\r\n" for every code.
var statusLines = func() (t [1000][]byte) {
	for code := 100; code < 1000; code++ {
		text := http.StatusText(code)
		if text == "" {
			text = "Status " + strconv.Itoa(code)
		}
		t[code] = []byte("HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n")
	}
	return t
}()
