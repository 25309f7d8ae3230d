package gateway

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
)

// readBufSize is a connection's read buffer: room for a request head and,
// usually, the whole body of a small request read with it.
const readBufSize = 16 << 10

// conn is one client connection speaking HTTP/1.1: the adapter of that
// protocol to the admission path (admit.go). Its goroutine reads requests
// and admits them; the chain's reply is answered by the thread that
// receives it (Reply, in reply.go), so a response never waits for this
// goroutine to be scheduled. Responses go out in request order: before it
// acts on a request, the goroutine waits until the previous one is answered
// (pipelined requests are served one after the other). Everything it needs
// per request lives here and is reused: serving a request allocates
// nothing.
type conn struct {
	g    *Gateway
	nc   net.Conn
	rbuf []byte
	r, w int // unread bytes are rbuf[r:w]
	req  request
	gr   Request // req, as the admission path takes it
	out  []byte  // the response head being built
	msg  []byte  // the body of an error response being built
	ext  []byte  // extra fields of an error response being built
	hdr  []byte  // the functions' response headers of the reply being written
	ct   []byte  // its content type (copied out of the pool)
	// ceReply holds the CloudEvent fields of the reply to a CloudEvent
	// (set before the request is sent, read by Reply); evbuf a batch of
	// events being read.
	ceReply, evbuf []byte
	vec            [1 + pool.MaxSegs][]byte
	nvec           int
	bufs           net.Buffers
	part           bodyPart    // the body being read by ReadPart
	busy           atomic.Bool // between reading a request head and answering it

	// The request out in a chain, set before it is admitted: its response
	// has no body (HEAD); the connection closes after it.
	headOnly, closeAfter bool
	// h2 is the HTTP/2 connection this one became (h2c, or ALPN h2);
	// h2away: it was told to go away. Under g.mu.
	h2     *h2conn
	h2away bool
	// state is connIdle or connPending, or connWaiting while the goroutine
	// waits for the answer; whoever answers sets it back to connIdle and
	// signals idle if it was waiting.
	state atomic.Uint32
	idle  chan struct{}
	rep   Reply // the reply writeRest finishes

	dl      time.Time       // the read deadline armed (armRead)
	raw     syscall.RawConn // for non-blocking writes off this goroutine; nil when not a socket
	iov     [1 + pool.MaxSegs]unix.Iovec
	iovN    int
	wrote   int // bytes the last non-blocking write took
	writeFn func(fd uintptr) bool

	// On an event loop (loop_linux.go): the socket and the loop that
	// serves it (nil: the connection has a goroutine of its own), and
	// what the loop keeps of it. lp changes (to nil, when the connection
	// leaves the loop) only while no request is out, under g.mu.
	fd                int
	lp                *loop
	slot              int32
	ph                uint8 // phHead, phOut, phWrite, phLinger
	canRead, canWrite bool  // the socket may have bytes, room (edge-triggered)
	rdhup             bool  // the client's end of stream was signalled
	ending            bool  // close once the request out is answered and written (the loop's own flag: closeAfter is read by the answerer)
	handover          bool  // a post: the rest of rep's response is the loop's to write
	lingerAfter       bool  // linger once the response is out
	idleDue           bool  // due is the keep-alive deadline
	lingered          int   // bytes drained while lingering
	lingerEnd         int64 // when lingering ends whatever comes (mono ns)
	due               int64 // the deadline of what the connection waits for (mono ns; 0: none)
}

// Connection states (conn.state).
const (
	connIdle    = iota // no request out
	connPending        // a request is out in its chain
	connWaiting        // ... and the goroutine waits for it to be answered
)

func newConn(g *Gateway, nc net.Conn) *conn {
	c := &conn{
		g: g, nc: nc, rbuf: make([]byte, readBufSize),
		out: make([]byte, 0, 512), msg: make([]byte, 0, 512), ext: make([]byte, 0, 128), hdr: make([]byte, 0, 256), ct: make([]byte, 0, 128),
		idle: make(chan struct{}, 1), fd: -1,
	}
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
	c.busy.Store(false)
	if l := c.lp; l != nil {
		// The loop goes on with the connection (and closes it if the
		// gateway is shutting down): told only when it waits for that.
		if c.state.Swap(connIdle) == connWaiting {
			l.post(c)
		}
		return
	}
	if c.g.closing.Load() {
		c.nc.Close() // shutting down: the goroutine may be waiting for a next request
	}
	if c.state.Swap(connIdle) == connWaiting {
		c.idle <- struct{}{}
	}
}

