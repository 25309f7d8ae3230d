package gateway

import (
	"bytes"

	"github.com/spry-dev/spry/internal/pool"
)

// Limits on what a client may send.
const (
	// MaxHeaderBytes bounds the request line plus headers.
	MaxHeaderBytes = 8 << 10
	// MaxHeaders bounds the number of header fields.
	MaxHeaders = 64
	// maxMethod bounds the method token.
	maxMethod = 16
	// maxChunkLine bounds a chunk-size line (size, extensions).
	maxChunkLine = 256
)

// Error is a request the gateway refuses: the HTTP status (adapters of
// other protocols map it to theirs) and the message the client gets. They
// are built once: refusing allocates nothing.
type Error struct {
	Status int
	Msg    string
	Close  bool // HTTP/1.1: the connection cannot be reused after it
	Retry  bool // the refusal is momentary: suggest a retry (Retry-After)
}

func (e *Error) Error() string { return e.Msg }

var (
	errBadRequestLine  = &Error{Status: 400, Msg: "malformed request line", Close: true}
	errBadMethod       = &Error{Status: 400, Msg: "malformed method", Close: true}
	errBadTarget       = &Error{Status: 400, Msg: "malformed request target", Close: true}
	errBadHeader       = &Error{Status: 400, Msg: "malformed header field", Close: true}
	errObsFold         = &Error{Status: 400, Msg: "folded header lines are not accepted", Close: true}
	errTooManyHeaders  = &Error{Status: 431, Msg: "too many header fields", Close: true}
	errHeaderTooLarge  = &Error{Status: 431, Msg: "request header too large", Close: true}
	errBadLength       = &Error{Status: 400, Msg: "malformed Content-Length", Close: true}
	errTwoLengths      = &Error{Status: 400, Msg: "conflicting Content-Length headers", Close: true}
	errLengthAndChunks = &Error{Status: 400, Msg: "both Content-Length and Transfer-Encoding", Close: true}
	errBadTE           = &Error{Status: 501, Msg: "unsupported Transfer-Encoding (only chunked)", Close: true}
	errTE10            = &Error{Status: 400, Msg: "Transfer-Encoding in an HTTP/1.0 request", Close: true}
	errBadChunk        = &Error{Status: 400, Msg: "malformed chunked body", Close: true}
	errNoHost          = &Error{Status: 400, Msg: "missing Host header", Close: true}
	errTwoHosts        = &Error{Status: 400, Msg: "more than one Host header", Close: true}
	errExpect          = &Error{Status: 417, Msg: "unsupported Expect header (only 100-continue)", Close: true}
	errVersion         = &Error{Status: 505, Msg: "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 are)", Close: true}
	errShortBody       = &Error{Status: 400, Msg: "request body shorter than its Content-Length", Close: true}
)

// header is one field of a request, as slices of the connection's buffer.
type header struct{ name, value []byte }

// request is a parsed request head. Every slice points into the
// connection's read buffer and is valid until the next request is read.
type request struct {
	method, path, query []byte
	minor               int   // HTTP/1.minor
	length              int64 // Content-Length, -1 when absent
	chunked             bool
	close               bool // the client asked to close after this request
	expect              bool // Expect: 100-continue
	ctype               []byte
	hdrs                [MaxHeaders]header
	nh                  int
}

// Header returns the value of field name (ASCII case-insensitive), or nil.
func (r *request) header(name string) []byte {
	for i := range r.nh {
		if pool.EqualFold(r.hdrs[i].name, name) {
			return r.hdrs[i].value
		}
	}
	return nil
}

// headEnd returns the length of the request head at the start of b,
// including the blank line that ends it, or -1 when b holds no full head.
// Empty lines before a request line are tolerated (RFC 9112 2.2) and count
// as part of the head.
func headEnd(b []byte) int {
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		return -1
	}
	return i + 4
}

var crlfcrlf = []byte("\r\n\r\n")

