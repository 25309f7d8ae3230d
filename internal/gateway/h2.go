package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/spry-dev/spry/internal/mono"
)

// The HTTP/2 adapter (h2c with prior knowledge or by upgrade, h2 over TLS).
// x/net/http2's Framer and hpack own the protocol's encoding; this file is
// the server's state machine and its end in the admission path: a stream's
// HEADERS become a Request (Begin: route, method, admission, buffer,
// metadata), its DATA frames are copied straight into the pool buffer, its
// END_STREAM sends it (Admission.Send), and the reply comes back to the
// connection as the stream's Replier. gRPC calls are such streams (grpc.go).
//
// One goroutine reads frames; one writes replies (the app's receive thread
// only queues them, so it never blocks on a slow client or its flow-control
// window). Bounds: at most h2MaxStreams streams per connection hold an
// entry of an in-flight table — a stream the client reset counts until the
// chain let go of its buffer — and the reader stops reading while the
// connection is at that bound, so a client that opens streams faster than
// it reads answers is throttled rather than allowed to pin buffers.

const (
	h2MaxStreams    = 100      // SETTINGS_MAX_CONCURRENT_STREAMS, and the bound on active streams
	h2MaxFrame      = 16 << 10 // the largest frame we read and write
	h2MaxHeaderList = 16 << 10 // SETTINGS_MAX_HEADER_LIST_SIZE
	h2ConnWindow    = 1 << 30  // the connection's receive window we grant
	// A client that resets this many streams before their answers, more
	// than half of those it opened, is told to calm down (GOAWAY).
	h2MaxResets = 1000
)

var h2Preface = []byte(http2.ClientPreface)

// h2conn is one HTTP/2 connection.
type h2conn struct {
	g      *Gateway
	nc     net.Conn
	fr     *http2.Framer
	bw     *bufio.Writer
	wmu    sync.Mutex // the framer's writing side, bw, henc
	henc   *hpack.Encoder
	hbuf   bytes.Buffer
	rd     *h2reader
	window int64 // the largest body a stream may send (+1: more is too large)

	mu        sync.Mutex // everything below
	streams   map[uint32]*h2stream
	lastID    uint32 // the highest stream id the client opened
	sendConn  int64  // our send window on the connection
	initSend  int64  // the client's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame  int    // the client's SETTINGS_MAX_FRAME_SIZE
	queue     []*h2stream
	wake      chan struct{} // the writer has something to do
	done      chan struct{} // closed when the connection is
	room      chan struct{} // a stream ended: the reader may go on
	goingAway bool
	closed    bool
	opened    int // streams opened, and reset before their answer
	resets    int
	recvUnack int64 // connection-window bytes received but not given back yet
}

// h2stream is one request/response exchange.
//
// The reader goroutine alone uses the request side (x, admitted, n, req,
// grpc's request state); the writer alone the response's progress (off,
// wroteHdr). ended, reset, pending, rep and hasRep are under h2conn.mu. A
// stream leaves the connection's table once the client's side is over
// (ended) and no answer is still to come or to be written (!pending).
type h2stream struct {
	id       uint32
	x        Admission
	admitted bool  // x holds an entry and buffer not yet sent
	n        int   // body bytes in the buffer
	length   int64 // content-length, -1 when absent
	head     bool  // HEAD: no body in the response
	ctype    []byte
	grpc     *grpcCall // a gRPC call, or nil
	req      Request
	hdrs     h2headers

	ended   bool  // the client's side is closed (END_STREAM or reset)
	reset   bool  // reset (by either side): its answer is dropped
	pending bool  // an answer is to come or to be written
	send    int64 // our send window on the stream
	rep     Reply // the chain's answer, when hasRep
	hasRep  bool
	err     *Error // the gateway's own answer (a refusal), else nil
	msg     []byte // its body

	off      int // response bytes written
	wroteHdr bool
}

// h2headers is a stream's regular header fields (Headers).
type h2headers []hpack.HeaderField

func (h h2headers) Header(name string) []byte {
	for i := range h {
		if len(h[i].Name) == len(name) && equalFoldString(h[i].Name, name) {
			return []byte(h[i].Value)
		}
	}
	return nil
}
func (h h2headers) NumHeaders() int { return len(h) }
func (h h2headers) HeaderAt(i int) (name, value []byte) {
	return []byte(h[i].Name), []byte(h[i].Value)
}

