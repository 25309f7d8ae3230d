package gateway

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// gRPC unary calls over the HTTP/2 adapter. A chain's route can be a gRPC
// method (/pkg.Service/Method): the request message — the bytes after the
// 5-byte length prefix, undecoded — is the payload the first step gets,
// and the last step's output is the reply message. Statuses map to gRPC
// codes in the trailers (grpc-status, grpc-message); a client's
// grpc-timeout becomes the request's deadline.

// grpcPrefix is the length prefix of a gRPC message: a compressed flag and
// a big-endian uint32 length.
const grpcPrefix = 5

func isGRPC(ctype []byte) bool {
	return bytes.HasPrefix(ctype, []byte("application/grpc")) &&
		(len(ctype) == 16 || ctype[16] == '+' || ctype[16] == ';')
}

var (
	errGRPCMethod     = &Error{Status: 405, Msg: "gRPC calls are POSTs"}
	errGRPCCompressed = &Error{Status: 501, Msg: "compressed gRPC messages are not supported (use identity)"}
	errGRPCStreaming  = &Error{Status: 501, Msg: "only unary gRPC calls are supported: more than one request message"}
	errGRPCNoMessage  = &Error{Status: 400, Msg: "no gRPC request message"}
	errGRPCTruncated  = &Error{Status: 400, Msg: "truncated gRPC request message"}
	errGRPCTimeout    = &Error{Status: 400, Msg: "malformed grpc-timeout"}
)

// grpcCall is the state of one call's request message.
type grpcCall struct {
	pre  [grpcPrefix]byte
	np   int    // prefix bytes seen
	want uint32 // the message's length
	got  uint32 // message bytes seen
}

// start checks a call's head and sets its deadline from grpc-timeout.
func (g *grpcCall) start(r *Request, h h2headers) *Error {
	if string(r.Method) != "POST" {
		return errGRPCMethod
	}
	r.Length = -1 // the message's length, not the stream's, is bounded
	for _, f := range h {
		switch f.Name {
		case "grpc-timeout":
			d, ok := parseGRPCTimeout(f.Value)
			if !ok {
				return errGRPCTimeout
			}
			r.Deadline = r.Began + int64(d)
			if r.Deadline == 0 {
				r.Deadline = 1
			}
		case "grpc-encoding":
			if f.Value != "identity" {
				return errGRPCCompressed
			}
		}
	}
	return nil
}

// parseGRPCTimeout parses "TimeoutValue TimeoutUnit" (at most 8 digits;
// H, M, S, m, u, n).
func parseGRPCTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[s[len(s)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// body takes the next DATA payload of the call's stream and returns the
// part of it that belongs to the message.
func (g *grpcCall) body(p []byte) ([]byte, *Error) {
	for g.np < grpcPrefix && len(p) > 0 {
		g.pre[g.np] = p[0]
		g.np++
		p = p[1:]
		if g.np == grpcPrefix {
			if g.pre[0] != 0 {
				return nil, errGRPCCompressed
			}
			g.want = binary.BigEndian.Uint32(g.pre[1:])
		}
	}
	if uint32(len(p)) > g.want-g.got {
		return nil, errGRPCStreaming
	}
	g.got += uint32(len(p))
	return p, nil
}

// end checks that the call sent one whole message.
func (g *grpcCall) end() *Error {
	switch {
	case g.np < grpcPrefix:
		return errGRPCNoMessage
	case g.got < g.want:
		return errGRPCTruncated
	}
	return nil
}

// gRPC status codes (google.golang.org/grpc/codes).
const (
	grpcOK                 = 0
	grpcCanceled           = 1
	grpcUnknown            = 2
	grpcInvalidArgument    = 3
	grpcDeadlineExceeded   = 4
	grpcNotFound           = 5
	grpcAlreadyExists      = 6
	grpcPermissionDenied   = 7
	grpcResourceExhausted  = 8
	grpcFailedPrecondition = 9
	grpcAborted            = 10
	grpcUnimplemented      = 12
	grpcInternal           = 13
	grpcUnavailable        = 14
	grpcUnauthenticated    = 16
)

// grpcCode maps an answer's HTTP status to a gRPC status code.
func grpcCode(status int, err *Error) int {
	if err == ErrDeadline {
		return grpcDeadlineExceeded
	}
	switch {
	case status >= 200 && status < 300:
		return grpcOK
	}
	switch status {
	case 400, 422:
		return grpcInvalidArgument
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 404, 405, 501:
		return grpcUnimplemented
	case 408, 504:
		return grpcDeadlineExceeded
	case 409:
		return grpcAborted
	case 412:
		return grpcFailedPrecondition
	case 413, 429, 431:
		return grpcResourceExhausted
	case 499:
		return grpcCanceled
	case 500:
		return grpcInternal
	case 503:
		return grpcUnavailable
	}
	return grpcUnknown
}

// grpcMessage percent-encodes a grpc-message value (gRPC over HTTP/2): the
// text of an error body, without its trailing newline.
func grpcMessage(b []byte) string {
	b = bytes.TrimRight(b, "\r\n")
	const hex = "0123456789ABCDEF"
	var out []byte
	for _, c := range b {
		if c < 0x20 || c > 0x7e || c == '%' {
			out = append(out, '%', hex[c>>4], hex[c&15])
		} else {
			out = append(out, c)
		}
	}
	return string(out)
}

// writeGRPC writes st's answer as a gRPC response: the reply message, or a
// trailers-only response carrying the error. The caller holds wmu.
func (c *h2conn) writeGRPC(st *h2stream, status int, body []byte, gerr *Error) bool {
	code := grpcCode(status, gerr)
	if code != grpcOK || st.err != nil {
		if st.err != nil && code == grpcOK {
			code = grpcUnknown
		}
		c.hbuf.Reset()
		c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
		c.henc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(code)})
		c.henc.WriteField(hpack.HeaderField{Name: "grpc-message", Value: grpcMessage(body)})
		c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true})
		c.finish(st, true)
		return true
	}
	if !st.wroteHdr {
		c.hbuf.Reset()
		c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
		c.respHeaders(&st.rep) // the chain's response headers: the call's metadata
		c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
		st.wroteHdr = true
		st.grpc.pre[0] = 0
		binary.BigEndian.PutUint32(st.grpc.pre[1:], uint32(len(body)))
	}
	if st.off < grpcPrefix {
		pre := st.grpc.pre[:]
		if !c.writeData(st, pre, false) {
			return false
		}
	}
	// writeData counts st.off from the start of what it is given: the
	// message continues after the prefix.
	st.off -= grpcPrefix
	ok := c.writeData(st, body, false)
	st.off += grpcPrefix
	if !ok {
		return false
	}
	c.hbuf.Reset()
	c.henc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	c.finish(st, true)
	return true
}
