package peer

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/gateway"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
)

// link is one TCP connection to another node. A link this node dialed
// (out) carries its requests out and their replies back, and its pings; a
// link it accepted (in) carries the other node's requests in and their
// replies out, its pongs and this node's load reports.
//
// The link's reader goroutine reads frames and acts on them: it admits a
// request into the local gateway (its body read from the socket straight
// into a pool buffer), or writes a reply into the buffer of the request
// that waits for it. Everything written goes through the link's queue and
// out in whole batches, one writev each, bodies straight from the pool
// buffers that hold them. Whoever queues a frame while nobody writes
// writes the queue itself, at once, without blocking (the writing token:
// one writer at a time, and it writes what others queued meanwhile too):
// a request or a reply leaves on the thread that produced it, with no
// wake-up of another thread in between. What the socket does not take at
// once goes to the link's writer goroutine with the token, which writes
// the rest blocking and then the queue, until it is empty.
type link struct {
	hub  *Hub
	peer string // the other node's name
	nc   net.Conn
	out  bool // dialed by this node
	br   *bufio.Reader

	mu      sync.Mutex
	q       []frame // frames waiting for the writer
	writing bool    // the writing token is taken (by a writer of the queue)
	handoff bool    // the token is handed to the writer goroutine (half: with a half-written batch)
	down    bool
	wake    chan struct{}
	quit    chan struct{} // closed when the link goes down
	wdone   chan struct{} // closed when the writer is gone (and released what it held)

	busy  atomic.Bool // in: a request came since the last load report
	loads atomic.Pointer[loadReport]

	// Counters, for status.
	sent, received, failed atomic.Uint64
	handoffs               atomic.Uint64 // writes the socket took only part of at once
	open                   atomic.Int64  // requests open on the link (maxOpen)
	since                  time.Time

	// The token holder's: the batch being written, and what one writev
	// writes (vec: the batch's parts; iov: the same as iovecs; rest: what
	// is left of vec after a short write).
	batch []frame
	half  bool // the batch is half written: rest is what is left
	vec   net.Buffers
	rest  net.Buffers
	iov   []unix.Iovec
	rc    syscall.RawConn
	tryFn func(fd uintptr) bool
	tryN  int
	tryE  error

	// The reader's own.
	hd      [headSize]byte
	scratch []byte
	body    wireBody
	cont    continuation
	graph   graphPart
	call    pool.CallFrame
	req     gateway.Request
	deadSet int64 // when the read deadline was last pushed (mono ns)
}

// frame is one frame waiting to be written: its head and small parts in
// the frame, its metadata and body as slices of the pool buffer that holds
// them (held until written), or of own (a message).
type frame struct {
	hd     [headSize]byte
	times  [pool.MaxHops * 16]byte
	nt     int
	parts  [6][]byte // after the head: names, content type, metadata (the times follow them)
	np     int
	body   []byte
	more   [][]byte      // the body's further pieces, then a join's inputs' (kept across reuses)
	graph  []byte        // a request's graph part (frame.go; kept across reuses)
	own    []byte        // a message body the frame owns (kept across reuses)
	rep    gateway.Reply // a reply: Done once written or dropped
	hasRep bool          //
	app    *App          // a request: its app and entry, marked sent once written
	buf    uint32        //
	seq    uint16        //
}

func newLink(h *Hub, peer string, nc net.Conn, out bool) *link {
	l := &link{hub: h, peer: peer, nc: nc, out: out, br: bufio.NewReaderSize(nc, 64<<10),
		wake: make(chan struct{}, 1), quit: make(chan struct{}), wdone: make(chan struct{}),
		scratch: make([]byte, maxExtra+maxGraph+maxRefusal), since: time.Now()}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if sc, ok := nc.(syscall.Conn); ok {
		l.rc, _ = sc.SyscallConn()
	}
	l.tryFn = l.tryWritev
	l.body.l = l
	return l
}

