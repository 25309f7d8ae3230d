package gateway

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/transport"
)

// The event loop. Cleartext HTTP/1.1 connections, and the reply endpoints
// of apps whose transport delivers descriptors on a socket (skmsg, uds),
// are served by a few threads that each wait in epoll_wait for all of
// theirs at once, instead of a goroutine per connection (woken through
// Go's netpoller and scheduler) plus a thread per app sleeping in a
// blocking read. A request then costs the gateway one wake-up of one
// thread at most, and none while the loop has other work: under load one
// epoll_wait returns many connections' requests and many replies, each
// handled with the system calls it needs (read, send of the descriptor,
// receive of the reply, writev) and nothing else — no goroutine is readied,
// no other thread woken. Profiles of the goroutine design showed most of
// the gateway's CPU in exactly those wake-ups (see docs/design.md).
//
// A loop is one goroutine locked to its thread; the loops are shared by
// every Gateway and App of the process (they are started on first use,
// like the runtime's netpoller). A connection belongs to one loop for its
// life and only that loop reads it, parses it and changes its phase. Its
// request's reply may be answered on another thread (an App with a ring
// transport, whose thread waits on a futex; a deadline's timer): that
// thread writes the response itself, as before, and posts the connection
// to its loop only when the loop must act (a write the socket did not
// take whole, or the loop waiting to go on with the connection).
//
// What the loop does not serve itself it hands over: a connection that
// turns to HTTP/2, a chunked or Expect: 100-continue request, one whose
// head and body do not fit its read buffer, an asynchronous request or an
// event leaves the loop for a goroutine of its own (conn.serve, as TLS
// connections have), which parses the request again and serves the rest
// of the connection.

// Loops is the number of event loops (at most; see loopsFor).
var loopCount = func() int {
	if s := os.Getenv("SPRY_GATEWAY_LOOPS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			return n
		}
	}
	// One loop serves ~100k requests/s on a core of its own; the rest of
	// the cores run the functions.
	return max(1, runtime.NumCPU()/8)
}()

var loops struct {
	once sync.Once
	l    []*loop
	next atomic.Uint32
}

// loopsOn reports whether the event loops serve connections and apps
// (SPRY_GATEWAY_LOOPS=0 turns them off: a goroutine per connection, a
// thread per app).
func loopsOn() bool { return loopCount > 0 && loop0() != nil }

// loop0 returns the first loop, starting the loops on first use (nil if
// they cannot start).
func loop0() *loop {
	loops.once.Do(func() {
		for range loopCount {
			l, err := newLoop()
			if err != nil {
				break
			}
			loops.l = append(loops.l, l)
			go l.run()
		}
	})
	if len(loops.l) == 0 {
		return nil
	}
	return loops.l[0]
}

// pickLoop returns the loop for a new connection or app (round robin).
func pickLoop() *loop {
	loop0()
	return loops.l[int(loops.next.Add(1))%len(loops.l)]
}

// loopItem is what a loop watches: a listener, a connection, an app's
// reply endpoint, or its own eventfd.
type loopItem interface {
	// ready handles readiness ev of the item's file.
	ready(l *loop, ev uint32)
}

type loop struct {
	epfd, efd int
	items     []loopItem // by slot (the epoll data); nil: free
	free      []int32
	again     []loopItem // items with more to do without a new event

	mu       sync.Mutex // posts and tasks from other threads
	posts    []*conn
	tasks    []func()
	sleeping atomic.Bool // in epoll_wait (or about to be)
	kicked   atomic.Bool // the eventfd was written since the last drain

	now       int64 // mono time of this round
	nextSweep int64
	timed     int // connections with a deadline (the loop sweeps while there are any)
	conns     map[*conn]struct{}
	lastSched int64
	sends     sendQueue // the round's admitted requests, sent at its end
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	l := &loop{epfd: epfd, efd: efd, conns: map[*conn]struct{}{}}
	if _, err := l.add(efd, unix.EPOLLIN, wakeItem{}); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, err
	}
	return l, nil
}