func equalFoldString(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// h2reader reads a connection's bytes, those already read first.
type h2reader struct {
	pre []byte
	nc  net.Conn
}

func (r *h2reader) Read(p []byte) (int, error) {
	if len(r.pre) > 0 {
		n := copy(p, r.pre)
		r.pre = r.pre[n:]
		return n, nil
	}
	return r.nc.Read(p)
}

// newH2 makes an HTTP/2 connection over nc; start sends our preface and
// starts its writer, serve reads the client's frames.
func (g *Gateway) newH2(nc net.Conn) *h2conn {
	c := &h2conn{
		g: g, nc: nc, streams: map[uint32]*h2stream{}, sendConn: 65535, initSend: 65535,
		maxFrame: 16384, wake: make(chan struct{}, 1), done: make(chan struct{}), room: make(chan struct{}, 1),
	}
	c.window = int64(g.maxBody()) + grpcPrefix + 1
	c.rd = &h2reader{nc: nc}
	c.bw = bufio.NewWriterSize(nc, 32<<10)
	c.fr = http2.NewFramer(c.bw, c.rd)
	c.fr.SetMaxReadFrameSize(h2MaxFrame)
	c.fr.MaxHeaderListSize = h2MaxHeaderList
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// start sends our preface: SETTINGS, and the connection window opened
// wide (a stream's body is bounded by its stream window, one pool
// buffer). It reports false when the connection is gone.
func (c *h2conn) start() bool {
	c.wmu.Lock()
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(min(c.window, 1<<31-1))},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: h2MaxFrame},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: h2MaxHeaderList},
	)
	c.fr.WriteWindowUpdate(0, h2ConnWindow-65535)
	c.nc.SetWriteDeadline(time.Now().Add(c.g.header))
	err := c.bw.Flush()
	c.wmu.Unlock()
	if err != nil {
		c.close()
		return false
	}
	go c.writeLoop()
	return true
}

// serve reads the client's preface (pre: bytes of the connection already
// read), then its frames until the connection ends.
func (c *h2conn) serve(pre []byte) {
	c.rd.pre = pre
	c.nc.SetReadDeadline(time.Now().Add(c.g.header))
	var p [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.rd, p[:]); err != nil || !bytes.Equal(p[:], h2Preface) {
		c.close()
		return
	}
	c.readLoop()
}

func (c *h2conn) newStream(id uint32) *h2stream {
	return &h2stream{id: id, length: -1, send: c.initSend}
}

// setEnded marks the client's side of st over.
func (c *h2conn) setEnded(st *h2stream) {
	c.mu.Lock()
	st.ended = true
	c.mu.Unlock()
	c.maybeDone(st)
}

// readLoop reads frames until the connection ends.
func (c *h2conn) readLoop() {
	defer c.close()
	for {
		c.mu.Lock()
		idle := len(c.streams) == 0
		away := c.goingAway
		c.mu.Unlock()
		if idle && away {
			return
		}
		if idle {
			c.nc.SetReadDeadline(time.Now().Add(c.g.idle))
		} else {
			c.nc.SetReadDeadline(time.Now().Add(c.g.header))
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			var ce http2.ConnectionError
			var se http2.StreamError
			switch {
			case errors.As(err, &se):
				c.streamError(se.StreamID, se.Code)
				continue
			case errors.As(err, &ce):
				c.goAway(http2.ErrCode(ce))
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.goAway(http2.ErrCodeFrameSize)
			}
			return
		}
		if code := c.frame(f); code != http2.ErrCodeNo {
			c.goAway(code)
			return
		}
	}
}

