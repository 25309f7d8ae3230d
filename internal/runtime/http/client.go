package http

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/sdk"
)

// client is the adapter's side of its connections to the program: at most
// one per handler running at once, kept alive between requests.
type client struct {
	name  string // the function, for messages
	port  int
	host  string
	idle  chan *conn
	reuse bool // tests: false dials per request
}

func newClient(name string, port, conns int) *client {
	return &client{name: name, port: port, host: "127.0.0.1:" + strconv.Itoa(port), idle: make(chan *conn, conns), reuse: true}
}

// Sizes of a connection's buffers.
const (
	headRoom = 16 << 10 // the response head; the request head is built in one of these too
	maxCtype = 127
)

// conn is one keep-alive connection to the program, over a blocking
// socket read and written with plain system calls from the handler's
// thread.
type conn struct {
	fd      int
	wbuf    []byte // the request head
	rbuf    [headRoom]byte
	r, w    int // unread bytes of the response are rbuf[r:w]
	ctype   [maxCtype]byte
	nctype  int
	hdrs    []byte // the response's headers for the client: name NUL value NUL, repeated
	used    bool   // served a request before: a failure may be a stale keep-alive
	partial bool   // the response being read took a read already
}

// Errors of the exchange with the program; the step answers 502 with them.
var (
	errClosed   = errors.New("the function closed the connection without a complete answer (did its program crash?)")
	errHead     = fmt.Errorf("the function's response head is larger than %d bytes", headRoom)
	errResponse = errors.New("the function's response is not valid HTTP/1.1")
)

func (c *client) get() (*conn, error) {
	select {
	case cn := <-c.idle:
		return cn, nil
	default:
	}
	return c.dial()
}

func (c *client) put(cn *conn) {
	if !c.reuse {
		cn.close()
		return
	}
	select {
	case c.idle <- cn:
	default:
		cn.close()
	}
}

func (c *client) dial() (*conn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	sa := &unix.SockaddrInet4{Port: c.port, Addr: [4]byte{127, 0, 0, 1}}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect to the function on %s: %w", c.host, err)
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return &conn{fd: fd, wbuf: make([]byte, 0, 1024)}, nil
}

func (cn *conn) close() {
	if cn.fd >= 0 {
		unix.Close(cn.fd)
		cn.fd = -1
	}
}

// handle is the step: one HTTP exchange with the program per descriptor.
func (c *client) handle(req *sdk.Request, res *sdk.Response) error {
	for try := 0; ; try++ {
		cn, err := c.get()
		if err != nil {
			return c.fail(err)
		}
		status, n, keep, err := c.exchange(cn, req, res)
		if err != nil {
			reused := cn.used
			cn.close()
			// A keep-alive connection the program closed meanwhile fails
			// before any of the answer came: send once more on a new one.
			if reused && try == 0 && errors.Is(err, errClosed) {
				continue
			}
			return c.fail(err)
		}
		cn.used = true
		res.SetLen(n)
		if cn.nctype > 0 {
			res.SetContentType(unsafe.String(&cn.ctype[0], cn.nctype))
		}
		// The function's other response headers go to the client, as a
		// native step's SetHeader would send them.
		for h := cn.hdrs; len(h) > 0; {
			k, rest, _ := bytes.Cut(h, nul)
			v, rest, _ := bytes.Cut(rest, nul)
			res.AddHeader(unsafe.String(unsafe.SliceData(k), len(k)), unsafe.String(unsafe.SliceData(v), len(v)))
			h = rest
		}
		res.SetStatus(status)
		if keep {
			c.put(cn)
		} else {
			cn.close()
		}
		return nil
	}
}

// fail says which function failed how (the body of the 502).
func (c *client) fail(err error) error {
	var e *sdk.Error
	if errors.As(err, &e) {
		return err
	}
	return fmt.Errorf("spry: http function %s: %w", c.name, err)
}

// exchange sends the request and reads the response into the pool buffer.
func (c *client) exchange(cn *conn, req *sdk.Request, res *sdk.Response) (status, n int, keep bool, err error) {
	body := req.Payload()
	method := req.Method()
	if method == "" {
		method = "POST"
	}
	h := cn.wbuf[:0]
	h = append(h, method...)
	h = append(h, ' ')
	if p := req.Path(); p != "" {
		h = append(h, p...)
	} else {
		h = append(h, '/')
	}
	if q := req.Query(); q != "" {
		h = append(h, '?')
		h = append(h, q...)
	}
	h = append(h, " HTTP/1.1\r\nHost: "...)
	h = append(h, c.host...)
	h = append(h, "\r\nUser-Agent: spry\r\n"...)
	if len(body) > 0 || method == "POST" || method == "PUT" || method == "PATCH" {
		h = append(h, "Content-Length: "...)
		h = strconv.AppendInt(h, int64(len(body)), 10)
		h = append(h, "\r\n"...)
	}
	if ct := req.ContentType(); ct != "" {
		h = append(h, "Content-Type: "...)
		h = append(h, ct...)
		h = append(h, "\r\n"...)
	}
	for i := range req.NumHeaders() {
		k, v := req.HeaderAt(i)
		if isHopHeader(k) {
			continue
		}
		h = append(h, k...)
		h = append(h, ": "...)
		h = append(h, v...)
		h = append(h, "\r\n"...)
	}
	h = append(h, "\r\n"...)
	cn.wbuf = h
	if err := cn.writev(h, body); err != nil {
		return 0, 0, false, err
	}
	return cn.readResponse(res.Buffer(), method == "HEAD")
}