// wakeItem is the loop's eventfd: posts from other threads.
type wakeItem struct{}

func (wakeItem) ready(l *loop, _ uint32) {
	var b [8]byte
	syscall.RawSyscall(unix.SYS_READ, uintptr(l.efd), uintptr(unsafe.Pointer(&b[0])), 8)
}

// add watches fd for events ev, as item; it returns the item's slot.
func (l *loop) add(fd int, ev uint32, it loopItem) (int32, error) {
	var slot int32
	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		slot = int32(len(l.items))
		l.items = append(l.items, nil)
	}
	l.items[slot] = it
	e := unix.EpollEvent{Events: ev, Fd: slot}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &e); err != nil {
		l.items[slot] = nil
		l.free = append(l.free, slot)
		return 0, err
	}
	return slot, nil
}

// remove stops watching fd (slot); the caller closes it after.
func (l *loop) remove(fd int, slot int32) {
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	l.items[slot] = nil
	l.free = append(l.free, slot)
}

// post asks the loop to go on with c (from any thread).
func (l *loop) post(c *conn) {
	l.mu.Lock()
	l.posts = append(l.posts, c)
	l.mu.Unlock()
	l.kick()
}

// task runs fn on the loop (from any thread; not for the request path).
func (l *loop) task(fn func()) {
	l.mu.Lock()
	l.tasks = append(l.tasks, fn)
	l.mu.Unlock()
	l.kick()
}

// kick wakes the loop if it sleeps. Ordering: a poster appends under mu,
// then loads sleeping; the loop stores sleeping, then looks at the posts
// under mu before it sleeps: one of the two sees the other.
func (l *loop) kick() {
	if l.sleeping.Load() && l.kicked.CompareAndSwap(false, true) {
		one := uint64(1)
		syscall.RawSyscall(unix.SYS_WRITE, uintptr(l.efd), uintptr(unsafe.Pointer(&one)), 8)
	}
}

// sweepEvery is the soonest the loop looks again for connections past
// their deadline: it sweeps at the nearest deadline (an idle keep-alive
// connection's is minutes away), and timeouts are this coarse at most.
const sweepEvery = int64(250e6)

func (l *loop) run() {
	runtime.LockOSThread()
	var evs [256]unix.EpollEvent
	var posts []*conn
	var tasks []func()
	l.lastSched = mono.Now()
	for {
		timeout := -1
		if l.timed > 0 {
			// Until the nearest deadline: an idle keep-alive
			// connection's is minutes away, and an idle gateway sleeps.
			timeout = int(max(l.nextSweep-l.now, 0)/1e6) + 1
		}
		if len(l.again) > 0 {
			timeout = 0
		}
		if timeout != 0 {
			l.sleeping.Store(true)
			l.mu.Lock()
			if len(l.posts) > 0 || len(l.tasks) > 0 {
				timeout = 0
			}
			l.mu.Unlock()
		}
		n, err := unix.EpollWait(l.epfd, evs[:], timeout)
		l.sleeping.Store(false)
		l.kicked.Store(false)
		if err != nil && err != unix.EINTR {
			panic("gateway: epoll_wait: " + err.Error())
		}
		l.now = mono.Now()
		for i := 0; i < n; i++ {
			if it := l.items[evs[i].Fd]; it != nil {
				it.ready(l, evs[i].Events)
			}
		}
		l.mu.Lock()
		posts, l.posts = l.posts, posts[:0]
		tasks, l.tasks = l.tasks, tasks[:0]
		l.mu.Unlock()
		for i, c := range posts {
			posts[i] = nil
			c.posted(l)
		}
		for i, fn := range tasks {
			tasks[i] = nil
			fn()
		}
		if k := len(l.again); k > 0 {
			again := l.again
			l.again = nil
			for _, it := range again[:k] {
				it.ready(l, 0)
			}
			if l.again == nil {
				l.again = again[:0]
			}
		}
		l.sends.flush()
		if l.timed > 0 && l.now >= l.nextSweep {
			l.sweep()
		}
		// A goroutine that only makes system calls never passes
		// through the scheduler, and the runtime's monitor then takes
		// its processor away at every call it catches (as if it had
		// run for too long), starting threads to run it: a trip
		// through the scheduler now and then stops that.
		if l.now-l.lastSched > schedEvery {
			l.lastSched = l.now
			runtime.Gosched()
		}
	}
}