// frame handles one frame; a code other than ErrCodeNo is a connection
// error.
func (c *h2conn) frame(f http2.Frame) http2.ErrCode {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return http2.ErrCodeNo
		}
		if err := f.ForeachSetting(c.setting); err != nil {
			if ce, ok := err.(http2.ConnectionError); ok {
				return http2.ErrCode(ce)
			}
			return http2.ErrCodeProtocol
		}
		c.wmu.Lock()
		c.fr.WriteSettingsAck()
		c.bw.Flush()
		c.wmu.Unlock()
	case *http2.MetaHeadersFrame:
		return c.headers(f)
	case *http2.DataFrame:
		return c.data(f)
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		if f.StreamID == 0 {
			c.sendConn += int64(f.Increment)
			if c.sendConn > 1<<31-1 {
				c.mu.Unlock()
				return http2.ErrCodeFlowControl
			}
		} else if st := c.streams[f.StreamID]; st != nil {
			st.send += int64(f.Increment)
			if st.send > 1<<31-1 {
				c.mu.Unlock()
				c.streamError(f.StreamID, http2.ErrCodeFlowControl)
				return http2.ErrCodeNo
			}
		}
		c.mu.Unlock()
		c.poke()
	case *http2.PingFrame:
		if !f.IsAck() {
			c.wmu.Lock()
			c.fr.WritePing(true, f.Data)
			c.bw.Flush()
			c.wmu.Unlock()
		}
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		if f.StreamID > c.lastID {
			c.mu.Unlock()
			return http2.ErrCodeProtocol // idle stream
		}
		st := c.streams[f.StreamID]
		c.mu.Unlock()
		if st != nil {
			c.clientReset(st)
		}
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goingAway = true
		c.mu.Unlock()
	case *http2.PushPromiseFrame:
		return http2.ErrCodeProtocol // clients do not push
	case *http2.PriorityFrame:
		if f.StreamID == f.PriorityParam.StreamDep {
			c.streamError(f.StreamID, http2.ErrCodeProtocol)
		}
	}
	return http2.ErrCodeNo
}

func (c *h2conn) setting(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s.ID {
	case http2.SettingInitialWindowSize:
		delta := int64(s.Val) - c.initSend
		c.initSend = int64(s.Val)
		for _, st := range c.streams {
			st.send += delta
			if st.send > 1<<31-1 {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
		}
		if delta > 0 {
			c.poke()
		}
	case http2.SettingMaxFrameSize:
		c.maxFrame = int(s.Val)
	}
	return nil
}

// headers handles a HEADERS frame (with its CONTINUATIONs): a new stream,
// or trailers that end one.
func (c *h2conn) headers(f *http2.MetaHeadersFrame) http2.ErrCode {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ErrCodeProtocol
	}
	c.mu.Lock()
	if id <= c.lastID {
		st := c.streams[id]
		c.mu.Unlock()
		if st == nil {
			// Not a stream the client has open, nor a new one (new ids
			// grow): RFC 9113 5.1.1.
			return http2.ErrCodeProtocol
		}
		if st.ended {
			c.streamError(id, http2.ErrCodeStreamClosed)
			return http2.ErrCodeNo
		}
		// Trailers: they must end the stream; their fields are dropped.
		if !f.StreamEnded() {
			c.streamError(id, http2.ErrCodeProtocol)
			return http2.ErrCodeNo
		}
		c.endOfBody(st)
		return http2.ErrCodeNo
	}
	c.lastID = id
	if c.goingAway {
		c.mu.Unlock()
		c.streamError(id, http2.ErrCodeRefusedStream)
		return http2.ErrCodeNo
	}
	c.opened++
	c.mu.Unlock()
	// At the bound, stop reading until a stream ends: the client waits
	// for its answers before it may open more. One that reads none for
	// the header timeout loses the connection.
	for give := time.Now().Add(c.g.header); !c.waitRoom(); {
		if time.Now().After(give) {
			return http2.ErrCodeEnhanceYourCalm
		}
	}
	st := c.newStream(id)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return http2.ErrCodeNo
	}
	st.send = c.initSend
	c.streams[id] = st
	c.mu.Unlock()

	if f.Truncated {
		c.refuse(st, errHeaderTooLarge, f.StreamEnded())
		return http2.ErrCodeNo
	}
	method, path, scheme := f.PseudoValue("method"), f.PseudoValue("path"), f.PseudoValue("scheme")
	if method == "" || scheme == "" || path == "" || method == "CONNECT" {
		c.streamError(id, http2.ErrCodeProtocol)
		return http2.ErrCodeNo
	}
	st.hdrs = f.RegularFields()
	for _, hf := range st.hdrs {
		switch hf.Name {
		case "content-length":
			n, ok := parseLength([]byte(hf.Value))
			if !ok || st.length >= 0 && st.length != n {
				c.streamError(id, http2.ErrCodeProtocol)
				return http2.ErrCodeNo
			}
			st.length = n
		case "content-type":
			st.ctype = []byte(hf.Value)
		case "te":
			if hf.Value != "trailers" {
				c.streamError(id, http2.ErrCodeProtocol)
				return http2.ErrCodeNo
			}
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			// Connection-specific fields make a request malformed in
			// HTTP/2 (RFC 9113 8.2.2).
			c.streamError(id, http2.ErrCodeProtocol)
			return http2.ErrCodeNo
		}
	}
	if f.StreamEnded() && st.length > 0 {
		c.streamError(id, http2.ErrCodeProtocol)
		return http2.ErrCodeNo
	}
	target := []byte(path)
	if target[0] != '/' {
		c.refuse(st, errBadTarget, f.StreamEnded())
		return http2.ErrCodeNo
	}
	st.req = Request{Method: []byte(method), Length: st.length, Headers: st.hdrs, Reply: c, Tag: uint64(id), Began: mono.Now()}
	st.req.Path, st.req.Query = target, nil
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		st.req.Path, st.req.Query = target[:i], target[i+1:]
	}
	st.head = method == "HEAD"
	if isGRPC(st.ctype) {
		st.grpc = &grpcCall{}
		if err := st.grpc.start(&st.req, st.hdrs); err != nil {
			c.refuse(st, err, f.StreamEnded())
			return http2.ErrCodeNo
		}
	}
	x, err := c.g.Begin(&st.req)
	if err != nil {
		c.refuse(st, err, f.StreamEnded())
		return http2.ErrCodeNo
	}
	st.x, st.admitted = x, true
	if f.StreamEnded() {
		c.endOfBody(st)
	}
	return http2.ErrCodeNo
}