// closeIfIdle closes the connection unless it is handling a request (an
// HTTP/2 connection is told to go away and closes once its streams are
// done). The caller holds g.mu.
func (c *conn) closeIfIdle() {
	switch {
	case c.lp != nil:
		c.closeLoop(false)
	case c.nc == nil:
		// Leaving its loop for a goroutine: closed on a later round.
	case c.h2 != nil:
		if !c.h2away {
			c.h2away = true
			go c.h2.shutdown()
		} else if c.h2.idle() {
			c.nc.Close()
		}
	case !c.busy.Load():
		c.nc.Close()
	}
}

// setConn replaces the connection's net.Conn (TLS over the socket; a
// connection leaving its event loop).
func (c *conn) setConn(nc net.Conn) {
	c.g.mu.Lock()
	c.nc = nc
	c.lp = nil
	c.g.mu.Unlock()
	c.raw, c.writeFn = nil, nil
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			c.writeFn = c.writev
		}
	}
}

// startTLS runs the TLS handshake on a connection to a TLS listener, and
// reports the protocol agreed by ALPN ("h2", or "" for HTTP/1.1). A client
// that speaks plain HTTP gets a clear answer instead.
func (c *conn) startTLS() (proto string, ok bool) {
	c.armRead(c.g.header) // kept by the TLS connection over this one
	if err := c.fill(); err != nil {
		return "", false
	}
	if c.rbuf[0] != 0x16 { // not a TLS handshake record
		c.g.count(400)
		c.nc.SetWriteDeadline(time.Now().Add(c.g.header))
		c.nc.Write(plainToTLS)
		c.lingerClose()
		return "", false
	}
	tc := tls.Server(&prefixConn{Conn: c.nc, pre: c.rbuf[c.r:c.w]}, c.g.tls)
	c.r, c.w = 0, 0
	if err := tc.Handshake(); err != nil {
		return "", false
	}
	c.setConn(tc)
	return tc.ConnectionState().NegotiatedProtocol, true
}

var plainToTLS = []byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
	"spry: this port serves HTTPS (TLS): use https://\n")

// prefixConn is a net.Conn whose first bytes were read already.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// serveH2 turns the connection into an HTTP/2 one; pre are bytes of it
// already read. up, when not nil, admits an upgraded HTTP/1.1 request as
// stream 1 once the server's preface is out.
func (c *conn) serveH2(up func(h *h2conn)) {
	h := c.g.newH2(c.nc)
	c.g.mu.Lock()
	c.h2 = h
	away := c.g.closing.Load()
	c.g.mu.Unlock()
	if away || !h.start() {
		h.close()
		return
	}
	if up != nil {
		up(h)
	}
	h.serve(append([]byte(nil), c.rbuf[c.r:c.w]...))
}

var (
	h2PriLine     = []byte("PRI * HTTP/2.0\r\n\r\n")
	switching101  = []byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
	errH2Settings = &Error{Status: 400, Msg: "malformed HTTP2-Settings header", Close: true}
)

// wantsH2C reports whether the request asks to upgrade to HTTP/2 in the
// clear (RFC 7540 3.2).
func (c *conn) wantsH2C() bool {
	up := c.req.header("upgrade")
	return up != nil && hasToken(up, "h2c") && c.req.header("http2-settings") != nil &&
		hasToken(c.req.header("connection"), "upgrade")
}

// upgradeH2C answers an Upgrade: h2c request with 101 and serves the rest
// of the connection as HTTP/2; the request (its body read as HTTP/1.1
// framing) is stream 1.
func (c *conn) upgradeH2C(began int64) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(string(c.req.header("http2-settings")), "="))
	if err != nil || len(raw)%6 != 0 {
		c.g.count(errH2Settings.Status)
		c.writeError(errH2Settings, nil)
		c.lingerClose()
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.g.header))
	if _, err := c.nc.Write(switching101); err != nil {
		return
	}
	c.serveH2(func(h *h2conn) {
		for i := 0; i < len(raw); i += 6 {
			s := http2.Setting{ID: http2.SettingID(binary.BigEndian.Uint16(raw[i:])), Val: binary.BigEndian.Uint32(raw[i+2:])}
			if h.setting(s) != nil {
				return
			}
		}
		st := h.newStream(1)
		st.head = string(c.req.method) == "HEAD"
		st.ended, st.pending = true, true
		h.mu.Lock()
		h.lastID, h.opened = 1, 1
		h.streams[1] = st
		h.mu.Unlock()
		length := c.req.length
		if c.req.chunked {
			length = -1
		}
		st.req = Request{Method: c.req.method, Path: c.req.path, Query: c.req.query, ContentType: c.req.ctype,
			Length: length, Headers: c, Body: c, Began: began, Reply: h, Tag: 1}
		if err := c.g.Admit(&st.req); err != nil {
			if err == ErrSilent {
				h.mu.Lock()
				st.pending = false
				h.mu.Unlock()
				h.close()
				return
			}
			h.refuse(st, err, true)
		}
	})
}

