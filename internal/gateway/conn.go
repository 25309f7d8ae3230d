package gateway

import (
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
)

// readBufSize is a connection's read buffer: room for a request head and,
// usually, the whole body of a small request read with it.
const readBufSize = 16 << 10

// conn is one client connection. Its goroutine reads requests, admits them
// and sends them into their chain; the chain's reply is answered by the
// thread that receives it (see reply.go), so a response never waits for
// this goroutine to be scheduled. Responses go out in request order: before
// it acts on a request, the goroutine waits until the previous one is
// answered (pipelined requests are served one after the other). Everything
// it needs per request lives here and is reused: serving a request
// allocates nothing.
type conn struct {
	g     *Gateway
	nc    net.Conn
	rbuf  []byte
	r, w  int // unread bytes are rbuf[r:w]
	req   request
	out   []byte // the response head being built
	msg   []byte // the body of an error response being built
	vec   [2][]byte
	bufs  net.Buffers
	busy  atomic.Bool // between reading a request head and answering it
	ch    *Chain      // the chain of the current request, nil when none
	began int64       // when the current request's head was complete (mono ns)

	// A request out in a chain. state is connIdle or connPending, or
	// connWaiting while the goroutine waits for the answer; whoever
	// answers sets it back to connIdle and signals idle if it was waiting.
	state atomic.Uint32
	idle  chan struct{}
	// fl names the request out, for the deadline timer (which runs on its
	// own goroutine); flMu guards it.
	flMu  sync.Mutex
	fl    flight
	timer *time.Timer

	raw     syscall.RawConn // for non-blocking writes off this goroutine; nil when not a socket
	iov     [2]unix.Iovec
	iovN    int
	wrote   int // bytes the last non-blocking write took
	writeFn func(fd uintptr) bool
}

// Connection states (conn.state).
const (
	connIdle    = iota // no request out
	connPending        // a request is out in its chain
	connWaiting        // ... and the goroutine waits for it to be answered
)

// flight is a request a connection has out in a chain.
type flight struct {
	a        *App
	idx      uint32
	reqID    uint64
	deadline int64
	ch       *Chain
	began    int64
	close    bool
}

func newConn(g *Gateway, nc net.Conn) *conn {
	c := &conn{
		g: g, nc: nc, rbuf: make([]byte, readBufSize),
		out: make([]byte, 0, 512), msg: make([]byte, 0, 512),
		idle: make(chan struct{}, 1),
	}
	c.timer = time.AfterFunc(time.Hour, c.expire)
	c.timer.Stop()
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			c.writeFn = c.writev
		}
	}
	return c
}

// waitIdle returns once no request of this connection is out: the
// connection's next response, or its close, may follow.
//
// The answer is usually microseconds away when the next request arrives
// this early, and comes from a thread that would otherwise have to wake
// this goroutine through the scheduler (see reply.go): so it spins briefly
// (yielding the processor) before it sleeps.
func (c *conn) waitIdle() {
	if c.state.Load() == connIdle {
		return
	}
	for spin := mono.Now() + spinWait; mono.Now() < spin; {
		if c.state.Load() == connIdle {
			return
		}
		runtime.Gosched()
	}
	if c.state.CompareAndSwap(connPending, connWaiting) {
		<-c.idle
	}
}

// spinWait bounds how long waitIdle spins before it sleeps.
const spinWait = int64(20 * time.Microsecond)

// answered marks the request out as answered (on whichever goroutine
// answered it).
func (c *conn) answered() {
	c.timer.Stop()
	c.busy.Store(false)
	if c.g.closing.Load() {
		c.nc.Close() // shutting down: the goroutine may be waiting for a next request
	}
	if c.state.Swap(connIdle) == connWaiting {
		c.idle <- struct{}{}
	}
}

// closeIfIdle closes the connection unless it is handling a request.
func (c *conn) closeIfIdle() {
	if !c.busy.Load() {
		c.nc.Close()
	}
}

func (c *conn) serve() {
	defer c.g.forget(c)
	defer c.nc.Close()
	defer c.waitIdle() // a response still out goes out before the close
	for !c.g.closing.Load() {
		n, err := c.readHead()
		c.waitIdle()
		if err != nil {
			if err != errSilent {
				c.writeError(err, nil)
			}
			return
		}
		c.busy.Store(true)
		c.ch, c.began = nil, mono.Now()
		herr := parseHead(c.rbuf[c.r:c.r+n], &c.req)
		c.r += n
		if herr != nil {
			c.writeError(herr, nil)
			return
		}
		keep := c.route()
		if c.state.Load() == connIdle {
			c.busy.Store(false)
		}
		if !keep || c.req.close {
			return
		}
	}
}

// errSilent: the connection ends without a response (the client went away
// or sent nothing).
var errSilent = &httpError{0, "", true}