// sendQueue returns where c's requests leave their descriptors to be
// sent at the end of the loop's round (nil: Send sends them).
func (c *conn) sendQueue() *sendQueue {
	if c.lp == nil {
		return nil
	}
	return &c.lp.sends
}

// schedEvery is how often a loop passes through the Go scheduler.
const schedEvery = int64(5e6)

// sweep ends connections past their deadline, and sets the next sweep
// at the nearest deadline left (sweepEvery from now at the soonest).
func (l *loop) sweep() {
	next := int64(0)
	for c := range l.conns {
		if c.due != 0 && l.now >= c.due {
			c.expired(l)
		}
		if c.due != 0 && (next == 0 || c.due < next) {
			next = c.due
		}
	}
	l.nextSweep = max(next, l.now+sweepEvery)
}

// listenItem is a listener served by the loop: it accepts connections
// and gives each to a loop.
type listenItem struct {
	g    *Gateway
	fd   int
	slot int32
	done chan error
}

// serveLoop serves ln's connections from the event loops, until
// Shutdown. It reports false, having done nothing, when ln is not a
// socket the loops can serve.
func (g *Gateway) serveLoop(ln net.Listener) (error, bool) {
	if g.tls != nil || !loopsOn() {
		return nil, false
	}
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	fd := -1
	raw.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if fd < 0 || err != nil {
		return nil, false
	}
	li := &listenItem{g: g, fd: fd, done: make(chan error, 1)}
	l := loop0()
	l.task(func() {
		slot, err := l.add(fd, unix.EPOLLIN, li)
		if err != nil {
			unix.Close(fd)
			li.done <- err
			return
		}
		li.slot = slot
		g.mu.Lock()
		g.loopLns = append(g.loopLns, func() { l.task(func() { li.close(l, ErrClosed) }) })
		closing := g.closing.Load()
		g.mu.Unlock()
		if closing {
			li.close(l, ErrClosed)
		}
	})
	return <-li.done, true
}

func (li *listenItem) close(l *loop, err error) {
	if li.fd < 0 {
		return
	}
	l.remove(li.fd, li.slot)
	unix.Close(li.fd)
	li.fd = -1
	li.done <- err
}

// acceptBatch bounds the connections accepted per readiness, so a flood
// of connections does not starve the requests of those accepted.
const acceptBatch = 64