// lingerClose ends a connection whose client may still be sending (a
// request refused before its body was read, a head too large): the answer
// is out, so stop reading the request, half-close, and drain what arrives
// for a bounded time and amount before the close. Closing with unread
// input would make the kernel reset the connection, and the client would
// often see the reset instead of the answer.
func (c *conn) lingerClose() {
	if c.lp != nil {
		if c.ph == phWrite {
			c.lingerAfter = true
		} else {
			c.startLinger(c.lp)
		}
		return
	}
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() != nil {
			return
		}
	}
	end := time.Now().Add(lingerTime)
	for n := 0; n < lingerBytes; {
		due := time.Now().Add(lingerIdle)
		if due.After(end) {
			due = end
		}
		c.nc.SetReadDeadline(due)
		k, err := c.nc.Read(c.rbuf)
		n += k
		if err != nil {
			return
		}
	}
}

// How long and how much lingerClose drains: as long as the client keeps
// sending (a pause of lingerIdle ends it), at most lingerTime and
// lingerBytes in all. (A bound on the whole drain alone reset slow
// uploaders before they could read their answer: a client sending its
// 1 MiB body at under 1 MiB/s saw "broken pipe", not the 413.)
const (
	lingerIdle  = time.Second
	lingerTime  = 10 * time.Second
	lingerBytes = 4 << 20
)

func (c *conn) serve() {
	defer c.g.forget(c)
	defer func() { c.nc.Close() }()
	defer c.waitIdle() // a response still out goes out before the close
	if c.g.tls != nil {
		proto, ok := c.startTLS()
		if !ok {
			return
		}
		if proto == "h2" {
			c.serveH2(nil)
			return
		}
	}
	c.serveHTTP1()
}

// serveRest serves a connection an event loop handed over, from the
// request at the start of its read buffer on.
func (c *conn) serveRest() {
	defer c.g.forget(c)
	defer func() { c.nc.Close() }()
	defer c.waitIdle()
	c.serveHTTP1()
}

// serveHTTP1 serves the connection's HTTP/1.1 requests (or turns it to
// HTTP/2) until it ends.
func (c *conn) serveHTTP1() {
	for !c.g.closing.Load() {
		n, err := c.readHead()
		c.waitIdle()
		if err != nil {
			c.g.count(err.Status)
			c.writeError(err, nil)
			if err != ErrSilent {
				c.lingerClose()
			}
			return
		}
		if c.g.tls == nil && bytes.HasPrefix(c.rbuf[c.r:c.w], h2PriLine) {
			// HTTP/2 with prior knowledge (h2c).
			c.serveH2(nil)
			return
		}
		c.busy.Store(true)
		began := mono.Now()
		herr := parseHead(c.rbuf[c.r:c.r+n], &c.req)
		c.r += n
		if herr != nil {
			c.g.count(herr.Status)
			c.writeError(herr, nil)
			c.lingerClose()
			return
		}
		if c.g.tls == nil && c.wantsH2C() {
			c.upgradeH2C(began)
			return
		}
		keep := c.run(began)
		if c.state.Load() == connIdle {
			c.busy.Store(false)
		}
		if !keep || c.req.close {
			return
		}
	}
}

// readHead waits for a complete request head in the read buffer and
// returns its length.
func (c *conn) readHead() (int, *Error) {
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	if c.r == c.w {
		c.armRead(c.g.idle) // waiting for the next request
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
		if c.r < c.w {
			c.armRead(c.g.header) // a head has begun: the rest is due
		}
		if err := c.fill(); err != nil {
			return 0, ErrSilent
		}
	}
}

