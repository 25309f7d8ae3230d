package gateway

import (
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/mono"
)

// The reply path. A chain's reply is answered on the thread that received
// it: reply builds the response head and writes head and body with one
// non-blocking writev straight from the pool buffer, frees the buffer and
// the request's entry, and marks the connection's request answered. Only
// when the socket does not take the whole response does a goroutine finish
// the write. The connection's own goroutine meanwhile waits for the next
// request (in the netpoller) and is not woken for this one: a locked
// receive thread that readied it would hold the only free processor in a
// blocking system call, and the goroutine would wait for the runtime to
// notice (tens of microseconds, measured by BenchmarkRequest).

// reply answers the request in entry e (index idx, id reqID) of app a with
// reply buffer e.buf.
func (c *conn) reply(a *App, idx uint32, reqID uint64, e *pending) {
	p := a.pool
	buf := e.buf
	oh := p.Header(buf)
	status := int(oh.Status())
	if status < 100 || status > 999 {
		status = 200
	}
	ctype := oh.ContentType()
	if len(ctype) == 0 || !isFieldValue(ctype) {
		ctype = octets
	}
	body := p.Data(buf)
	o := c.head(e.ch, e.began, status, ctype, len(body), e.close, nil)
	if e.head {
		body = nil
	}
	a.stats.Replies.Add(1)
	c.wrote = 0
	if c.raw != nil {
		c.iov[0].Base, c.iov[0].Len, c.iovN = &o[0], uint64(len(o)), 1
		if len(body) > 0 {
			c.iov[1].Base, c.iov[1].Len, c.iovN = &body[0], uint64(len(body)), 2
		}
		c.raw.Write(c.writeFn)
	}
	if c.wrote == len(o)+len(body) {
		c.replyDone(a, buf, idx, reqID)
		return
	}
	// The socket is full (a slow reader, a large body): finish blocking,
	// off this thread.
	c.vec = [2][]byte{o, body}
	a.bg.Add(1)
	go c.writeRest(a, buf, idx, reqID)
}

// writev writes c.iov with one non-blocking writev(2). RawConn.Write calls
// it with the socket's fd and returns at once, since it reports done.
func (c *conn) writev(fd uintptr) bool {
	n, _, errno := syscall.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&c.iov[0])), uintptr(c.iovN))
	if errno == 0 {
		c.wrote = int(n)
	}
	return true
}

// writeRest writes what the non-blocking write left of c.vec.
func (c *conn) writeRest(a *App, buf, idx uint32, reqID uint64) {
	defer a.bg.Done()
	w := c.wrote
	for i := range c.vec {
		k := min(w, len(c.vec[i]))
		c.vec[i] = c.vec[i][k:]
		w -= k
	}
	c.bufs = c.vec[:]
	c.nc.SetWriteDeadline(time.Now().Add(c.g.header))
	if _, err := c.bufs.WriteTo(c.nc); err != nil {
		c.nc.Close() // the client is gone or stuck: the connection is done
	}
	c.replyDone(a, buf, idx, reqID)
}

// replyDone ends a request whose response is written. The connection
// learns first (its next request may be waiting on it); the buffer and the
// entry, which it does not use, follow.
func (c *conn) replyDone(a *App, buf, idx uint32, reqID uint64) {
	c.answered()
	a.pool.Free(buf, a.id)
	a.release(idx, reqID)
}

// expire runs when the deadline timer of the request out fires: unless the
// reply is being answered, the client gets 504. The request's entry stays
// taken, and its buffer out, until the chain gives the buffer back.
func (c *conn) expire() {
	c.flMu.Lock()
	f := c.fl
	c.flMu.Unlock()
	if f.a == nil || mono.Now() < f.deadline {
		return // a stale firing, for a request answered since
	}
	if !f.a.abandon(f.idx, f.reqID) {
		return // answered, or being answered
	}
	f.a.stats.Timeouts.Add(1)
	c.msg = append(append(append(c.msg[:0], "spry: chain "...), f.ch.Name...), " did not answer in time\n"...)
	o := c.head(f.ch, f.began, 504, textPlain, len(c.msg), f.close, nil)
	c.vec = [2][]byte{o, c.msg}
	c.bufs = c.vec[:]
	c.nc.SetWriteDeadline(time.Now().Add(c.g.header))
	if _, err := c.bufs.WriteTo(c.nc); err != nil {
		c.nc.Close()
	}
	c.answered()
}