// isHopHeader reports headers the adapter writes itself.
func isHopHeader(k string) bool {
	for _, h := range [...]string{"Host", "Content-Length", "Content-Type", "Transfer-Encoding", "Connection", "Expect", "Upgrade"} {
		if len(k) == len(h) && bytes.EqualFold([]byte(k), []byte(h)) {
			return true
		}
	}
	return false
}

// writev writes head and body, all of both.
func (cn *conn) writev(head, body []byte) error {
	var iov [2]unix.Iovec
	for len(head)+len(body) > 0 {
		n := 0
		if len(head) > 0 {
			iov[n] = unix.Iovec{Base: &head[0]}
			iov[n].SetLen(len(head))
			n++
		}
		if len(body) > 0 {
			iov[n] = unix.Iovec{Base: &body[0]}
			iov[n].SetLen(len(body))
			n++
		}
		m, _, errno := syscall.Syscall(unix.SYS_WRITEV, uintptr(cn.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EPIPE, unix.ECONNRESET:
			return errClosed
		default:
			return fmt.Errorf("send to the function: %w", errno)
		}
		w := int(m)
		k := min(w, len(head))
		head, w = head[k:], w-k
		body = body[w:]
	}
	return nil
}

// read reads into p, retrying on EINTR; 0 bytes is end of stream.
func (cn *conn) read(p []byte) (int, error) {
	for {
		n, err := unix.Read(cn.fd, p)
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.ECONNRESET:
			return 0, errClosed
		}
		return 0, fmt.Errorf("read from the function: %w", err)
	}
}

