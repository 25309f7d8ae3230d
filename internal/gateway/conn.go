package gateway

import (
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
)

// readBufSize is a connection's read buffer: room for a request head and,
// usually, the whole body of a small request read with it.
const readBufSize = 16 << 10

// conn is one client connection. Its goroutine reads a request, runs it to
// completion and writes the response before it reads the next one, so
// pipelined requests are answered in order. Everything it needs per request
// lives here and is reused: serving a request allocates nothing.
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
	done  chan struct{} // a reply for this connection's request is ready
	timer *time.Timer
	busy  atomic.Bool // between reading a request head and answering it
	ch    *Chain      // the chain of the current request, nil when none
	began int64       // when the current request's head was complete (mono ns)
}

func newConn(g *Gateway, nc net.Conn) *conn {
	c := &conn{
		g: g, nc: nc, rbuf: make([]byte, readBufSize),
		out: make([]byte, 0, 512), msg: make([]byte, 0, 512),
		done: make(chan struct{}, 1), timer: time.NewTimer(time.Hour),
	}
	c.timer.Stop()
	return c
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
	for !c.g.closing.Load() {
		n, err := c.readHead()
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
		c.busy.Store(false)
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
	ch := c.g.routes[string(c.req.path)]
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
	idx, reqID, ok := a.acquire(c)
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
		p.Free(buf)
		a.release(idx, reqID)
		return c.fail(errMetaTooLarge)
	}
	if c.req.expect && c.req.length != 0 && c.r == c.w {
		c.nc.Write(continue100)
	}
	n, herr := c.readBody(p.Buffer(buf))
	if herr != nil {
		p.Free(buf)
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
	if !a.dispatch(ch.First, desc.Desc{Buf: buf, Gen: h.Gen(), Chain: ch.Index}, deadline) {
		p.Free(buf)
		a.release(idx, reqID)
		a.stats.Rejected.Add(1)
		c.msg = append(append(append(c.msg[:0], "spry: no instance of function "...), ch.FirstName...), " could take the request\n"...)
		c.writeResponse(503, textPlain, c.msg, false, retryAfter)
		return true
	}
	c.timer.Reset(time.Duration(deadline - mono.Now()))
	select {
	case <-c.done:
		c.timer.Stop()
	case <-c.timer.C:
		if a.abandon(idx, reqID) {
			a.stats.Timeouts.Add(1)
			c.msg = append(append(append(c.msg[:0], "spry: chain "...), ch.Name...), " did not answer in time\n"...)
			c.writeResponse(504, textPlain, c.msg, false, nil)
			return true
		}
		<-c.done // the reply won the race
	}
	out := a.pend[idx].buf
	oh := p.Header(out)
	status := int(oh.Status())
	if status < 100 || status > 999 {
		status = 200
	}
	ctype := oh.ContentType()
	if len(ctype) == 0 || !isFieldValue(ctype) {
		ctype = octets
	}
	a.stats.Replies.Add(1)
	err := c.writeResponse(status, ctype, p.Data(out), false, nil)
	p.Free(out)
	a.release(idx, reqID)
	return err == nil
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

// writeResponse writes a response: the head built in c.out, then body
// straight from where it lies (for a chain's reply, the pool buffer) with
// one writev.
func (c *conn) writeResponse(status int, ctype, body []byte, close bool, extra []byte) error {
	if status < 100 || status > 999 {
		status = 500
	}
	if c.ch != nil {
		c.ch.codes[status].Add(1)
		c.ch.latency.Observe(mono.Now() - c.began)
	} else {
		c.g.refused[status].Add(1)
	}
	o := append(c.out[:0], statusLines[status]...)
	o = append(append(append(o, "Content-Type: "...), ctype...), "\r\n"...)
	o = append(strconv.AppendInt(append(o, "Content-Length: "...), int64(len(body)), 10), "\r\n"...)
	o = append(append(append(o, "Date: "...), *c.g.date.Load()...), "\r\n"...)
	if close || c.req.close || c.g.closing.Load() {
		o = append(o, "Connection: close\r\n"...)
	}
	o = append(append(o, extra...), "\r\n"...)
	c.out = o
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