// waitRoom reports whether the connection has room for another active
// stream, after waiting a while for one to end.
func (c *h2conn) waitRoom() bool {
	c.mu.Lock()
	ok := len(c.streams) < h2MaxStreams || c.closed
	c.mu.Unlock()
	if ok {
		return true
	}
	select {
	case <-c.room:
	case <-time.After(100 * time.Millisecond):
	}
	return false
}

// data handles a DATA frame: its payload goes straight into the stream's
// pool buffer.
func (c *h2conn) data(f *http2.DataFrame) http2.ErrCode {
	id := f.StreamID
	n := int64(f.Length) // padding included: it counts against the windows
	c.mu.Lock()
	st := c.streams[id]
	if id > c.lastID {
		c.mu.Unlock()
		return http2.ErrCodeProtocol
	}
	c.recvUnack += n
	give := c.recvUnack
	if give < h2ConnWindow/4 {
		give = 0
	} else {
		c.recvUnack = 0
	}
	c.mu.Unlock()
	if give > 0 {
		c.wmu.Lock()
		c.fr.WriteWindowUpdate(0, uint32(give))
		c.bw.Flush()
		c.wmu.Unlock()
	}
	if st == nil {
		c.streamError(id, http2.ErrCodeStreamClosed)
		return http2.ErrCodeNo
	}
	c.mu.Lock()
	ended := st.ended
	c.mu.Unlock()
	if ended {
		c.streamError(id, http2.ErrCodeStreamClosed)
		return http2.ErrCodeNo
	}
	if st.admitted {
		p := f.Data()
		if st.grpc != nil {
			var err *Error
			if p, err = st.grpc.body(p); err != nil {
				st.x.Cancel()
				st.admitted = false
				c.refuse(st, err, f.StreamEnded())
				return http2.ErrCodeNo
			}
		}
		if st.length >= 0 && st.grpc == nil && int64(st.n+len(p)) > st.length {
			// More DATA than its content-length: malformed (RFC 9113
			// 8.1.1).
			c.streamError(id, http2.ErrCodeProtocol)
			return http2.ErrCodeNo
		}
		dst := st.x.Body()
		if st.n+len(p) > len(dst) {
			st.x.Cancel()
			st.admitted = false
			st.x.ch.count(ErrTooLarge.Status, st.req.Began)
			c.refuse(st, ErrTooLarge, f.StreamEnded())
			return http2.ErrCodeNo
		}
		st.n += copy(dst[st.n:], p)
	}
	if f.StreamEnded() {
		c.endOfBody(st)
	}
	return http2.ErrCodeNo
}

// endOfBody: the client's side of st is done; an admitted request goes into
// its chain.
func (c *h2conn) endOfBody(st *h2stream) {
	if !st.admitted {
		c.setEnded(st)
		return
	}
	st.admitted = false
	var err *Error
	switch {
	case st.length >= 0 && int64(st.n) != st.length && st.grpc == nil:
		err = errShortBody
	case st.grpc != nil:
		err = st.grpc.end()
	}
	if err != nil {
		st.x.Cancel()
		st.x.ch.count(err.Status, st.req.Began)
		c.refuse(st, err, true)
		return
	}
	c.mu.Lock()
	st.ended, st.pending = true, true
	c.mu.Unlock()
	st.x.Send(st.n, st.ctype)
}

