package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // a client that compresses
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const grpcRoute = "/spry.test.Echo/Say"

func grpcClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20), grpc.MaxCallSendMsgSize(4<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// A stock grpc-go client calls a chain: unary, the request message is the
// payload (here echoed back as the reply message), large messages, a
// deadline past, errors mapped to codes.
func TestGRPCUnary(t *testing.T) {
	r := newRigWith(t, rigOpts{buffers: 16, bufferSize: 2 << 20, inflight: 8, timeout: 5 * time.Second, route: grpcRoute})
	cc := grpcClient(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, size := range []int{0, 1, 1000, 1 << 20} {
		in := wrapperspb.String(strings.Repeat("g", size))
		out := new(wrapperspb.StringValue)
		if err := cc.Invoke(ctx, grpcRoute, in, out); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if out.Value != in.Value {
			t.Fatalf("%d bytes: got %d back", size, len(out.Value))
		}
	}
	// A message larger than a pool buffer.
	err := cc.Invoke(ctx, grpcRoute, wrapperspb.String(strings.Repeat("h", 3<<20)), new(wrapperspb.StringValue))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("too large: %v", err)
	}
	// No chain on the method.
	err = cc.Invoke(ctx, "/spry.test.Echo/Nope", wrapperspb.String("x"), new(wrapperspb.StringValue))
	if status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), "no chain serves /spry.test.Echo/Nope") {
		t.Fatalf("unknown method: %v", err)
	}
	r.waitFree(t, 16)
}

func TestGRPCDeadlineAndErrors(t *testing.T) {
	// The chain's own timeout is far longer than the waits below: only
	// the client's deadline can time the slow request out in time.
	r := newRigWith(t, rigOpts{buffers: 16, inflight: 8, timeout: 60 * time.Second, hold: true, route: grpcRoute})
	cc := grpcClient(t, r.addr)

	// The connection first: grpc-go connects on the first call, inside
	// its deadline, and on a busy machine the connection and the HTTP/2
	// preface took longer than the 100 ms below, so the call ended
	// DEADLINE_EXCEEDED in the client without reaching the gateway, and
	// the test waited for a request that never came (hung 10 minutes).
	warm := make(chan error, 1)
	go func() {
		warm <- cc.Invoke(context.Background(), grpcRoute, wrapperspb.String("warm"), new(wrapperspb.StringValue))
	}()
	r.reply(r.take(t))
	if err := <-warm; err != nil {
		t.Fatalf("first call: %v", err)
	}

	// The client's deadline is the request's: the gateway answers
	// DEADLINE_EXCEEDED when it passes.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := cc.Invoke(ctx, grpcRoute, wrapperspb.String("slow"), new(wrapperspb.StringValue))
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("past the deadline: %v", err)
	}
	d := r.take(t)
	deadline := time.Now().Add(5 * time.Second)
	for r.app.Stats().Timeouts.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not time the request out by the client's deadline")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.reply(d)

	// A step's status maps to a code, its body to the message.
	for _, tc := range []struct {
		status uint16
		code   codes.Code
	}{{403, codes.PermissionDenied}, {400, codes.InvalidArgument}, {502, codes.Unknown}, {503, codes.Unavailable}} {
		got := make(chan error, 1)
		go func() {
			got <- cc.Invoke(context.Background(), grpcRoute, wrapperspb.String("x"), new(wrapperspb.StringValue))
		}()
		d := r.take(t)
		h := r.p.Header(d.Buf)
		n := copy(r.p.Buffer(d.Buf), "not for you\n")
		h.SetData(0, uint32(n))
		h.SetStatus(tc.status)
		r.reply(d)
		err := <-got
		if s := status.Convert(err); s.Code() != tc.code || s.Message() != "not for you" {
			t.Fatalf("status %d: got %v, want %v", tc.status, err, tc.code)
		}
	}
	// Compressed messages are refused with UNIMPLEMENTED.
	err = cc.Invoke(context.Background(), grpcRoute, wrapperspb.String("x"), new(wrapperspb.StringValue), grpc.UseCompressor("gzip"))
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("gzip: %v", err)
	}
	r.waitFree(t, 16)
}