// run serves the link until it goes down: the writer in a goroutine, the
// reader here. When it returns, everything the link held is released and,
// for an out-link, the requests waiting for a reply on it are answered
// 502.
func (l *link) run() error {
	go l.writeLoop()
	err := l.readLoop()
	l.close()
	<-l.wdone
	if l.out {
		l.hub.lost(l, err)
	}
	return err
}

// close takes the link down: the socket is closed (a blocked read or write
// returns) and the writer releases what it holds.
func (l *link) close() {
	l.mu.Lock()
	if l.down {
		l.mu.Unlock()
		return
	}
	l.down = true
	l.mu.Unlock()
	close(l.quit)
	l.nc.Close()
}

func (l *link) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// enqueue adds a frame built by fill to the queue, or reports false when
// the link is down. fill runs under the queue's lock: keep it short. When
// nobody is writing, the caller writes the queue at once (flush), without
// blocking.
func (l *link) enqueue(fill func(f *frame)) bool {
	l.mu.Lock()
	if l.down {
		l.mu.Unlock()
		return false
	}
	if len(l.q) < cap(l.q) {
		l.q = l.q[:len(l.q)+1]
	} else {
		l.q = append(l.q, frame{})
	}
	f := &l.q[len(l.q)-1]
	f.reset()
	fill(f)
	if l.writing {
		l.mu.Unlock() // the token's holder writes it
		return true
	}
	l.writing = true
	if l.open.Load() > maxOpen {
		// A deep pipeline: the writer goroutine batches what queues
		// while it wakes (one writev for many frames).
		l.handoff = true
		l.mu.Unlock()
		l.poke()
		return true
	}
	l.mu.Unlock()
	l.flush()
	return true
}

// maxOpen is the number of requests open on a link (out: sent, not yet
// answered; in: admitted, not yet answered) above which frames are left
// to the writer goroutine rather than written by whoever queues them:
// with many requests under way the node is busy, and one write per batch
// costs less than one per frame; with few, the wake-up of another thread
// is what a hop waits for.
const maxOpen = 16

// flush writes the queue until it is empty, without blocking; the caller
// holds the writing token and gives it back, or hands it to the writer
// goroutine: when the socket takes only part of a batch (with the rest),
// or when others kept the queue full for maxInline batches (so that no
// thread writes for others for long).
func (l *link) flush() {
	for range maxInline {
		if !l.take() {
			return
		}
		l.fillVec()
		done, err := l.tryWrite()
		if err == nil && !done {
			l.half = true
			l.handoffs.Add(1)
			break
		}
		l.finish(err)
	}
	l.mu.Lock()
	l.handoff = true
	l.mu.Unlock()
	l.poke()
}

// maxInline bounds the batches one flush writes.
const maxInline = 4

// take moves the queue into the token holder's batch, or gives the token
// back when the queue is empty (or the link down: the writer goroutine
// releases what is queued) and reports false.
func (l *link) take() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.q) == 0 || l.down {
		l.writing = false
		return false
	}
	l.batch, l.q = l.q, l.batch[:0]
	return true
}

// fillVec lists the batch's parts in l.vec.
func (l *link) fillVec() {
	vec := l.vec[:0]
	for i := range l.batch {
		f := &l.batch[i]
		vec = append(vec, f.hd[:])
		for _, p := range f.parts[:f.np] {
			vec = append(vec, p)
		}
		if f.nt > 0 {
			vec = append(vec, f.times[:f.nt])
		}
		if len(f.graph) > 0 {
			vec = append(vec, f.graph)
		}
		if len(f.body) > 0 {
			vec = append(vec, f.body)
		}
		for _, b := range f.more {
			if len(b) > 0 {
				vec = append(vec, b)
			}
		}
	}
	l.vec = vec
}

// maxIov bounds the iovecs of one writev (the kernel's IOV_MAX).
const maxIov = 1024