// clientReset handles the client's RST_STREAM for st.
func (c *h2conn) clientReset(st *h2stream) {
	c.mu.Lock()
	if !st.reset {
		c.resets++
	}
	st.reset, st.ended = true, true
	calm := c.resets > h2MaxResets && 2*c.resets > c.opened
	c.mu.Unlock()
	if st.admitted {
		st.admitted = false
		st.x.Cancel()
	}
	c.maybeDone(st)
	if calm {
		c.goAway(http2.ErrCodeEnhanceYourCalm)
		c.nc.Close()
	}
}

// streamError resets stream id with code (a stream error of the client's).
func (c *h2conn) streamError(id uint32, code http2.ErrCode) {
	c.wmu.Lock()
	c.fr.WriteRSTStream(id, code)
	c.bw.Flush()
	c.wmu.Unlock()
	c.mu.Lock()
	st := c.streams[id]
	if st != nil {
		st.reset, st.ended = true, true
	}
	c.mu.Unlock()
	if st == nil {
		return
	}
	if st.admitted {
		st.admitted = false
		st.x.Cancel()
	}
	c.maybeDone(st)
}

// refuse answers st with the gateway's own error: the stream is not in a
// chain. ended: the client's side is over.
func (c *h2conn) refuse(st *h2stream, err *Error, ended bool) {
	if err == ErrSilent {
		c.streamError(st.id, http2.ErrCodeCancel)
		return
	}
	c.mu.Lock()
	st.err = err
	st.msg = st.req.AppendMessage(st.msg[:0], err)
	st.ended = st.ended || ended
	st.pending = true
	c.mu.Unlock()
	c.enqueue(st)
}

// Reply answers the stream named by r's tag (see Replier): queued for the
// writer, never written here.
func (c *h2conn) Reply(r Reply) {
	c.mu.Lock()
	st := c.streams[uint32(r.Tag())]
	if st == nil || st.reset || c.closed {
		if st != nil {
			st.pending = false
		}
		c.mu.Unlock()
		r.Done()
		if st != nil {
			c.maybeDone(st)
		}
		return
	}
	st.rep, st.hasRep = r, true
	c.queue = append(c.queue, st)
	c.mu.Unlock()
	c.poke()
}

func (c *h2conn) enqueue(st *h2stream) {
	c.mu.Lock()
	if c.closed {
		st.pending = false
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, st)
	c.mu.Unlock()
	c.poke()
}

func (c *h2conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// maybeDone removes st once nothing of it is left.
func (c *h2conn) maybeDone(st *h2stream) {
	c.mu.Lock()
	if st.ended && !st.pending && c.streams[st.id] == st {
		delete(c.streams, st.id)
		select {
		case c.room <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
}

// writeLoop writes queued answers, as the flow-control windows allow.
func (c *h2conn) writeLoop() {
	var work, blocked []*h2stream
	for {
		select {
		case <-c.wake:
		case <-c.done:
			c.mu.Lock()
			rest := append(blocked, c.queue...)
			c.queue = nil
			for _, st := range rest {
				if st.hasRep {
					st.hasRep = false
					st.rep.Done()
				}
			}
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		work = append(append(work[:0], blocked...), c.queue...)
		c.queue = c.queue[:0]
		c.mu.Unlock()
		blocked = blocked[:0]
		c.wmu.Lock()
		for _, st := range work {
			if !c.write(st) {
				blocked = append(blocked, st)
			}
		}
		c.nc.SetWriteDeadline(time.Now().Add(c.g.header))
		err := c.bw.Flush()
		c.wmu.Unlock()
		if err != nil {
			c.nc.Close() // the reader ends the connection
		}
		for _, st := range work {
			c.maybeDone(st)
		}
	}
}

// write writes what it can of st's answer and reports whether it is all
// out (or dropped). The caller holds wmu.
func (c *h2conn) write(st *h2stream) bool {
	c.mu.Lock()
	reset, gw := st.reset, st.err
	c.mu.Unlock()
	if reset {
		c.finish(st, false)
		return true
	}
	var status int
	var ctype, body []byte
	var gerr *Error
	if gw != nil {
		status, ctype, body, gerr = gw.Status, textPlain, st.msg, gw
	} else {
		r := &st.rep
		status, ctype, body, gerr = r.Status(), r.ContentType(), r.Body(), r.Err()
	}
	if st.grpc != nil {
		return c.writeGRPC(st, status, body, gerr)
	}
	if st.head {
		body = nil
	}
	if !st.wroteHdr {
		c.hbuf.Reset()
		c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
		c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: string(ctype)})
		if !Bodyless(status) {
			c.henc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
		}
		if gerr != nil && gerr.Retry {
			c.henc.WriteField(hpack.HeaderField{Name: "retry-after", Value: "1"})
		}
		if gerr == ErrMethod && st.req.Routed != nil {
			c.henc.WriteField(hpack.HeaderField{Name: "allow", Value: string(st.req.Routed.allow)})
		}
		if gerr != nil && gerr.Status == 401 && st.req.Routed != nil && st.req.Routed.Auth != nil {
			c.henc.WriteField(hpack.HeaderField{Name: "www-authenticate", Value: st.req.Routed.Auth.Challenge})
		}
		if gw == nil {
			c.respHeaders(&st.rep)
		}
		c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: c.hbuf.Bytes(),
			EndStream: len(body) == 0, EndHeaders: true})
		st.wroteHdr = true
	}
	if !c.writeData(st, body, true) {
		return false
	}
	c.finish(st, true)
	return true
}