// parseHead parses a request head (as delimited by headEnd) into r.
func parseHead(b []byte, r *request) *Error {
	*r = request{length: -1, hdrs: r.hdrs}
	// Skip empty lines before the request line.
	for len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
		b = b[2:]
	}
	line, rest, ok := cutLine(b)
	if !ok {
		return errBadRequestLine
	}
	if err := r.parseRequestLine(line); err != nil {
		return err
	}
	hosts, keepAlive := 0, false
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return errBadHeader
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errObsFold
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return errBadHeader
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		if !isFieldValue(value) {
			return errBadHeader
		}
		if r.nh == MaxHeaders {
			return errTooManyHeaders
		}
		r.hdrs[r.nh] = header{name, value}
		r.nh++
		switch {
		case pool.EqualFold(name, "content-length"):
			n, ok := parseLength(value)
			if !ok {
				return errBadLength
			}
			if r.length >= 0 && r.length != n {
				return errTwoLengths
			}
			r.length = n
		case pool.EqualFold(name, "transfer-encoding"):
			if r.minor == 0 {
				return errTE10
			}
			if !pool.EqualFold(value, "chunked") {
				return errBadTE
			}
			r.chunked = true
		case pool.EqualFold(name, "connection"):
			r.close = r.close || hasToken(value, "close")
			keepAlive = keepAlive || hasToken(value, "keep-alive")
		case pool.EqualFold(name, "expect"):
			if !pool.EqualFold(value, "100-continue") {
				return errExpect
			}
			r.expect = r.minor == 1
		case pool.EqualFold(name, "host"):
			hosts++
		case pool.EqualFold(name, "content-type"):
			r.ctype = value
		}
	}
	if r.chunked && r.length >= 0 {
		return errLengthAndChunks
	}
	switch {
	case r.minor == 1 && hosts == 0:
		return errNoHost
	case hosts > 1:
		return errTwoHosts
	case r.minor == 0 && !keepAlive:
		r.close = true // HTTP/1.0 closes unless it asked for keep-alive
	}
	return nil
}

// parseRequestLine parses "METHOD SP target SP HTTP/1.x".
func (r *request) parseRequestLine(line []byte) *Error {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return errBadRequestLine
	}
	r.method = line[:sp]
	if len(r.method) > maxMethod || !isToken(r.method) {
		return errBadMethod
	}
	line = line[sp+1:]
	sp = bytes.LastIndexByte(line, ' ')
	if sp <= 0 {
		return errBadRequestLine
	}
	target, proto := line[:sp], line[sp+1:]
	switch {
	case string(proto) == "HTTP/1.1":
		r.minor = 1
	case string(proto) == "HTTP/1.0":
		r.minor = 0
	case len(proto) == 8 && string(proto[:5]) == "HTTP/" && proto[6] == '.' &&
		isDigit(proto[5]) && isDigit(proto[7]):
		return errVersion
	default:
		return errBadRequestLine
	}
	// absolute-form (RFC 9112 3.2.2): keep the path, drop scheme and host.
	if len(target) > 0 && target[0] != '/' {
		i := bytes.Index(target, []byte("://"))
		if i <= 0 {
			return errBadTarget
		}
		rest := target[i+3:]
		j := bytes.IndexByte(rest, '/')
		if j < 0 {
			target = slash
		} else {
			target = rest[j:]
		}
	}
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return errBadTarget
		}
	}
	if i := bytes.IndexByte(target, '#'); i >= 0 {
		return errBadTarget // a fragment is never sent (RFC 9110 4.2.4)
	}
	r.path, r.query = target, nil
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		r.path, r.query = target[:i], target[i+1:]
	}
	return nil
}

var slash = []byte("/")

// cutLine splits b at the first CRLF.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.Index(b, crlf)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+2:], true
}

var crlf = []byte("\r\n")

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseLength parses a Content-Length value: digits only, at most 2^40.
func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 13 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, n <= 1<<40
}

// parseChunkSize parses a chunk-size line (hex size, optional extensions).
func parseChunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = trimOWS(line)
	if len(line) == 0 || len(line) > 10 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(v)
	}
	return n, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// tokenChars marks the characters of an HTTP token (RFC 9110 5.6.2).
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// isFieldValue reports whether b is a valid field value: visible
// characters, spaces, tabs and obs-text; no other control characters.
func isFieldValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v contains token tok
// (case-insensitive).
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var item []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			item, v = v, nil
		}
		if pool.EqualFold(trimOWS(item), tok) {
			return true
		}
	}
	return false
}
