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
	n := r.Len()
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
	c.ct = r.AppendContentType(c.ct[:0])
	o := c.head(r.Status(), c.ct, n, c.closeAfter, extra)
	c.vec[0], c.nvec = o, 1
	total := len(o)
	if !c.headOnly {
		for i := range min(r.Pieces(), len(c.vec)-1) {
			if p := r.Piece(i); len(p) > 0 {
				c.vec[c.nvec] = p
				c.nvec++
				total += len(p)
			}
		}
	}
	c.wrote = 0
	for i := range c.nvec {
		c.iov[i].Base, c.iov[i].Len = &c.vec[i][0], uint64(len(c.vec[i]))
	}
	c.iovN = c.nvec
	switch {
	case c.lp != nil:
		c.writev(uintptr(c.fd))
	case c.raw != nil:
		c.raw.Write(c.writeFn)
	}
	if c.wrote == total {
		// The connection learns first (its next request may be waiting
		// on it); the buffer and the entry, which it does not use,
		// follow.
		c.answered()
		r.Done()
		return
	}
	if c.lp != nil {
		// The socket is full: the connection's loop writes the rest as
		// it drains.
		c.handOver(r)
		return
	}
	// The socket is full (a slow reader, a large body): finish blocking,
	// off this thread.
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

// writeSlice bounds one blocking write of a large body, so that the write
// deadline bounds a stalled client, not a large answer.
const writeSlice = 16 << 20

// writeRest writes what the non-blocking write left of c.vec, straight
// from the pool (the kernel's copy into the socket is the only one; not
// sendfile, whose pages the socket may still read after the buffer is
// reused), then ends the request.
func (c *conn) writeRest() {
	w := c.wrote
	for i := range c.nvec {
		k := min(w, len(c.vec[i]))
		c.vec[i] = c.vec[i][k:]
		w -= k
	}
write:
	for i := range c.nvec {
		for len(c.vec[i]) > 0 {
			c.nc.SetWriteDeadline(time.Now().Add(c.g.header))
			n, err := c.nc.Write(c.vec[i][:min(len(c.vec[i]), writeSlice)])
			c.vec[i] = c.vec[i][n:]
			if err != nil {
				c.nc.Close() // the client is gone or stuck: the connection is done
				break write
			}
		}
	}
	clear(c.vec[:c.nvec])
	r := c.rep
	defer r.a.bg.Done()
	c.answered()
	r.Done()
}