// respHeaders encodes the chain's response headers (res.SetHeader), their
// names in lower case as HTTP/2 wants them. The caller holds wmu.
func (c *h2conn) respHeaders(r *Reply) {
	for name, value, pos, ok := r.NextHeader(0); ok; name, value, pos, ok = r.NextHeader(pos) {
		c.henc.WriteField(hpack.HeaderField{Name: strings.ToLower(string(name)), Value: string(value)})
	}
}

// writeData writes body[st.off:] as the windows allow; it reports whether
// all of it is out. end: the last DATA frame ends the stream.
func (c *h2conn) writeData(st *h2stream, body []byte, end bool) bool {
	for st.off < len(body) {
		c.mu.Lock()
		n := int64(min(len(body)-st.off, c.maxFrame, h2MaxFrame))
		n = min(n, c.sendConn, st.send)
		if n <= 0 {
			c.mu.Unlock()
			return false
		}
		c.sendConn -= n
		st.send -= n
		c.mu.Unlock()
		last := st.off+int(n) == len(body)
		c.fr.WriteData(st.id, end && last, body[st.off:st.off+int(n)])
		st.off += int(n)
	}
	return true
}

// finish ends st's answer (written, or dropped): the buffer and the entry
// go back. The caller holds wmu.
func (c *h2conn) finish(st *h2stream, written bool) {
	c.mu.Lock()
	r, had := st.rep, st.hasRep
	st.hasRep, st.pending, st.err = false, false, nil
	ended := st.ended
	st.ended = true
	c.mu.Unlock()
	if had {
		r.Done()
	}
	if written && !ended {
		// Answered before the client finished sending (a refusal):
		// the rest of its body is not wanted.
		c.fr.WriteRSTStream(st.id, http2.ErrCodeNo)
	}
}

// goAway tells the client the connection ends, with code.
func (c *h2conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	last := c.lastID
	c.goingAway = true
	c.mu.Unlock()
	c.wmu.Lock()
	c.fr.WriteGoAway(last, code, nil)
	c.bw.Flush()
	c.wmu.Unlock()
}

// shutdown starts a graceful close: no new streams, the open ones finish.
func (c *h2conn) shutdown() {
	c.goAway(http2.ErrCodeNo)
	c.mu.Lock()
	idle := len(c.streams) == 0
	c.mu.Unlock()
	if idle {
		c.nc.Close()
	}
}

// idle reports whether no stream is active.
func (c *h2conn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams) == 0
}

// close ends the connection: streams still receiving their bodies are
// cancelled; answers still to come are dropped as they arrive. It runs on
// the reader goroutine.
func (c *h2conn) close() {
	c.nc.Close()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	var open []*h2stream
	for _, st := range c.streams {
		open = append(open, st)
	}
	c.mu.Unlock()
	for _, st := range open {
		if st.admitted {
			st.admitted = false
			st.x.Cancel()
		}
	}
	close(c.done)
}