// tryWrite writes l.vec without blocking; it reports whether all of it
// went, and otherwise leaves what did not in l.rest.
func (l *link) tryWrite() (bool, error) {
	l.rest = l.vec
	if l.rc == nil {
		_, err := l.rest.WriteTo(l.nc) // not a socket (tests): blocking
		return true, err
	}
	for len(l.rest) > 0 {
		iov := l.iov[:0]
		for _, b := range l.rest[:min(len(l.rest), maxIov)] {
			if len(b) > 0 {
				iov = append(iov, unix.Iovec{Base: &b[0], Len: uint64(len(b))})
			}
		}
		l.iov = iov
		l.tryN, l.tryE = 0, nil
		if err := l.rc.Write(l.tryFn); err != nil {
			return false, err
		}
		clear(iov)
		switch {
		case l.tryE == unix.EAGAIN:
			return false, nil
		case l.tryE != nil:
			return false, l.tryE
		}
		l.consume(l.tryN)
		if l.tryN == 0 {
			return false, nil
		}
	}
	return true, nil
}

// tryWritev is tryWrite's one writev (a syscall.RawConn write function).
func (l *link) tryWritev(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&l.iov[0])), uintptr(len(l.iov)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			l.tryE = e
		} else {
			l.tryN = int(n)
		}
		return true // never wait: what is left goes to the writer goroutine
	}
}

// consume drops n written bytes from the front of l.rest.
func (l *link) consume(n int) {
	for len(l.rest) > 0 && n >= len(l.rest[0]) {
		n -= len(l.rest[0])
		l.rest = l.rest[1:]
	}
	if n > 0 {
		l.rest[0] = l.rest[0][n:]
	}
}

// finish ends the batch: each frame written (err nil) is counted and its
// request marked sent; every frame lets go of what it holds. A failed
// write closes the socket: the reader fails and takes the link down.
func (l *link) finish(err error) {
	for i := range l.batch {
		f := &l.batch[i]
		if err == nil {
			l.sent.Add(1)
			if f.app != nil {
				f.app.sent(f.buf, f.seq)
			}
		}
		f.release()
	}
	clear(l.vec)
	l.rest = nil
	if err != nil {
		l.nc.Close()
	}
}

func (f *frame) reset() {
	own, more, graph := f.own[:0], f.more[:0], f.graph[:0]
	*f = frame{own: own, more: more, graph: graph}
}

// addBody adds the payload of buffer buf, every piece of it, to what the
// frame writes after its body, and returns its length.
func (f *frame) addBody(p *pool.Pool, buf uint32) int {
	n := 0
	for i := range p.Pieces(buf) {
		b := p.Piece(buf, i)
		f.more = append(f.more, b)
		n += len(b)
	}
	return n
}

// add appends a part to be written after the head (and before the times).
func (f *frame) add(b []byte) {
	if len(b) > 0 {
		f.parts[f.np] = b
		f.np++
	}
}

// release lets go of what a frame holds that was not written: a reply's
// buffer and entry go back, a request stays with its app (the caller
// answers it).
func (f *frame) release() {
	if f.hasRep {
		f.hasRep = false
		f.rep.Done()
	}
	if f.app != nil {
		f.app.queued.Add(-1)
		f.app = nil
	}
	f.body, f.parts = nil, [6][]byte{}
	clear(f.more)
	f.more = f.more[:0]
}

