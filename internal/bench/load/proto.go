package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// Protocols the load generator speaks (Config.Proto).
const (
	ProtoHTTP1 = "http1" // HTTP/1.1 in the clear: the hand-written client (the default)
	ProtoH2C   = "h2c"   // HTTP/2 in the clear, prior knowledge
	ProtoTLS   = "tls"   // HTTP/1.1 over TLS
	ProtoH2    = "h2"    // HTTP/2 over TLS (ALPN)
	ProtoGRPC  = "grpc"  // gRPC unary calls in the clear: the route is the method, the body the message
)

// Protos lists them.
var Protos = []string{ProtoHTTP1, ProtoH2C, ProtoTLS, ProtoH2, ProtoGRPC}

// doer sends one prepared request and returns its answer's status and
// body (valid until the next call).
type doer interface {
	do(r *Request) (int, []byte, error)
	close()
}

// h1 adapts client to doer.
type h1 struct{ *client }

func (c h1) do(r *Request) (int, []byte, error) { return c.client.do(r.Raw) }
func (c h1) close()                             { c.client.close() }

// newDoer makes a connection's client for proto.
func newDoer(proto, addr string, timeout time.Duration) (doer, error) {
	switch proto {
	case "", ProtoHTTP1:
		return h1{newClient(addr, timeout)}, nil
	case ProtoH2C:
		tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, n, a)
		}}
		return &netHTTP{cl: &http.Client{Transport: tr, Timeout: timeout}, base: "http://" + addr, idle: tr.CloseIdleConnections}, nil
	case ProtoH2:
		tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // the bench's own self-signed certificate
		return &netHTTP{cl: &http.Client{Transport: tr, Timeout: timeout}, base: "https://" + addr, idle: tr.CloseIdleConnections}, nil
	case ProtoTLS:
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}},
			MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		return &netHTTP{cl: &http.Client{Transport: tr, Timeout: timeout}, base: "https://" + addr, idle: tr.CloseIdleConnections}, nil
	case ProtoGRPC:
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			return nil, err
		}
		return &grpcDoer{cc: cc, timeout: timeout}, nil
	}
	return nil, fmt.Errorf("load: unknown protocol %q (known: %s)", proto, strings.Join(Protos, ", "))
}

// parsed is a prepared request taken apart, for the clients that build
// their own.
type parsed struct {
	method, target string
	header         http.Header
	body           []byte
}

func parseRaw(raw []byte) (*parsed, error) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, fmt.Errorf("load: a prepared request: %w", err)
	}
	body, _ := io.ReadAll(req.Body)
	req.Header.Del("Content-Length")
	return &parsed{method: req.Method, target: req.RequestURI, header: req.Header, body: body}, nil
}

// netHTTP is one connection of net/http's client (HTTP/2 or TLS).
type netHTTP struct {
	cl   *http.Client
	base string
	idle func()
	buf  bytes.Buffer
}

func (c *netHTTP) do(r *Request) (int, []byte, error) {
	p := r.parsed
	req, err := http.NewRequest(p.method, c.base+p.target, bytes.NewReader(p.body))
	if err != nil {
		return 0, nil, err
	}
	req.Header = p.header
	resp, err := c.cl.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	c.buf.Reset()
	if _, err := c.buf.ReadFrom(resp.Body); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, c.buf.Bytes(), nil
}

func (c *netHTTP) close() { c.idle() }

// grpcDoer is one gRPC client connection; a request's path is the method
// and its body the message.
type grpcDoer struct {
	cc      *grpc.ClientConn
	timeout time.Duration
	out     []byte
}

func (c *grpcDoer) do(r *Request) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	in := r.parsed.body
	c.out = c.out[:0]
	if err := c.cc.Invoke(ctx, r.parsed.target, &in, &c.out); err != nil {
		return grpcHTTP(status.Code(err)), []byte(status.Convert(err).Message()), nil
	}
	return 200, c.out, nil
}

func (c *grpcDoer) close() { c.cc.Close() }

// grpcHTTP maps a gRPC code back to the HTTP status a check expects.
func grpcHTTP(code interface{ String() string }) int {
	switch code.String() {
	case "DeadlineExceeded":
		return 504
	case "ResourceExhausted":
		return 429
	case "Unavailable":
		return 503
	case "Unimplemented":
		return 404
	case "InvalidArgument":
		return 400
	}
	return 502
}

// rawCodec sends and receives messages as raw bytes (*[]byte).
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return nil, fmt.Errorf("load: grpc: %T is not *[]byte", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	if b, ok := v.(*[]byte); ok {
		*b = append((*b)[:0], data...)
		return nil
	}
	return fmt.Errorf("load: grpc: %T is not *[]byte", v)
}

var _ encoding.Codec = rawCodec{}