// armRead makes the connection's read deadline d from now, unless the one
// armed already falls within d/8 before that: re-arming the runtime's
// timer on every request costs more than parsing the request, and a
// timeout a little early is no worse than one to the nanosecond.
func (c *conn) armRead(d time.Duration) {
	want := time.Now().Add(d)
	if c.dl.After(want) || c.dl.Before(want.Add(-d/8)) {
		c.nc.SetReadDeadline(want)
		c.dl = want
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

// run admits the parsed request and reports whether the connection may
// serve another.
func (c *conn) run(began int64) bool {
	length := c.req.length
	if c.req.chunked {
		length = -1
	}
	c.gr = Request{
		Method: c.req.method, Path: c.req.path, Query: c.req.query, ContentType: c.req.ctype,
		Length: length, Headers: c, Body: c, Began: began, Reply: c, later: c.sendQueue(),
	}
	c.headOnly, c.closeAfter = string(c.req.method) == "HEAD", c.req.close
	c.part = bodyPart{}
	c.ceReply = c.ceReply[:0] // the last reply is out (waitIdle)
	// An event loop serves only requests it found not event-like (the
	// others it hands to a goroutine): no need to classify them again.
	if c.g.events != nil && c.lp == nil {
		if keep, done := c.runEvent(); done {
			return keep
		}
	}
	// Pending before the admission: the reply may be answered before
	// Admit returns.
	c.state.Store(connPending)
	err := c.g.Admit(&c.gr)
	if err == nil {
		return true
	}
	c.state.Store(connIdle)
	return c.refuse(err)
}

// refuse answers a request the admission path refused, and reports
// whether the connection may serve another.
func (c *conn) refuse(err *Error) bool {
	if err == ErrSilent {
		return false
	}
	// A refusal before the body was read skips the body when it is
	// already buffered; otherwise the connection closes.
	keep := !err.Close && c.skipBody()
	var extra []byte
	switch {
	case err == ErrMethod:
		c.ext = append(append(append(c.ext[:0], "Allow: "...), c.gr.Routed.allow...), "\r\n"...)
		extra = c.ext
	case err.Retry:
		extra = retryAfter
	case err.Status == 401 && c.gr.Routed != nil && c.gr.Routed.Auth != nil:
		c.ext = append(append(append(c.ext[:0], "WWW-Authenticate: "...), c.gr.Routed.Auth.Challenge...), "\r\n"...)
		extra = c.ext
	}
	c.msg = c.gr.AppendMessage(c.msg[:0], err)
	c.writeResponse(err.Status, textPlain, c.msg, !keep, extra)
	if !keep {
		c.lingerClose()
	}
	return keep
}

// Header returns the value of the current request's header field name.
func (c *conn) Header(name string) []byte { return c.req.header(name) }

// NumHeaders returns the number of the current request's header fields.
func (c *conn) NumHeaders() int { return c.req.nh }

// HeaderAt returns the current request's header field i.
func (c *conn) HeaderAt(i int) (name, value []byte) { return c.req.hdrs[i].name, c.req.hdrs[i].value }

// ReadBody reads the current request's body into dst (see Body).
func (c *conn) ReadBody(dst []byte) (int, *Error) {
	if c.req.expect && c.req.length != 0 && c.r == c.w {
		c.nc.Write(continue100)
	}
	return c.readBody(dst)
}

// bodyPart is where ReadPart is in the current request's body.
type bodyPart struct {
	started, ended bool
	left           int64 // Content-Length: bytes left; chunked: bytes left of the current chunk
	chunks         int   // chunks begun
}

// ReadPart reads the next part of the current request's body into dst
// (see StreamBody): a large body streams from the socket straight into
// the pool, as much per read as the kernel has.
func (c *conn) ReadPart(dst []byte) (int, bool, *Error) {
	b := &c.part
	if !b.started {
		b.started = true
		if c.req.expect && c.req.length != 0 && c.r == c.w {
			c.nc.Write(continue100)
		}
		if !c.req.chunked {
			b.left = max(c.req.length, 0)
		}
	}
	if b.ended || len(dst) == 0 {
		return 0, b.ended, nil
	}
	// The deadline bounds the wait for the next bytes, not the whole
	// body: a large body over a slow link takes its time. (On a loop the
	// whole body is in the read buffer already.)
	if c.lp == nil {
		c.nc.SetReadDeadline(time.Now().Add(c.g.header))
	}
	if !c.req.chunked {
		if b.left == 0 {
			b.ended = true
			return 0, true, nil
		}
		n, err := c.readSome(dst[:min(int64(len(dst)), b.left)])
		b.left -= int64(n)
		b.ended = b.left == 0
		return n, b.ended, err
	}
	if b.left == 0 {
		if b.chunks > 0 {
			// The CRLF that ends the previous chunk's data.
			if line, err := c.line(); err != nil || len(line) != 0 {
				if err == nil {
					err = errBadChunk
				}
				return 0, false, err
			}
		}
		line, err := c.line()
		if err != nil {
			return 0, false, err
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return 0, false, errBadChunk
		}
		b.chunks++
		if size == 0 {
			if err := c.trailers(); err != nil {
				return 0, false, err
			}
			b.ended = true
			return 0, true, nil
		}
		b.left = size
	}
	n, err := c.readSome(dst[:min(int64(len(dst)), b.left)])
	b.left -= int64(n)
	return n, false, err
}

// readSome reads at least one byte of body into dst: what the read buffer
// holds, else straight from the socket.
func (c *conn) readSome(dst []byte) (int, *Error) {
	if c.r < c.w {
		n := copy(dst, c.rbuf[c.r:c.w])
		c.r += n
		return n, nil
	}
	if c.lp != nil {
		return 0, ErrSilent // a loop admits only bodies it has whole
	}
	n, err := c.nc.Read(dst)
	if n > 0 {
		return n, nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return 0, ErrSilent
}

// trailers reads a chunked body's trailer fields, up to the blank line,
// and ignores them.
func (c *conn) trailers() *Error {
	for total := 0; ; {
		line, err := c.line()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		if total += len(line); total > MaxHeaderBytes {
			return errHeaderTooLarge
		}
	}
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

var continue100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")

func (c *conn) errorBody(e *Error) []byte {
	c.msg = append(append(append(c.msg[:0], "spry: "...), e.Msg...), '\n')
	return c.msg
}

// writeError answers with e and closes the connection when e says so.
func (c *conn) writeError(e *Error, extra []byte) {
	if e == ErrSilent {
		return
	}
	c.writeResponse(e.Status, textPlain, c.errorBody(e), e.Close, extra)
}

// readBody reads the request body into dst, a pool buffer: the bytes that
// arrived with the head are moved from the read buffer, the rest is read
// from the socket straight into dst.
func (c *conn) readBody(dst []byte) (int, *Error) {
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
		if c.lp != nil {
			return 0, ErrSilent // a loop admits only bodies it has whole
		}
		c.armRead(c.g.header)
		if _, err := io.ReadFull(c.nc, dst[have:n]); err != nil {
			return 0, ErrSilent
		}
	}
	return n, nil
}

// readChunked decodes a chunked body into dst.
func (c *conn) readChunked(dst []byte) (int, *Error) {
	c.armRead(c.g.header)
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
			return 0, ErrTooLarge
		}
		end := n + int(size)
		have := copy(dst[n:end], c.rbuf[c.r:c.w])
		c.r += have
		if n+have < end {
			if _, err := io.ReadFull(c.nc, dst[n+have:end]); err != nil {
				return 0, ErrSilent
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
	if err := c.trailers(); err != nil {
		return 0, err
	}
	return n, nil
}

// line returns the next CRLF-terminated line from the connection.
func (c *conn) line() ([]byte, *Error) {
	for {
		if line, _, ok := cutLine(c.rbuf[c.r:c.w]); ok {
			c.r += len(line) + 2
			return line, nil
		}
		if c.w-c.r > maxChunkLine {
			return nil, errBadChunk
		}
		if err := c.fill(); err != nil {
			return nil, ErrSilent
		}
	}
}

// head builds a response head in c.out.
func (c *conn) head(status int, ctype []byte, n int, close bool, extra []byte) []byte {
	if status < 100 || status > 999 {
		status = 500
	}
	o := append(c.out[:0], statusLines[status]...)
	o = append(append(append(o, "Content-Type: "...), ctype...), "\r\n"...)
	if !Bodyless(status) {
		o = append(strconv.AppendInt(append(o, "Content-Length: "...), int64(n), 10), "\r\n"...)
	}
	o = append(append(append(o, "Date: "...), c.g.dateBytes()...), "\r\n"...)
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
	o := c.head(status, ctype, len(body), close || c.req.close, extra)
	if string(c.req.method) == "HEAD" {
		body = nil
	}
	if c.lp != nil {
		c.loopWrite(o, body)
		return nil
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.g.header))
	var err error
	if len(body) == 0 {
		_, err = c.nc.Write(o)
	} else {
		c.vec[0], c.vec[1] = o, body
		c.bufs = c.vec[:2]
		_, err = c.bufs.WriteTo(c.nc)
	}
	return err
}