// writeLoop writes queued frames in batches until the link goes down, and
// sends an out-link's pings.
func (l *link) writeLoop() {
	defer close(l.wdone)
	keep := l.hub.cfg.Keepalive
	tick := time.NewTicker(l.tickEvery())
	defer tick.Stop()
	lastPing, lastLoad := mono.Now(), mono.Now()
	for {
		select {
		case <-l.wake:
		case <-tick.C:
			now := mono.Now()
			if l.out && now-lastPing >= int64(keep) {
				lastPing = now
				l.enqueue(func(f *frame) { (&head{typ: framePing}).put(f.hd[:]) })
			}
			if !l.out && l.busy.Load() && now-lastLoad >= int64(loadEvery) {
				lastLoad = now
				l.busy.Store(false)
				l.sendLoad()
			}
			continue
		case <-l.quit:
			// Wait for the token: a writer of the queue may still be in
			// its write (the socket is closed: it fails at once); then no
			// one writes from the pool again.
			for {
				l.mu.Lock()
				if !l.writing || l.handoff {
					l.writing, l.handoff = true, false
					break
				}
				l.mu.Unlock()
				time.Sleep(50 * time.Microsecond)
			}
			rest := l.q
			l.q = nil
			l.mu.Unlock()
			if l.half {
				l.half = false
				l.finish(net.ErrClosed) // the half-written batch handed over
			}
			for i := range rest {
				rest[i].release()
			}
			return
		}
		l.mu.Lock()
		mine := l.handoff
		l.handoff = false
		l.mu.Unlock()
		if !mine {
			continue
		}
		// The token (maybe with a half-written batch): write the rest,
		// blocking, then the queue until it is empty.
		if l.half {
			l.half = false
			_, err := l.rest.WriteTo(l.nc)
			l.finish(err)
		}
		for l.take() {
			l.fillVec()
			l.rest = l.vec // WriteTo consumes its receiver: l.vec keeps the backing array
			_, err := l.rest.WriteTo(l.nc)
			l.finish(err)
		}
	}
}

// tickEvery is how often the writer looks at its timers.
func (l *link) tickEvery() time.Duration {
	if l.out {
		return l.hub.cfg.Keepalive
	}
	return loadEvery
}

// maxRefusal bounds the message of a refused request's reply.
const maxRefusal = 4096

// loadEvery is how often a node reports its load on a link that carried
// requests since the last report.
const loadEvery = 100 * time.Millisecond

// sendLoad queues a load report of every app of this node.
func (l *link) sendLoad() {
	l.enqueue(func(f *frame) {
		f.own = l.hub.loadReport(f.own[:0])
		(&head{typ: frameLoad, bodyLen: uint32(len(f.own))}).put(f.hd[:])
		f.body = f.own
	})
}

// readLoop reads frames until the link fails.
func (l *link) readLoop() error {
	var h head
	for {
		l.pushDeadline()
		if _, err := io.ReadFull(l.br, l.hd[:]); err != nil {
			return err
		}
		if err := h.get(l.hd[:]); err != nil {
			return err
		}
		l.received.Add(1)
		var err error
		switch {
		case h.typ == frameRequest && !l.out:
			err = l.admit(&h)
		case h.typ == frameReply && l.out:
			err = l.reply(&h)
		case h.typ == framePing && !l.out:
			l.enqueue(func(f *frame) { (&head{typ: framePong, tag: h.tag}).put(f.hd[:]) })
		case h.typ == framePong && l.out:
		case h.typ == frameLoad && l.out:
			err = l.readLoad(&h)
		default:
			err = errFrame // a frame the other direction carries
		}
		if err != nil {
			return err
		}
	}
}

// pushDeadline keeps the read deadline 3 keepalives ahead (refreshed when
// half a keepalive passed, not on every frame): a link on which nothing
// arrives that long is down.
func (l *link) pushDeadline() {
	now := mono.Now()
	keep := l.hub.cfg.Keepalive
	if now-l.deadSet < int64(keep/2) {
		return
	}
	l.deadSet = now
	l.nc.SetReadDeadline(time.Now().Add(3 * keep))
}

// discard reads and drops n bytes.
func (l *link) discard(n int) error {
	for n > 0 {
		k, err := l.br.Discard(n)
		n -= k
		if err != nil {
			return err
		}
	}
	return nil
}

// ---- the accepting side: requests in, replies out ----

// continuation writes a continued request's header (gateway.Continuation):
// its metadata, hop times, status, and the join frames of the fan-outs it
// is a branch of (a call's answer goes to its caller: it has none).
type continuation struct {
	h     *head
	meta  []byte
	times []byte
	g     *graphPart // nil: a step of a line
	now   int64
}

func (c *continuation) WriteHeader(hdr *pool.BufHeader) bool {
	if len(c.meta) > pool.MaxMeta {
		return false
	}
	hdr.SetRawMeta(c.meta)
	setTimes(hdr, c.times, c.now)
	hdr.SetStatus(c.h.status)
	hdr.SetFlags(c.h.flags & pool.FlagContentType)
	if c.g != nil {
		for _, f := range c.g.frames[:c.g.depth] {
			hdr.PushFrame(f)
		}
	}
	return true
}