// more reads the rest of a response that did not come whole. Before it
// reads, it asks for quick ACKs: a server that writes its response head
// and body in two writes with Nagle's algorithm on (Python's http.server
// does) would otherwise wait for the delayed ACK of the head, 40 ms, before
// it sends the body; turning quick ACKs on sends an ACK that is due at
// once. A response that comes in one piece (most do) pays nothing for it.
func (cn *conn) more(p []byte) (int, error) {
	unix.SetsockoptInt(cn.fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	return cn.read(p)
}

// fill reads more of the response into rbuf, compacting it first.
func (cn *conn) fill() error {
	if cn.r > 0 {
		cn.w = copy(cn.rbuf[:], cn.rbuf[cn.r:cn.w])
		cn.r = 0
	}
	if cn.w == len(cn.rbuf) {
		return errHead
	}
	read := cn.read
	if cn.partial {
		read = cn.more
	}
	n, err := read(cn.rbuf[cn.w:])
	if err != nil {
		return err
	}
	if n == 0 {
		return errClosed
	}
	cn.w += n
	cn.partial = true
	return nil
}

// line returns the next CRLF-terminated line of the response (without
// the CRLF), reading as needed. It is valid until the next fill.
func (cn *conn) line() ([]byte, error) {
	for {
		if i := bytes.Index(cn.rbuf[cn.r:cn.w], crlf); i >= 0 {
			l := cn.rbuf[cn.r : cn.r+i]
			cn.r += i + 2
			return l, nil
		}
		if err := cn.fill(); err != nil {
			return nil, err
		}
	}
}

var (
	crlf = []byte("\r\n")
	nul  = []byte{0}
)

// dropHeaders are the response headers the adapter does not pass on: the
// framing of its connection to the function (the gateway frames the
// client's), and the function server's own Date and Server.
var dropHeaders = [...]string{"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade",
	"Trailer", "TE", "Date", "Proxy-Connection", "Server", "Content-Type"}

func dropHeader(k []byte) bool {
	for _, h := range dropHeaders {
		if len(k) == len(h) && bytes.EqualFold(k, []byte(h)) {
			return true
		}
	}
	return false
}

// readResponse reads one response: status and content type into cn, the
// body into out. keep says whether the connection may serve another.
func (cn *conn) readResponse(out []byte, head bool) (status, n int, keep bool, err error) {
	cn.partial = false
	for {
		// The whole head must be in rbuf at once (its lines are views).
		for bytes.Index(cn.rbuf[cn.r:cn.w], []byte("\r\n\r\n")) < 0 {
			if err := cn.fill(); err != nil {
				return 0, 0, false, err
			}
		}
		st, err := cn.line()
		if err != nil {
			return 0, 0, false, err
		}
		if len(st) < 12 || !bytes.HasPrefix(st, []byte("HTTP/1.")) || st[8] != ' ' {
			return 0, 0, false, fmt.Errorf("%w: status line %q", errResponse, st[:min(len(st), 64)])
		}
		status, err = strconv.Atoi(string(st[9:12]))
		if err != nil || status < 100 || status > 999 {
			return 0, 0, false, fmt.Errorf("%w: status line %q", errResponse, st[:min(len(st), 64)])
		}
		keep = st[7] == '1'
		length, chunked := -1, false
		cn.nctype = 0
		cn.hdrs = cn.hdrs[:0]
		for {
			l, err := cn.line()
			if err != nil {
				return 0, 0, false, err
			}
			if len(l) == 0 {
				break
			}
			k, v, ok := bytes.Cut(l, []byte(":"))
			if !ok {
				return 0, 0, false, fmt.Errorf("%w: header line %q", errResponse, l[:min(len(l), 64)])
			}
			v = bytes.TrimSpace(v)
			switch {
			case bytes.EqualFold(k, []byte("Content-Length")):
				length, err = strconv.Atoi(string(v))
				if err != nil || length < 0 {
					return 0, 0, false, fmt.Errorf("%w: Content-Length %q", errResponse, v)
				}
			case bytes.EqualFold(k, []byte("Transfer-Encoding")):
				chunked = bytes.EqualFold(v, []byte("chunked"))
			case bytes.EqualFold(k, []byte("Connection")):
				if bytes.EqualFold(v, []byte("close")) {
					keep = false
				} else if bytes.EqualFold(v, []byte("keep-alive")) {
					keep = true
				}
			case bytes.EqualFold(k, []byte("Content-Type")):
				cn.nctype = copy(cn.ctype[:], v)
			}
			if !dropHeader(k) && bytes.IndexByte(k, 0) < 0 && bytes.IndexByte(v, 0) < 0 {
				cn.hdrs = append(append(append(append(cn.hdrs, k...), 0), v...), 0)
			}
		}
		if status < 200 {
			continue // 100 Continue, 103 Early Hints: the answer follows
		}
		switch {
		case head || status == 204 || status == 304:
			n = 0
		case chunked:
			n, err = cn.chunked(out)
		case length >= 0:
			if length > len(out) {
				return 0, 0, false, tooLarge(length, len(out))
			}
			n, err = cn.body(out[:length], true)
		default: // the body ends with the connection
			n, err = cn.body(out, false)
			keep = false
		}
		return status, n, keep && err == nil, err
	}
}

// body reads into out: all of it when full, else until the end of the
// stream (more than out holds is an error).
func (cn *conn) body(out []byte, full bool) (int, error) {
	n := copy(out, cn.rbuf[cn.r:cn.w])
	cn.r += n
	for n < len(out) {
		m, err := cn.more(out[n:])
		if err != nil {
			return n, err
		}
		if m == 0 {
			if full {
				return n, errClosed
			}
			return n, nil
		}
		n += m
	}
	if !full {
		// out is full: the stream must end here.
		var one [1]byte
		if cn.r < cn.w {
			return n, tooLarge(n+cn.w-cn.r, len(out))
		}
		if m, err := cn.more(one[:]); err != nil || m > 0 {
			return n, tooLarge(n+1, len(out))
		}
	}
	return n, nil
}

// chunked reads a chunked body into out.
func (cn *conn) chunked(out []byte) (int, error) {
	n := 0
	for {
		l, err := cn.line()
		if err != nil {
			return n, err
		}
		if i := bytes.IndexByte(l, ';'); i >= 0 {
			l = l[:i]
		}
		size, err := strconv.ParseUint(string(bytes.TrimSpace(l)), 16, 32)
		if err != nil {
			return n, fmt.Errorf("%w: chunk size %q", errResponse, l)
		}
		if size == 0 {
			for { // trailers, up to the empty line
				l, err := cn.line()
				if err != nil {
					return n, err
				}
				if len(l) == 0 {
					return n, nil
				}
			}
		}
		if int(size) > len(out)-n {
			return n, tooLarge(n+int(size), len(out))
		}
		m, err := cn.body(out[n:n+int(size)], true)
		n += m
		if err != nil {
			return n, err
		}
		if l, err := cn.line(); err != nil || len(l) != 0 {
			return n, fmt.Errorf("%w: chunk not followed by CRLF", errResponse)
		}
	}
}

func tooLarge(n, room int) error {
	return sdk.Errorf(502, "spry: the function's response body (%d bytes or more) is larger than a pool buffer (%d bytes; raise pool.bufferSize)", n, room)
}
