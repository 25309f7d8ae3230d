package peer

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Frames queued from several goroutines at once while the other end does
// not read: the socket takes only part of a batch, the writer goroutine
// takes over the rest; once the other end reads, every frame arrives
// whole, each goroutine's in the order it queued them.
func TestLinkShortWrites(t *testing.T) {
	cc, sc := tcpPair(t)
	cc.(*net.TCPConn).SetWriteBuffer(4096)
	sc.(*net.TCPConn).SetReadBuffer(64 << 10) // fixed (no autotuning), and well over a segment: the window reopens as the test reads
	h := &Hub{cfg: HubConfig{Keepalive: time.Hour}}
	l := newLink(h, "other", cc, false)
	go l.writeLoop()
	defer func() {
		l.close()
		<-l.wdone
	}()

	const writers, each, size = 4, 300, 1500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ok := l.enqueue(func(f *frame) {
					f.own = append(f.own[:0], bytes.Repeat([]byte{byte(g*each + i)}, size)...)
					(&head{typ: frameReply, tag: uint64(g)<<32 | uint64(i), bodyLen: size}).put(f.hd[:])
					f.body = f.own
				})
				if !ok {
					t.Error("link down")
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // the socket fills
	next := make([]uint64, writers)
	buf := make([]byte, headSize+size)
	var hd head
	sc.SetReadDeadline(time.Now().Add(20 * time.Second))
	for range writers * each {
		if _, err := io.ReadFull(sc, buf); err != nil {
			t.Fatalf("after %v frames: %v", next, err)
		}
		if err := hd.get(buf); err != nil || hd.bodyLen != size {
			t.Fatalf("frame head %+v %v", hd, err)
		}
		g, i := hd.tag>>32, hd.tag&(1<<32-1)
		if g >= writers || i != next[g] {
			t.Fatalf("writer %d: frame %d, want %d", g, i, next[g])
		}
		next[g]++
		if want := bytes.Repeat([]byte{byte(g*each + i)}, size); !bytes.Equal(buf[headSize:], want) {
			t.Fatalf("writer %d frame %d: body differs", g, i)
		}
	}
	wg.Wait()
	if l.handoffs.Load() == 0 {
		t.Fatal("no write was short: the test did not fill the socket")
	}
	if n := l.sent.Load(); n != writers*each {
		t.Fatalf("sent %d frames, want %d", n, writers*each)
	}
	l.mu.Lock()
	writing := l.writing
	l.mu.Unlock()
	if writing {
		t.Fatal("the writing token is still taken with nothing queued")
	}
}

// A link that goes down while the socket holds a half-written batch and
// more is queued: the writer goroutine takes the token back from whoever
// held it, drops what is left, and ends; nothing queues after.
func TestLinkDownWhileHalfWritten(t *testing.T) {
	cc, sc := tcpPair(t)
	cc.(*net.TCPConn).SetWriteBuffer(4096)
	sc.(*net.TCPConn).SetReadBuffer(4096)
	l := newLink(&Hub{cfg: HubConfig{Keepalive: time.Hour}}, "other", cc, false)
	go l.writeLoop()
	const size = 8 << 10
	for i := range 200 {
		l.enqueue(func(f *frame) {
			f.own = append(f.own[:0], make([]byte, size)...)
			(&head{typ: frameReply, tag: uint64(i), bodyLen: size}).put(f.hd[:])
			f.body = f.own
		})
	}
	if l.handoffs.Load() == 0 {
		t.Fatal("no write was short")
	}
	l.close()
	select {
	case <-l.wdone:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not end")
	}
	if l.enqueue(func(*frame) {}) {
		t.Fatal("queued on a link that is down")
	}
	if l.sent.Load() >= 200 {
		t.Fatalf("sent %d of 200 with the other end not reading", l.sent.Load())
	}
}

// tcpPair returns the two ends of a loopback TCP connection; the accepted
// end (sc) is closed at the test's end, the dialled one (cc) is the
// caller's.
func tcpPair(t *testing.T) (cc, sc net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	return cc, sc
}