// wireBody reads a request's body, and a join's inputs, from the link into
// the pool (gateway.Body, gateway.Inputs). left is what the frame still
// holds of them.
type wireBody struct {
	l    *link
	n    int
	g    *graphPart
	left uint64
	err  error
}

func (b *wireBody) ReadBody(dst []byte) (int, *gateway.Error) {
	if b.n > len(dst) {
		return 0, gateway.ErrTooLarge
	}
	if !b.read(dst[:b.n]) {
		return 0, gateway.ErrSilent
	}
	return b.n, nil
}

// read reads len(dst) bytes of the frame.
func (b *wireBody) read(dst []byte) bool {
	if _, err := io.ReadFull(b.l.br, dst); err != nil {
		b.err = err
		return false
	}
	b.left -= uint64(len(dst))
	return true
}

// ReadInputs reads a join's inputs, each into a buffer of its own that
// holder holds (gateway.Inputs): arrived, status and content type as the
// other node's join had them.
func (b *wireBody) ReadInputs(p *pool.Pool, holder uint16, in []pool.Ref) (pool.JoinInfo, *gateway.Error) {
	g := b.g
	for i := range g.width {
		w := &g.in[i]
		if !w.arrived {
			continue
		}
		buf, ok := p.Alloc(holder)
		if !ok {
			freeRefs(p, holder, in[:i])
			return pool.JoinInfo{}, gateway.ErrNoBuffer
		}
		if p.Reserve(buf, uint64(w.n), false) != nil {
			p.Free(buf, holder)
			freeRefs(p, holder, in[:i])
			return pool.JoinInfo{}, gateway.ErrNoRoom
		}
		if !b.read(p.Room(buf)[:w.n]) {
			p.Free(buf, holder)
			freeRefs(p, holder, in[:i])
			return pool.JoinInfo{}, gateway.ErrSilent
		}
		h := p.Header(buf)
		h.SetStatus(w.status)
		h.SetContentType(w.ctype)
		if len(w.ctype) > 0 {
			h.SetFlags(pool.FlagContentType)
		}
		in[i] = pool.Ref{Idx: buf, Gen: h.Gen()}
	}
	return g.info, nil
}

// freeRefs frees the buffers of in (Ref{}: none) that holder holds.
func freeRefs(p *pool.Pool, holder uint16, in []pool.Ref) {
	for i, r := range in {
		if r != (pool.Ref{}) {
			p.Free(r.Idx, holder)
			in[i] = pool.Ref{}
		}
	}
}

// admit runs a request from the other node through the local gateway.
func (l *link) admit(h *head) error {
	l.busy.Store(true)
	l.open.Add(1) // until its reply is queued (Reply, refuse)
	x := l.scratch[:h.extra()]
	if _, err := io.ReadFull(l.br, x); err != nil {
		return err
	}
	now := mono.Now()
	app, x := x[:h.appLen], x[h.appLen:]
	chain, x := x[:h.chainLen], x[h.chainLen:]
	fn, x := x[:h.fnLen], x[h.fnLen:]
	ctype, x := x[:h.ctypeLen], x[h.ctypeLen:]
	meta, times := x[:h.metaLen], x[h.metaLen:]
	var g *graphPart
	if h.flags&wireGraph != 0 {
		g = &l.graph
		if err := l.readGraph(h, l.scratch[len(l.scratch)-maxRefusal-maxGraph:], now); err != nil {
			return err
		}
	}
	ch, fi, why := l.hub.resolve(app, chain, fn, h.hop, g)
	if ch == nil {
		if err := l.discard(int(h.bodyLen)); err != nil {
			return err
		}
		l.refuse(h.tag, 503, why)
		return nil
	}
	n := uint64(h.bodyLen)
	if g != nil {
		n -= g.inLen // readGraph checked that the inputs fit
	}
	l.cont = continuation{h: h, meta: meta, times: times, g: g, now: now}
	l.body = wireBody{l: l, n: int(n), g: g, left: uint64(h.bodyLen)}
	l.req = gateway.Request{
		Chain: ch, Hop: h.hop, Local: true, Continue: &l.cont, ContentType: ctype,
		Length: int64(n), Body: &l.body, Began: now, Deadline: now + max(h.left, 0),
		Reply: l, Tag: h.tag,
	}
	switch {
	case g != nil && g.call:
		l.call = pool.CallFrame{Callee: fi, Depth: g.callDepth}
		l.req.Call = &l.call
	case g != nil && g.width > 0:
		l.req.Inputs = &l.body
	}
	if h.left <= 0 {
		l.req.Deadline = now // past already: answered 504 at once
	}
	err := l.hub.cfg.Gateway.Admit(&l.req)
	if l.body.err != nil {
		return l.body.err
	}
	if err == nil {
		return nil
	}
	if derr := l.discard(int(l.body.left)); derr != nil {
		return derr
	}
	l.refuseErr(h.tag, &l.req, err)
	return nil
}

