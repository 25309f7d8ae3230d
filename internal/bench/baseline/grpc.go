package baseline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/spry-dev/spry/sdk"
)

// The gRPC baseline's service: one unary method that takes a hop of a
// chain and returns the chain's answer. Messages are protobuf, encoded and
// decoded with protowire (no generated code); the schema is
//
//	message Hop {
//	  string chain = 1; uint32 hop = 2; string method = 3; string path = 4;
//	  string query = 5; repeated Header headers = 6; string content_type = 7;
//	  bytes body = 8; uint32 status = 9;
//	}
//	message Header { string name = 1; string value = 2; }
const (
	grpcMethod  = "/spry.bench.Fn/Hop"
	grpcService = "spry.bench.Fn"
)

// hopMsg is a Hop message. Decoding copies the body into into (a runner
// call's input: the one copy per hop into the handler's buffer) or into
// buf (a reply relayed back).
type hopMsg struct {
	chain, method, path, query, ctype string
	hop, status                       uint32
	headers                           [][2]string
	body                              []byte

	into    *sdk.Call
	n       int
	buf     *[]byte
	release func() // called once the message is encoded (its body was a view)
}

// codec is the protobuf codec for hopMsg.
type codec struct{}

func (codec) Name() string { return "proto" }

var errNotHop = errors.New("bench: not a hop message")

func (codec) Marshal(v any) ([]byte, error) {
	m, ok := v.(*hopMsg)
	if !ok {
		return nil, errNotHop
	}
	b := make([]byte, 0, 128+len(m.body)+len(m.path)+len(m.query))
	str := func(num protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	str(1, m.chain)
	if m.hop != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.hop))
	}
	str(3, m.method)
	str(4, m.path)
	str(5, m.query)
	for _, h := range m.headers {
		var hb []byte
		hb = protowire.AppendTag(hb, 1, protowire.BytesType)
		hb = protowire.AppendString(hb, h[0])
		hb = protowire.AppendTag(hb, 2, protowire.BytesType)
		hb = protowire.AppendString(hb, h[1])
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, hb)
	}
	str(7, m.ctype)
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	b = protowire.AppendBytes(b, m.body)
	if m.status != 0 {
		b = protowire.AppendTag(b, 9, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.status))
	}
	if m.release != nil {
		m.release()
		m.release = nil
	}
	return b, nil
}

var errBadHop = errors.New("bench: malformed hop message")

func (codec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*hopMsg)
	if !ok {
		return errNotHop
	}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return errBadHop
		}
		data = data[n:]
		switch typ {
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return errBadHop
			}
			data = data[n:]
			switch num {
			case 2:
				m.hop = uint32(x)
			case 9:
				m.status = uint32(x)
			}
		case protowire.BytesType:
			f, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return errBadHop
			}
			data = data[n:]
			switch num {
			case 1:
				m.chain = string(f)
			case 3:
				m.method = string(f)
			case 4:
				m.path = string(f)
			case 5:
				m.query = string(f)
			case 6:
				var h [2]string
				for len(f) > 0 {
					hn, ht, k := protowire.ConsumeTag(f)
					if k < 0 || ht != protowire.BytesType {
						return errBadHop
					}
					f = f[k:]
					s, k := protowire.ConsumeBytes(f)
					if k < 0 {
						return errBadHop
					}
					f = f[k:]
					if hn == 1 {
						h[0] = string(s)
					} else {
						h[1] = string(s)
					}
				}
				m.headers = append(m.headers, h)
			case 7:
				m.ctype = string(f)
			case 8:
				switch {
				case m.into != nil:
					in := m.into.Input()
					if len(f) > len(in) {
						return fmt.Errorf("bench: body of %d bytes is larger than the buffer", len(f))
					}
					m.n = copy(in, f)
				case m.buf != nil:
					*m.buf = append((*m.buf)[:0], f...)
					m.body = *m.buf
				default:
					m.body = append([]byte(nil), f...)
				}
			}
		default:
			k := protowire.ConsumeFieldValue(num, typ, data)
			if k < 0 {
				return errBadHop
			}
			data = data[k:]
		}
	}
	return nil
}

// serveGRPC serves the hop method on addr until ctx ends.
func serveGRPC(ctx context.Context, addr string, s *fnServer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	g := grpc.NewServer(grpc.ForceServerCodec(codec{}), grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: grpcService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Hop", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			return s.grpcHop(ctx, dec)
		}}},
	}, struct{}{})
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		g.Stop()
		return nil
	}
}

// grpcHop takes a hop over gRPC.
func (s *fnServer) grpcHop(ctx context.Context, dec func(any) error) (any, error) {
	call := s.run.Begin()
	in := &hopMsg{into: call}
	if err := dec(in); err != nil {
		call.End()
		return nil, err
	}
	m := meta{chain: s.byName[in.chain], hop: int(in.hop), method: in.method, path: in.path, query: in.query, headers: in.headers}
	if m.chain == nil || m.chain.fnAt(m.hop) != s.c.Function {
		call.End()
		return nil, fmt.Errorf("bench: no step %d of chain %q here", in.hop, in.chain)
	}
	call.SetRequest(m.method, m.path, m.query)
	for _, h := range m.headers {
		call.AddHeader(h[0], h[1])
	}
	call.SetContentType(in.ctype)
	status, ctype, body, rep := s.step(ctx, call, &m, in.n)
	// The reply's body is a view into the call (or the relayed reply):
	// release both once gRPC has encoded it.
	return &hopMsg{status: uint32(status), ctype: string(ctype), body: body, release: func() {
		releaseReply(rep)
		call.End()
	}}, nil
}

// grpcForwarder calls the next step over gRPC, one client connection per
// instance (HTTP/2 multiplexes the calls).
type grpcForwarder struct {
	conns map[string][]*grpc.ClientConn
	rr    map[string]*atomic.Uint32
}

func newGRPCForwarder(next map[string][]string) (*grpcForwarder, error) {
	f := &grpcForwarder{conns: map[string][]*grpc.ClientConn{}, rr: map[string]*atomic.Uint32{}}
	for fn, addrs := range next {
		for _, a := range addrs {
			cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{}), grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
			if err != nil {
				f.close()
				return nil, err
			}
			f.conns[fn] = append(f.conns[fn], cc)
		}
		f.rr[fn] = &atomic.Uint32{}
	}
	return f, nil
}

func (f *grpcForwarder) close() {
	for _, cs := range f.conns {
		for _, c := range cs {
			c.Close()
		}
	}
}

func (f *grpcForwarder) forward(ctx context.Context, next string, m *meta, ctype, body []byte) (*reply, error) {
	cs := f.conns[next]
	if len(cs) == 0 {
		return nil, fmt.Errorf("no address for %s", next)
	}
	cc := cs[int(f.rr[next].Add(1))%len(cs)]
	req := &hopMsg{chain: m.chain.Name, hop: uint32(m.hop), method: m.method, path: m.path, query: m.query,
		headers: m.headers, ctype: string(ctype), body: body}
	bp := bufPool.Get().(*[]byte)
	out := &hopMsg{buf: bp}
	if err := cc.Invoke(ctx, grpcMethod, req, out); err != nil {
		bufPool.Put(bp)
		return nil, err
	}
	return &reply{status: int(out.status), ctype: out.ctype, body: out.body, buf: bp}, nil
}
