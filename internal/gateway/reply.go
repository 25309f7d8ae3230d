package gateway

import (
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The HTTP/1.1 reply path. A chain's reply is answered on the thread that
// received it: Reply builds the response head and writes head and body with
// one non-blocking writev straight from the pool buffer, marks the
// connection's request answered, and gives the buffer and the request's
// entry back (Reply.Done). Only when the socket does not take the whole
// response does a goroutine finish the write. The connection's own
// goroutine meanwhile waits for the next request (in the netpoller) and is
// not woken for this one: a locked receive thread that readied it would
// hold the only free processor in a blocking system call, and the goroutine
// would wait for the runtime to notice (tens of microseconds, measured by
// BenchmarkRequest).

// Reply answers the connection's request out with r (see Replier).
func (c *conn) Reply(r Reply) {
	body := r.Body()
	var extra []byte
	if e := r.Err(); e != nil && e.Retry {
		extra = retryAfter
	} else if e == nil {
		c.hdr = r.AppendHeaders(c.hdr[:0])
		if len(c.ceReply) > 0 {
			c.hdr = append(c.hdr, c.ceReply...) // the reply to a CloudEvent is one
		}
		extra = c.hdr
	}
	o := c.head(r.Status(), r.ContentType(), len(body), c.closeAfter, extra)
	if c.headOnly {
		body = nil
	}
	c.wrote = 0
	if c.raw != nil {
		c.iov[0].Base, c.iov[0].Len, c.iovN = &o[0], uint64(len(o)), 1
		if len(body) > 0 {
			c.iov[1].Base, c.iov[1].Len, c.iovN = &body[0], uint64(len(body)), 2
		}
		c.raw.Write(c.writeFn)
	}
	if c.wrote == len(o)+len(body) {
		// The connection learns first (its next request may be waiting
		// on it); the buffer and the entry, which it does not use,
		// follow.
		c.answered()
		r.Done()
		return
	}
	// The socket is full (a slow reader, a large body): finish blocking,
	// off this thread.
	c.vec = [2][]byte{o, body}
	c.rep = r
	r.a.bg.Add(1) // App.Close waits for it: it reads the pool buffer
	go c.writeRest()
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

// writeRest writes what the non-blocking write left of c.vec, then ends
// the request.
func (c *conn) writeRest() {
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
	r := c.rep
	defer r.a.bg.Done()
	c.answered()
	r.Done()
}
