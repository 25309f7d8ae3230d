//go:build linux

package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The goroutine-per-connection design, which SPRY_GATEWAY_LOOPS=0 (and a
// system without epoll) keeps, still serves: the basic cases run with the
// event loops off.
func TestWithoutEventLoops(t *testing.T) {
	defer func(n int) { loopCount = n }(loopCount)
	loopCount = 0 // rigs started from now on serve without loops
	for name, test := range map[string]func(*testing.T){
		"echo": TestEcho, "expect": TestExpectContinue, "pool exhausted": TestPoolExhausted,
		"inflight": TestInflightBound, "late reply": TestTimeoutThenLateReply,
		"zero allocs": TestRequestZeroAllocs, "refused while sending": TestRefusedWhileSending,
		"refused slow sender": TestRefusedSlowSender,
	} {
		t.Run(name, test)
	}
}

// A response larger than the socket takes at once, to a client that reads
// it late: the loop writes the rest as the socket drains, the buffer
// comes back only after, and the connection serves its next request.
func TestLoopSlowReader(t *testing.T) {
	const size = 4 << 20
	r := newRigWith(t, rigOpts{buffers: 8, bufferSize: size, inflight: 4, timeout: 10 * time.Second, hold: true})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req := "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"
	io.WriteString(c, req)
	d := r.take(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	copy(r.p.Buffer(d.Buf), want)
	r.p.Header(d.Buf).SetData(0, uint32(size))
	r.reply(d)
	time.Sleep(200 * time.Millisecond) // the socket fills; the rest waits for the client
	if free := r.p.FreeBuffers(); free != 7 {
		t.Fatalf("%d buffers free while the response is being written, want 7 (the reply's held)", free)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d of %d bytes (equal %v): %v", len(got), size, bytes.Equal(got, want), err)
	}
	// The next request on the same connection.
	io.WriteString(c, req)
	r.reply(r.take(t))
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "x" {
		t.Fatalf("second request: %d %q", resp.StatusCode, b)
	}
	r.waitFree(t, 8)
}

// Pipelined requests on one connection are answered in order, each after
// the one before, even when their replies come back out of order.
func TestLoopPipelinedOrder(t *testing.T) {
	r := newRigWith(t, rigOpts{buffers: 8, inflight: 4, timeout: 5 * time.Second, hold: true})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirstPOST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond")
	first := r.take(t)
	select {
	case <-r.held:
		t.Fatal("the second request left before the first was answered")
	case <-time.After(50 * time.Millisecond):
	}
	r.reply(first)
	r.reply(r.take(t))
	br := bufio.NewReader(c)
	var bodies []string
	for range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		bodies = append(bodies, string(b))
	}
	if strings.Join(bodies, ",") != "first,second" {
		t.Fatalf("answers %v", bodies)
	}
	r.waitFree(t, 8)
}

// A round of the loop that finds many requests (the loops are held while
// the clients send, so that one epoll_wait returns them all) queues their
// descriptors and sends them together at its end: every request reaches
// the step and is answered, with its own body, and nothing is left held.
func TestLoopRoundSendsTogether(t *testing.T) {
	const conns = 32
	sends := new(sendCounter)
	r := newRigWith(t, rigOpts{buffers: 64, inflight: 64, timeout: 10 * time.Second, sends: sends})
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		cs[i] = c
	}
	time.Sleep(50 * time.Millisecond) // the loops adopt the connections
	release := make(chan struct{})
	held := make(chan struct{}, len(loops.l))
	for _, l := range loops.l {
		l.task(func() { held <- struct{}{}; <-release })
	}
	for range loops.l {
		<-held
	}
	for i, c := range cs {
		body := fmt.Sprintf("request %d", i)
		fmt.Fprintf(c, "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	time.Sleep(20 * time.Millisecond) // the requests are in the sockets
	close(release)
	for i, c := range cs {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("request %d", i); resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("connection %d: %d %q, want 200 %q", i, resp.StatusCode, b, want)
		}
	}
	r.waitFree(t, 64)
	// A round's descriptors for the instance went in batches (one
	// message each, on skmsg), not one by one.
	if n := sends.batched.Load() + sends.singles.Load(); n != conns || sends.largest.Load() < 2 {
		t.Errorf("sent %d descriptors, %d alone, %d in %d batches (largest %d); want %d, in batches",
			n, sends.singles.Load(), sends.batched.Load(), sends.batches.Load(), sends.largest.Load(), conns)
	}
}
