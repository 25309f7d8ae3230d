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

// httpError is a request the gateway refuses, with the status and the
// message the client gets. They are built once: refusing allocates nothing.
type httpError struct {
	status int
	msg    string
	close  bool // the connection cannot be reused after it
}

func (e *httpError) Error() string { return e.msg }

var (
	errBadRequestLine  = &httpError{400, "malformed request line", true}
	errBadMethod       = &httpError{400, "malformed method", true}
	errBadTarget       = &httpError{400, "malformed request target", true}
	errBadHeader       = &httpError{400, "malformed header field", true}
	errObsFold         = &httpError{400, "folded header lines are not accepted", true}
	errTooManyHeaders  = &httpError{431, "too many header fields", true}
	errHeaderTooLarge  = &httpError{431, "request header too large", true}
	errMetaTooLarge    = &httpError{431, "request line and forwarded headers do not fit the request metadata", false}
	errBadLength       = &httpError{400, "malformed Content-Length", true}
	errTwoLengths      = &httpError{400, "conflicting Content-Length headers", true}
	errLengthAndChunks = &httpError{400, "both Content-Length and Transfer-Encoding", true}
	errBadTE           = &httpError{501, "unsupported Transfer-Encoding (only chunked)", true}
	errTE10            = &httpError{400, "Transfer-Encoding in an HTTP/1.0 request", true}
	errBadChunk        = &httpError{400, "malformed chunked body", true}
	errNoHost          = &httpError{400, "missing Host header", true}
	errTwoHosts        = &httpError{400, "more than one Host header", true}
	errExpect          = &httpError{417, "unsupported Expect header (only 100-continue)", true}
	errVersion         = &httpError{505, "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 are)", true}
	errTooLarge        = &httpError{413, "request body larger than a pool buffer", true}
	errShortBody       = &httpError{400, "request body shorter than its Content-Length", true}
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
func parseHead(b []byte, r *request) *httpError {
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
func (r *request) parseRequestLine(line []byte) *httpError {
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