// readGraph reads a request's graph part (frame.go) into l.graph, using
// b for its bytes, and checks it against the head.
func (l *link) readGraph(h *head, b []byte, now int64) error {
	g := &l.graph
	if _, err := io.ReadFull(l.br, b[:graphFixed]); err != nil {
		return err
	}
	n, err := g.getFixed(b)
	if err != nil {
		return err
	}
	if g.call != (h.hop == pool.CallNode) {
		return errFrame
	}
	if _, err := io.ReadFull(l.br, b[:n]); err != nil {
		return err
	}
	ct := g.get(b[:n], now)
	if g.inLen > uint64(h.bodyLen) {
		return errFrame
	}
	types := b[n : n+ct]
	if _, err := io.ReadFull(l.br, types); err != nil {
		return err
	}
	g.setTypes(types)
	return nil
}

// refuse answers a request with status and a message, marked refused: no
// step ran here.
func (l *link) refuse(tag uint64, status uint16, msg string) {
	l.open.Add(-1)
	l.enqueue(func(f *frame) {
		f.own = append(append(f.own[:0], "spry: "...), msg...)
		f.own = append(f.own, '\n')
		l.errFrame(f, tag, status)
	})
}

func (l *link) refuseErr(tag uint64, r *gateway.Request, e *gateway.Error) {
	l.open.Add(-1)
	l.enqueue(func(f *frame) {
		f.own = r.AppendMessage(f.own[:0], e)
		l.errFrame(f, tag, uint16(e.Status))
	})
}

var textPlain = []byte("text/plain; charset=utf-8")

func (l *link) errFrame(f *frame, tag uint64, status uint16) {
	(&head{typ: frameReply, hop: replyRefused, bodyLen: uint32(len(f.own)), tag: tag, status: status,
		ctypeLen: uint8(len(textPlain)), flags: pool.FlagContentType}).put(f.hd[:])
	f.add(textPlain)
	f.body = f.own
}

// Reply sends the answer to a request the other node handed over (see
// gateway.Replier): queued for the writer, which calls r.Done once it is
// written.
func (l *link) Reply(r gateway.Reply) {
	l.open.Add(-1)
	ok := l.enqueue(func(f *frame) {
		hd := head{typ: frameReply, tag: r.Tag(), status: uint16(r.Status())}
		if bh := r.Header(); bh != nil {
			ct, meta := bh.ContentType(), bh.RawMeta()
			hd.ctypeLen, hd.metaLen, hd.flags = uint8(len(ct)), uint16(len(meta)), bh.Flags()&pool.FlagContentType
			f.add(ct)
			f.add(meta)
		} else {
			hd.ctypeLen, hd.flags = uint8(len(textPlain)), pool.FlagContentType
			f.add(textPlain)
		}
		f.body = r.Body()
		hd.bodyLen = uint32(len(f.body))
		hd.put(f.hd[:])
		f.rep, f.hasRep = r, true
	})
	if !ok {
		r.Done() // the other node is gone: nobody waits for it
	}
}

