package load

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Request is one prepared request and the answer it must get.
type Request struct {
	Raw        []byte // the whole HTTP/1.1 request: head and body
	WantStatus int
	WantBody   []byte // nil: any body
	WantPrefix bool   // the body must only start with WantBody
	Name       string // for messages (chain name)

	parsed *parsed // Raw taken apart, for clients other than HTTP/1.1's
}

// answers reports whether body is the answer r wants.
func (r *Request) answers(body []byte) bool {
	if r.WantPrefix {
		return bytes.HasPrefix(body, r.WantBody)
	}
	return bytes.Equal(body, r.WantBody)
}

// Build returns the bytes of an HTTP/1.1 request.
func Build(method, target, host string, header [][2]string, body []byte) []byte {
	b := make([]byte, 0, 256+len(body))
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	for _, h := range header {
		b = append(append(append(append(b, h[0]...), ": "...), h[1]...), "\r\n"...)
	}
	if len(body) > 0 || method == "POST" || method == "PUT" {
		b = append(strconv.AppendInt(append(b, "Content-Length: "...), int64(len(body)), 10), "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}

// client is one keep-alive HTTP/1.1 connection that sends prepared
// requests and parses answers in a reusable buffer: it allocates nothing
// per request, so the load generator costs as little as it can.
type client struct {
	addr    string
	timeout time.Duration
	c       conn
	buf     []byte
	r, w    int
	chunk   []byte // decoded chunked body
}

var (
	errClosed   = errors.New("connection closed by the server")
	errBadReply = errors.New("malformed HTTP response")
	errTimeout  = errors.New("no answer within the timeout")
)

// conn is a client connection: a blocking socket on Linux (see rawConn),
// a net.Conn elsewhere.
type conn interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
}

// netConn is a net.Conn with a per-request deadline.
type netConn struct {
	net.Conn
	timeout time.Duration
}

func (c *netConn) Read(b []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(b)
}

func dialNet(addr string, timeout time.Duration) (conn, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return &netConn{Conn: nc, timeout: timeout}, nil
}

func newClient(addr string, timeout time.Duration) *client {
	return &client{addr: addr, timeout: timeout, buf: make([]byte, 64<<10)}
}

func (c *client) close() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}

// do sends req and returns the status and body of the answer; the body is
// valid until the next call. A read that waits longer than the client's
// timeout fails.
func (c *client) do(req []byte) (int, []byte, error) {
	if c.c == nil {
		nc, err := dial(c.addr, c.timeout)
		if err != nil {
			return 0, nil, err
		}
		if rc, ok := nc.(interface{ setTimeout(time.Duration) }); ok {
			rc.setTimeout(c.timeout)
		}
		c.c, c.r, c.w = nc, 0, 0
	}
	if _, err := c.c.Write(req); err != nil {
		c.close()
		return 0, nil, err
	}
	status, body, keep, err := c.read()
	if err != nil || !keep {
		c.close()
	}
	return status, body, err
}

// fill reads more bytes, growing the buffer when it is full.
func (c *client) fill() error {
	if c.r > 0 && c.w == len(c.buf) {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.buf) {
		nb := make([]byte, 2*len(c.buf))
		c.w = copy(nb, c.buf[c.r:c.w])
		c.r = 0
		c.buf = nb
	}
	n, err := c.c.Read(c.buf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil || err == io.EOF {
		return errClosed
	}
	if te, ok := err.(interface{ Timeout() bool }); ok && te.Timeout() {
		return errTimeout // the socket's receive timeout: EAGAIN, or a deadline
	}
	return err
}

// need makes n unread bytes available.
func (c *client) need(n int) error {
	if c.r+n > len(c.buf) {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
		if n > len(c.buf) {
			nb := make([]byte, max(n, 2*len(c.buf)))
			c.w = copy(nb, c.buf[:c.w])
			c.buf = nb
		}
	}
	for c.w-c.r < n {
		if err := c.fill(); err != nil {
			return err
		}
	}
	return nil
}

func (c *client) read() (status int, body []byte, keep bool, err error) {
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	var end int
	for {
		if end = bytes.Index(c.buf[c.r:c.w], []byte("\r\n\r\n")); end >= 0 {
			break
		}
		if err := c.fill(); err != nil {
			return 0, nil, false, err
		}
	}
	head := c.buf[c.r : c.r+end]
	c.r += end + 4
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, errBadReply
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, errBadReply
	}
	keep = line[7] == '1'
	length, chunked := -1, false
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, ok := bytes.Cut(l, []byte{':'})
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil || length < 0 {
				return 0, nil, false, errBadReply
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			if bytes.EqualFold(v, []byte("close")) {
				keep = false
			} else if bytes.EqualFold(v, []byte("keep-alive")) {
				keep = true
			}
		}
	}
	switch {
	case chunked:
		body, err = c.readChunked()
		return status, body, keep, err
	case length >= 0:
		if err := c.need(length); err != nil {
			return 0, nil, false, err
		}
		body = c.buf[c.r : c.r+length]
		c.r += length
		return status, body, keep, nil
	}
	return 0, nil, false, fmt.Errorf("%w: no Content-Length", errBadReply)
}

func (c *client) readChunked() ([]byte, error) {
	c.chunk = c.chunk[:0]
	for {
		var i int
		for {
			if i = bytes.Index(c.buf[c.r:c.w], []byte("\r\n")); i >= 0 {
				break
			}
			if err := c.fill(); err != nil {
				return nil, err
			}
		}
		sz := c.buf[c.r : c.r+i]
		if j := bytes.IndexByte(sz, ';'); j >= 0 {
			sz = sz[:j]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(sz)), 16, 32)
		if err != nil || n < 0 {
			return nil, errBadReply
		}
		c.r += i + 2
		if err := c.need(int(n) + 2); err != nil {
			return nil, err
		}
		c.chunk = append(c.chunk, c.buf[c.r:c.r+int(n)]...)
		c.r += int(n) + 2
		if n == 0 {
			return c.chunk, nil // (trailers are not used by our servers)
		}
	}
}