func (li *listenItem) ready(l *loop, _ uint32) {
	for range acceptBatch {
		fd, _, errno := syscall.RawSyscall6(unix.SYS_ACCEPT4, uintptr(li.fd), 0, 0,
			unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch errno {
		case 0:
			li.g.adopt(int(fd))
			continue
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED, unix.EPERM, unix.EPROTO:
			continue
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			// Out of file descriptors or memory: the listener stays
			// readable (level-triggered), so try again next round
			// rather than spin now.
			li.g.log.Warn("gateway: accept", "err", errno)
			return
		default:
			li.g.log.Error("gateway: accept", "err", errno)
			li.close(l, errno)
			return
		}
	}
}

// adopt makes socket fd, just accepted, a connection served by a loop.
func (g *Gateway) adopt(fd int) {
	// As Go's listeners do for their connections: no Nagle delay, and
	// keep-alive probes every 15 s.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15)
	c := newConn(g, nil)
	c.fd = fd
	l := pickLoop()
	c.lp = l
	g.mu.Lock()
	if g.closing.Load() {
		g.mu.Unlock()
		unix.Close(fd)
		return
	}
	g.conns[c] = struct{}{}
	g.wg.Add(1)
	g.mu.Unlock()
	if l == loops.l[0] {
		l.attach(c)
	} else {
		l.task(func() { l.attach(c) })
	}
}

// attach starts serving c on l.
func (l *loop) attach(c *conn) {
	slot, err := l.add(c.fd, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET, c)
	if err != nil {
		unix.Close(c.fd)
		c.fd = -1
		c.g.forget(c)
		return
	}
	c.slot = slot
	l.conns[c] = struct{}{}
	c.armIdle(l)
}

// appItem is an app's reply endpoint served by a loop.
type appItem struct {
	a    *App
	p    transport.Poller
	fd   int // a duplicate of the endpoint's socket, watched
	slot int32
	done chan error
	// batch is where replies are received (in the item: a local array
	// handed to an interface's method would be allocated per call).
	batch [transport.MaxBatch]desc.Desc
}

// runLoop receives the app's descriptors on a loop, if its transport lets
// one watch them, until the endpoint is closed; false: it does not.
func (a *App) runLoop() (error, bool) {
	pl, ok := a.conn.(transport.Poller)
	if !ok || !loopsOn() {
		return nil, false
	}
	fd, err := unix.FcntlInt(uintptr(pl.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	it := &appItem{a: a, p: pl, fd: fd, done: make(chan error, 1)}
	l := pickLoop()
	l.task(func() {
		slot, err := l.add(fd, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET, it)
		if err != nil {
			unix.Close(fd)
			it.done <- err
			return
		}
		it.slot = slot
		it.ready(l, 0) // what arrived before
	})
	return <-it.done, true
}

// appBatches bounds the batches of replies taken per readiness, so that
// one app's replies do not starve the loop's other work.
const appBatches = 4

func (it *appItem) ready(l *loop, ev uint32) {
	// The endpoint's Close marks it closed before it shuts the socket
	// down (transport.Poller): the readiness that shutdown raises finds
	// ErrClosed here, so nothing needs a second look.
	for range appBatches {
		n, err := it.p.TryRecv(it.batch[:])
		if err != nil {
			if errors.Is(err, transport.ErrClosed) || it.a.closing.Load() {
				l.remove(it.fd, it.slot)
				unix.Close(it.fd)
				it.done <- nil
				return
			}
			it.a.stats.RecvErrs.Add(1)
			return // edge-triggered: the next delivery tries again
		}
		if n == 0 {
			return
		}
		it.a.handle(it.batch[:n])
		if n < len(it.batch) {
			// A short read took all that was queued: the next
			// delivery raises a new edge (a read now would only see
			// EAGAIN: 40% of the loop's receives at 8 connections).
			return
		}
	}
	l.again = append(l.again, it)
}

// Connection phases on a loop (conn.ph).
const (
	phHead   = iota // reading a request head (or idle between requests)
	phOut           // a request is out in its chain
	phWrite         // the loop writes the rest of a response
	phLinger        // answered and half-closed: draining what the client still sends
)

// setDue sets c's deadline (0: none), keeping the loop's count of timed
// connections.
func (c *conn) setDue(l *loop, due int64) {
	c.idleDue = false
	switch {
	case c.due == 0 && due != 0:
		l.timed++
	case c.due != 0 && due == 0:
		l.timed--
	}
	if due != 0 && (l.timed == 1 || due < l.nextSweep) {
		// The sweep comes at the nearest deadline, sweepEvery from
		// now at the soonest.
		l.nextSweep = max(due, l.now+sweepEvery)
	}
	c.due = due
}

// ready handles readiness of c's socket.
func (c *conn) ready(l *loop, ev uint32) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.canRead = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		// The client's end of stream (or an error) came with this edge,
		// perhaps together with its last bytes: a short read does not
		// take it, so the socket stays readable until a read sees it.
		c.rdhup = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.canWrite = true
	}
	c.step(l)
}

// posted is a post of c from another thread: the answer to its request
// is done (the loop waited for it), or its rest is the loop's to write.
func (c *conn) posted(l *loop) {
	if c.fd < 0 {
		return
	}
	if c.handover {
		c.handover = false
		c.ph = phWrite
		c.canWrite = true
		c.setDue(l, l.now+int64(c.g.header))
	}
	c.step(l)
}

// step goes on with c as far as it can without waiting.
func (c *conn) step(l *loop) {
	for c.fd >= 0 {
		switch c.ph {
		case phOut:
			if c.state.Load() != connIdle {
				if c.r == c.w && !c.canRead && !c.ending {
					// Nothing to do until the client sends more (an
					// event) or the answer is out: the answerer need not
					// post c.
					return
				}
				if c.state.CompareAndSwap(connPending, connWaiting) || c.state.Load() == connWaiting {
					return // the answerer posts c when it is done
				}
			}
			// Answered: on to the next request.
			c.ph = phHead
			if c.closeAfter || c.ending || c.g.closing.Load() {
				c.close(l)
				return
			}
			c.armIdle(l)
		case phWrite:
			if !c.canWrite {
				return
			}
			if !c.writeMore(l) {
				c.canWrite = false
				return
			}
			c.wrote = 0
			c.setDue(l, 0)
			if r := c.rep; r.a != nil {
				// A chain's reply the answerer handed over.
				c.rep = Reply{}
				c.ph = phOut
				c.answered()
				r.Done()
				r.a.bg.Done()
				continue
			}
			c.ph = phHead
			switch {
			case c.lingerAfter:
				c.lingerAfter = false
				c.startLinger(l)
			case c.closeAfter || c.ending || c.g.closing.Load():
				c.close(l)
				return
			default:
				c.armIdle(l)
			}
		case phLinger:
			before := c.lingered
			if !c.drain() {
				c.close(l)
			} else if c.lingered != before {
				c.setDue(l, min(l.now+int64(lingerIdle), c.lingerEnd))
			}
			return
		case phHead:
			if !c.nextRequest(l) {
				return
			}
		}
	}
}

// nextRequest reads and serves the next request of c, if it can now;
// false: it waits (or c is gone).
func (c *conn) nextRequest(l *loop) bool {
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	n := headEnd(c.rbuf[c.r:c.w])
	if n < 0 {
		switch {
		case c.w-c.r >= MaxHeaderBytes:
			c.loopError(l, errHeaderTooLarge)
			return true
		case c.canRead:
			if c.w == len(c.rbuf) {
				c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
				c.r = 0
			}
			k, errno := c.readIn()
			switch {
			case errno == unix.EAGAIN:
				c.canRead = false
				if c.r < c.w {
					c.armHeader(l) // a head has begun: the rest is due
				}
				return false
			case errno == unix.EINTR:
				return true
			case errno != 0 || k == 0:
				c.close(l) // the client is gone (or closed its side between requests)
				return false
			}
			c.read(k)
			return true
		}
		return false
	}
	if n > MaxHeaderBytes {
		c.loopError(l, errHeaderTooLarge)
		return true
	}
	if c.g.tls == nil && c.w-c.r >= len(h2PriLine) && string(c.rbuf[c.r:c.r+len(h2PriLine)]) == string(h2PriLine) {
		c.detach(l)
		return false
	}
	began := l.now
	herr := parseHead(c.rbuf[c.r:c.r+n], &c.req)
	if herr != nil {
		c.r += n
		c.g.count(herr.Status)
		c.loopError(l, herr)
		return true
	}
	length := max(c.req.length, 0)
	if c.req.chunked || c.req.expect || int64(n)+length > int64(len(c.rbuf)) || c.wantsH2C() ||
		c.g.events != nil && c.eventLike() {
		c.detach(l)
		return false
	}
	if int64(c.w-c.r-n) < length {
		// The body is still coming; it fits the read buffer.
		if c.r > 0 {
			c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
			c.r = 0
		}
		if !c.canRead {
			c.armHeader(l)
			return false
		}
		k, errno := c.readIn()
		switch {
		case errno == unix.EAGAIN:
			c.canRead = false
			c.armHeader(l)
			return false
		case errno == unix.EINTR:
			return true
		case errno != 0 || k == 0:
			c.close(l)
			return false
		}
		c.read(k)
		return true
	}
	c.setDue(l, 0)
	c.r += n
	c.busy.Store(true)
	keep := c.run(began)
	if c.state.Load() == connIdle {
		c.busy.Store(false)
	}
	if c.fd < 0 {
		return false
	}
	if !keep || c.req.close {
		switch c.ph {
		case phHead:
			if c.state.Load() == connIdle {
				c.close(l)
				return false
			}
			c.ending = true
		case phWrite:
			c.ending = true
		}
	}
	if c.ph == phHead && c.state.Load() != connIdle {
		c.ph = phOut
	}
	if c.ph == phHead {
		c.armIdle(l)
	}
	return true
}

// armIdle arms c's deadline for its next request to begin.
func (c *conn) armIdle(l *loop) {
	c.setDue(l, l.now+int64(c.g.idle))
	c.idleDue = true
}

// armHeader arms c's deadline for the request that has begun, unless it
// is armed already.
func (c *conn) armHeader(l *loop) {
	if c.due == 0 || c.idleDue {
		c.setDue(l, l.now+int64(c.g.header))
	}
}

// readIn reads from c's socket into the read buffer's room (after c.w),
// without blocking; c.read(k) takes what it read.
func (c *conn) readIn() (uintptr, syscall.Errno) {
	k, _, errno := syscall.RawSyscall(unix.SYS_READ, uintptr(c.fd),
		uintptr(unsafe.Pointer(&c.rbuf[c.w])), uintptr(len(c.rbuf)-c.w))
	return k, errno
}

// read takes k bytes just read into the read buffer. A read that did not
// fill the room it had took all the socket held: then the next bytes to
// arrive raise an event (edge-triggered), and the socket need not be read
// again until they do.
func (c *conn) read(k uintptr) {
	if int(k) < len(c.rbuf)-c.w && !c.rdhup {
		c.canRead = false
	}
	c.w += int(k)
}

// loopError answers e on a loop connection and ends it.
func (c *conn) loopError(l *loop, e *Error) {
	c.writeError(e, nil)
	if e != ErrSilent {
		c.lingerClose()
	} else {
		c.ending = true
	}
	if c.ph == phHead {
		c.step(l)
	}
}

// writeMore writes what is left of c.vec[:c.nvec] without blocking, and
// reports whether all of it is out (or the connection failed: then
// nothing more will be). A write that makes progress pushes the
// deadline on: it bounds a stalled client, not a large answer.
func (c *conn) writeMore(l *loop) bool {
	for {
		c.iovN = 0
		for _, b := range c.vec[:c.nvec] {
			if len(b) > 0 {
				c.iov[c.iovN].Base, c.iov[c.iovN].Len = &b[0], uint64(len(b))
				c.iovN++
			}
		}
		if c.iovN == 0 {
			break
		}
		k, _, errno := syscall.RawSyscall(unix.SYS_WRITEV, uintptr(c.fd), uintptr(unsafe.Pointer(&c.iov[0])), uintptr(c.iovN))
		switch errno {
		case 0:
		case unix.EAGAIN:
			return false
		case unix.EINTR:
			continue
		default:
			// The client is gone: nothing more goes out.
			unix.Shutdown(c.fd, unix.SHUT_RDWR)
			c.ending = true
			clear(c.vec[:c.nvec])
			c.nvec = 0
			return true
		}
		w := int(k)
		for j := range c.vec[:c.nvec] {
			d := min(w, len(c.vec[j]))
			c.vec[j] = c.vec[j][d:]
			w -= d
		}
		if c.due != 0 && k > 0 {
			c.due = l.now + int64(c.g.header)
		}
	}
	clear(c.vec[:c.nvec])
	c.nvec = 0
	return true
}

// loopWrite writes a response the gateway makes itself (head o and
// body) from the loop: what the socket does not take now is written as it
// drains.
func (c *conn) loopWrite(o, body []byte) {
	c.vec[0], c.vec[1], c.nvec = o, body, 2
	if c.writeMore(c.lp) {
		return
	}
	c.ph = phWrite
	c.setDue(c.lp, c.lp.now+int64(c.g.header))
}

// handOver gives the rest of reply r's response (c.vec, after c.wrote
// bytes) to the loop to write, from the thread that answered.
func (c *conn) handOver(r Reply) {
	w := c.wrote
	for i := range c.vec[:c.nvec] {
		k := min(w, len(c.vec[i]))
		c.vec[i] = c.vec[i][k:]
		w -= k
	}
	c.rep = r
	c.handover = true
	r.a.bg.Add(1) // App.Close waits for it: the loop reads the pool buffer
	c.lp.post(c)
}

// startLinger half-closes c after its answer and drains what the client
// still sends, while it keeps sending, within bounds (see lingerClose),
// before it closes.
func (c *conn) startLinger(l *loop) {
	if unix.Shutdown(c.fd, unix.SHUT_WR) != nil {
		c.close(l)
		return
	}
	c.ph = phLinger
	c.lingered = 0
	c.canRead = true
	c.lingerEnd = l.now + int64(lingerTime)
	c.setDue(l, l.now+int64(lingerIdle))
	if !c.drain() {
		c.close(l)
	}
}

// drain reads and drops what the client sends; false: done (end of
// stream, an error, or the bound reached).
func (c *conn) drain() bool {
	for c.canRead {
		k, _, errno := syscall.RawSyscall(unix.SYS_READ, uintptr(c.fd),
			uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch {
		case errno == unix.EAGAIN:
			c.canRead = false
		case errno == unix.EINTR:
		case errno != 0 || k == 0:
			return false
		default:
			if c.lingered += int(k); c.lingered >= lingerBytes {
				return false
			}
		}
	}
	return true
}

// expired ends c, past its deadline.
func (c *conn) expired(l *loop) {
	switch c.ph {
	case phWrite:
		// The client does not read its response: give up on it.
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
		clear(c.vec[:c.nvec])
		c.nvec = 0
		c.canWrite = true
		c.ending = true
		c.step(l)
	case phOut:
		c.setDue(l, 0)
	default:
		c.close(l)
	}
}

// close ends c: a request still out is answered first (c closes when it
// is).
func (c *conn) close(l *loop) {
	if c.fd < 0 {
		return
	}
	if c.ph == phOut || c.ph == phWrite {
		c.ending = true
		unix.Shutdown(c.fd, unix.SHUT_RD)
		if c.ph == phOut {
			c.step(l)
		}
		return
	}
	c.setDue(l, 0)
	l.remove(c.fd, c.slot)
	unix.Close(c.fd)
	c.fd = -1
	delete(l.conns, c)
	c.g.forget(c)
}

// detach hands c over to a goroutine of its own, which serves it from its
// next request on (read again from the read buffer).
func (c *conn) detach(l *loop) {
	c.setDue(l, 0)
	l.remove(c.fd, c.slot)
	delete(l.conns, c)
	f := os.NewFile(uintptr(c.fd), "")
	c.fd = -1
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		c.g.forget(c)
		return
	}
	c.setConn(nc) // and c.lp = nil
	go c.serveRest()
}

// closeLoop closes c on its loop when it is idle, for Shutdown (force:
// now, whatever it is doing).
func (c *conn) closeLoop(force bool) {
	l := c.lp
	if l == nil {
		return
	}
	l.task(func() {
		if c.fd < 0 || c.lp != l {
			return
		}
		if force {
			unix.Shutdown(c.fd, unix.SHUT_RDWR)
			c.close(l)
			return
		}
		switch {
		case c.ph == phHead && c.r == c.w:
			c.close(l)
		case c.ph == phOut:
			// Closed once answered (the answerer posts c).
			c.ending = true
			c.step(l)
		}
	})
}