// ---- the dialing side: replies in ----

// reply writes a reply into the buffer of the request that waits for it
// and hands it to the gateway.
func (l *link) reply(h *head) error {
	a, e, seq := l.hub.entry(h.tag)
	if a == nil {
		return l.discard(h.extra() + int(h.bodyLen))
	}
	defer a.fill.RUnlock()
	if !e.take(seq, l) {
		a.stats.Late.Add(1)
		return l.discard(h.extra() + int(h.bodyLen))
	}
	buf := uint32(h.tag)
	if h.hop&replyRefused != 0 {
		// Refused there before anything ran: another node may take it.
		x := l.scratch[:h.extra()]
		if _, err := io.ReadFull(l.br, x); err != nil {
			a.failTaken(buf, e, 502, "spry: the link to node "+l.peer+" broke while it answered")
			return err
		}
		if h.bodyLen > maxRefusal {
			a.failTaken(buf, e, 502, "spry: node "+l.peer+" refused the request with an oversized message")
			return errFrame
		}
		msg := l.scratch[len(x) : len(x)+int(h.bodyLen)]
		if _, err := io.ReadFull(l.br, msg); err != nil {
			a.failTaken(buf, e, 502, "spry: the link to node "+l.peer+" broke while it answered")
			return err
		}
		if a.reship(buf, e) {
			return nil
		}
		a.answer(buf, e, h, x[h.ctypeLen:], x[:h.ctypeLen], msg)
		return nil
	}
	p := a.pool
	if int(h.bodyLen) > int(p.BufferSize()) {
		a.failTaken(buf, e, 502, "spry: node "+l.peer+" answered with a body larger than a pool buffer")
		return l.discard(h.extra() + int(h.bodyLen))
	}
	x := l.scratch[:h.extra()]
	if _, err := io.ReadFull(l.br, x); err != nil {
		a.failTaken(buf, e, 502, "spry: the link to node "+l.peer+" broke while it answered")
		return err
	}
	body := p.Buffer(buf)[:h.bodyLen]
	if _, err := io.ReadFull(l.br, body); err != nil {
		a.failTaken(buf, e, 502, "spry: the link to node "+l.peer+" broke while it answered")
		return err
	}
	a.answer(buf, e, h, x[h.ctypeLen:], x[:h.ctypeLen], nil)
	return nil
}

// loadReport is a node's last load report, by app: per function index,
// what waits at and runs in its ready instances, and how many are ready.
type loadReport struct {
	at   int64 // mono ns
	apps map[string][]fnLoad
}

type fnLoad struct {
	waiting uint32
	ready   uint16
}

// readLoad reads a load report.
func (l *link) readLoad(h *head) error {
	b := make([]byte, h.bodyLen)
	if _, err := io.ReadFull(l.br, b); err != nil {
		return err
	}
	r := &loadReport{at: mono.Now(), apps: map[string][]fnLoad{}}
	for len(b) > 0 {
		n := int(b[0])
		if len(b) < 1+n+2 {
			return errFrame
		}
		name := string(b[1 : 1+n])
		k := int(binary.LittleEndian.Uint16(b[1+n:]))
		b = b[3+n:]
		if len(b) < 8*k {
			return errFrame
		}
		fl := make([]fnLoad, k)
		for i := range fl {
			fl[i] = fnLoad{waiting: binary.LittleEndian.Uint32(b[8*i:]), ready: binary.LittleEndian.Uint16(b[8*i+4:])}
		}
		b = b[8*k:]
		r.apps[name] = fl
	}
	l.loads.Store(r)
	return nil
}

// load returns what the other node last reported of function fn of app,
// and whether the report is recent.
func (l *link) load(app string, fn int) (fnLoad, bool) {
	r := l.loads.Load()
	if r == nil || mono.Now()-r.at > int64(2*time.Second) {
		return fnLoad{}, false
	}
	fl, ok := r.apps[app]
	if !ok || fn >= len(fl) {
		return fnLoad{}, false
	}
	return fl[fn], true
}