// readHead waits for a complete request head in the read buffer and
// returns its length.
func (c *conn) readHead() (int, *httpError) {
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	c.nc.SetReadDeadline(time.Now().Add(c.g.idle))
	started := c.r < c.w
	if started {
		c.nc.SetReadDeadline(time.Now().Add(c.g.header))
	}
	for {
		if n := headEnd(c.rbuf[c.r:c.w]); n >= 0 {
			if n > MaxHeaderBytes {
				return 0, errHeaderTooLarge
			}
			return n, nil
		}
		if c.w-c.r >= MaxHeaderBytes {
			return 0, errHeaderTooLarge
		}
		if err := c.fill(); err != nil {
			return 0, errSilent
		}
		if !started {
			started = true
			c.nc.SetReadDeadline(time.Now().Add(c.g.header))
		}
	}
}

// fill reads more bytes into the read buffer, moving the unread ones to its
// start when the end is reached.
func (c *conn) fill() error {
	if c.w == len(c.rbuf) {
		c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
		c.r = 0
	}
	n, err := c.nc.Read(c.rbuf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// route runs the parsed request and reports whether the connection may
// serve another.
func (c *conn) route() bool {
	ch := (*c.g.routes.Load())[string(c.req.path)]
	c.ch = ch
	if ch == nil {
		c.msg = append(append(append(c.msg[:0], "spry: no chain serves "...), c.req.path...), '\n')
		return c.refuse(404, c.msg, nil)
	}
	if !ch.allows(c.req.method) {
		c.msg = append(append(append(append(c.msg[:0], "spry: "...), c.req.method...), " is not allowed on "...), ch.Route...)
		c.msg = append(c.msg, '\n')
		return c.refuse(405, c.msg, ch.allow)
	}
	return c.invoke(ch)
}

// refuse answers a request the gateway did not run. The body of the request
// is skipped when it is already buffered; otherwise the connection closes.
func (c *conn) refuse(status int, body, extra []byte) bool {
	keep := c.skipBody()
	c.writeResponse(status, textPlain, body, !keep, extra)
	return keep
}

func (c *conn) skipBody() bool {
	switch {
	case c.req.chunked:
		return false
	case c.req.length <= 0:
		return true
	case c.req.length <= int64(c.w-c.r):
		c.r += int(c.req.length)
		return true
	}
	return false
}

var (
	textPlain  = []byte("text/plain; charset=utf-8")
	octets     = []byte("application/octet-stream")
	retryAfter = []byte("Retry-After: 1\r\n")
)

// invoke runs chain ch on the request and answers with its reply.
func (c *conn) invoke(ch *Chain) bool {
	a := ch.App
	p := a.pool
	if c.req.length > int64(p.BufferSize()) {
		return c.fail(errTooLarge)
	}
	idx, reqID, ok := a.acquire()
	if !ok {
		a.stats.Rejected.Add(1)
		c.msg = append(append(append(c.msg[:0], "spry: app "...), a.name...), " is at its in-flight limit; retry later\n"...)
		return c.refuse(429, c.msg, retryAfter)
	}
	buf, ok := p.Alloc(a.id)
	if !ok {
		a.release(idx, reqID)
		a.stats.Rejected.Add(1)
		c.msg = append(append(append(c.msg[:0], "spry: app "...), a.name...), " has no free pool buffer; retry later\n"...)
		return c.refuse(503, c.msg, retryAfter)
	}
	h := p.Header(buf)
	m := h.WriteMeta()
	ok = m.Request(c.req.method, c.req.path, c.req.query)
	for i := 0; ok && i < len(ch.headers); i++ {
		if v := c.req.header(ch.Headers[i]); v != nil {
			ok = m.Header(ch.headers[i], v)
		}
	}
	if !ok {
		p.Free(buf, a.id)
		a.release(idx, reqID)
		return c.fail(errMetaTooLarge)
	}
	if c.req.expect && c.req.length != 0 && c.r == c.w {
		c.nc.Write(continue100)
	}
	n, herr := c.readBody(p.Buffer(buf))
	if herr != nil {
		p.Free(buf, a.id)
		a.release(idx, reqID)
		return c.fail(herr)
	}
	h.SetData(0, uint32(n))
	h.SetContentType(c.req.ctype)
	now := c.began
	deadline := now + int64(ch.Timeout)
	h.SetReqID(reqID)
	h.SetChain(ch.Index)
	h.SetTimes(now, deadline)
	a.stats.Requests.Add(1)
	// Out it goes. From the publication on, the reply may be answered on
	// another thread at any moment.
	c.flMu.Lock()
	c.fl = flight{a: a, idx: idx, reqID: reqID, deadline: deadline, ch: ch, began: c.began, close: c.req.close}
	c.flMu.Unlock()
	c.state.Store(connPending)
	a.publish(idx, reqID, c, ch, c.began, deadline, string(c.req.method) == "HEAD", c.req.close)
	if !a.dispatch(ch.First, desc.Desc{Buf: buf, Chain: ch.Index}, deadline) {
		// No instance took it before the deadline. Nobody but this
		// goroutine can hold the request (its buffer never left the
		// gateway, the timer is not armed): take it back.
		p.Free(buf, a.id)
		a.release(idx, reqID)
		a.stats.Rejected.Add(1)
		c.state.Store(connIdle)
		c.msg = append(append(append(c.msg[:0], "spry: no instance of function "...), ch.FirstName...), " could take the request\n"...)
		c.writeResponse(503, textPlain, c.msg, false, retryAfter)
		return true
	}
	// Armed after the send: a reply may already have been answered, and
	// then the timer's firing finds nothing to expire.
	c.timer.Reset(time.Duration(deadline - mono.Now()))
	return true
}

var continue100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// fail answers a request the gateway refuses as malformed or too large.
func (c *conn) fail(e *httpError) bool {
	if !e.close {
		return c.refuse(e.status, c.errorBody(e), nil)
	}
	c.writeError(e, nil)
	return false
}

func (c *conn) errorBody(e *httpError) []byte {
	c.msg = append(append(append(c.msg[:0], "spry: "...), e.msg...), '\n')
	return c.msg
}

// writeError answers with e and closes the connection when e says so.
func (c *conn) writeError(e *httpError, extra []byte) {
	if e == errSilent {
		return
	}
	c.writeResponse(e.status, textPlain, c.errorBody(e), e.close, extra)
}

// readBody reads the request body into dst, a pool buffer: the bytes that
// arrived with the head are moved from the read buffer, the rest is read
// from the socket straight into dst.
func (c *conn) readBody(dst []byte) (int, *httpError) {
	if c.req.chunked {
		return c.readChunked(dst)
	}
	n := int(max(c.req.length, 0))
	if n == 0 {
		return 0, nil
	}
	have := copy(dst[:n], c.rbuf[c.r:c.w])
	c.r += have
	if have < n {
		c.nc.SetReadDeadline(time.Now().Add(c.g.header))
		if _, err := io.ReadFull(c.nc, dst[have:n]); err != nil {
			return 0, errSilent
		}
	}
	return n, nil
}

// readChunked decodes a chunked body into dst.
func (c *conn) readChunked(dst []byte) (int, *httpError) {
	c.nc.SetReadDeadline(time.Now().Add(c.g.header))
	n := 0
	for {
		line, err := c.line()
		if err != nil {
			return 0, err
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return 0, errBadChunk
		}
		if size == 0 {
			break
		}
		if size > int64(len(dst)-n) {
			return 0, errTooLarge
		}
		end := n + int(size)
		have := copy(dst[n:end], c.rbuf[c.r:c.w])
		c.r += have
		if n+have < end {
			if _, err := io.ReadFull(c.nc, dst[n+have:end]); err != nil {
				return 0, errSilent
			}
		}
		n = end
		if line, err := c.line(); err != nil || len(line) != 0 {
			if err == nil {
				err = errBadChunk
			}
			return 0, err
		}
	}
	// Trailer fields, up to the blank line: read and ignored.
	for total := 0; ; {
		line, err := c.line()
		if err != nil {
			return 0, err
		}
		if len(line) == 0 {
			return n, nil
		}
		if total += len(line); total > MaxHeaderBytes {
			return 0, errHeaderTooLarge
		}
	}
}

// line returns the next CRLF-terminated line from the connection.
func (c *conn) line() ([]byte, *httpError) {
	for {
		if line, _, ok := cutLine(c.rbuf[c.r:c.w]); ok {
			c.r += len(line) + 2
			return line, nil
		}
		if c.w-c.r > maxChunkLine {
			return nil, errBadChunk
		}
		if err := c.fill(); err != nil {
			return nil, errSilent
		}
	}
}

// head builds a response head in c.out and counts the response as one of
// chain ch (nil: of no chain) whose request arrived at began.
func (c *conn) head(ch *Chain, began int64, status int, ctype []byte, n int, close bool, extra []byte) []byte {
	if status < 100 || status > 999 {
		status = 500
	}
	if ch != nil {
		ch.codes[status].Add(1)
		ch.latency.Observe(mono.Now() - began)
	} else {
		c.g.refused[status].Add(1)
	}
	o := append(c.out[:0], statusLines[status]...)
	o = append(append(append(o, "Content-Type: "...), ctype...), "\r\n"...)
	o = append(strconv.AppendInt(append(o, "Content-Length: "...), int64(n), 10), "\r\n"...)
	o = append(append(append(o, "Date: "...), *c.g.date.Load()...), "\r\n"...)
	if close || c.g.closing.Load() {
		o = append(o, "Connection: close\r\n"...)
	}
	o = append(append(o, extra...), "\r\n"...)
	c.out = o
	return o
}

// writeResponse writes a response the gateway makes itself: the head, then
// body, with one writev.
func (c *conn) writeResponse(status int, ctype, body []byte, close bool, extra []byte) error {
	o := c.head(c.ch, c.began, status, ctype, len(body), close || c.req.close, extra)
	if string(c.req.method) == "HEAD" {
		body = nil
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.g.header))
	var err error
	if len(body) == 0 {
		_, err = c.nc.Write(o)
	} else {
		c.vec = [2][]byte{o, body}
		c.bufs = c.vec[:]
		_, err = c.bufs.WriteTo(c.nc)
	}
	return err
}
