// Command rogue is a test function that misbehaves on request, the way a
// broken or hostile process of an app can (cmd/spry/rogue_test.go). Its
// input names what to do:
//
//	route     write out-of-range slot bases over every function of the
//	          routing table (with its own read-write mapping of the pool:
//	          the SDK's read-only view is no obstacle to a process that maps
//	          the memfd again), then answer "done"
//	forge:D   for D (a Go duration), send the app's gateway forged replies:
//	          one for every buffer the gateway holds, at that buffer's
//	          generation, as fast as it can; then answer "done"
//	handoff   begin handing the request's buffer to the next step's
//	          instance as the SDK's forward does, up to the send (see
//	          handoff.go), and die there (kill -9 of itself)
//	keep      take a buffer of the pool and hold it for good, and write
//	          its own stats slot's Keeps (state kept between requests,
//	          which the node honours only for builtins that keep state),
//	          then answer "done"
//
// Anything else is answered upper-cased. With $ROGUE_STALL set it never
// becomes ready (a cold start that does not end).
//
// It uses only what the pool and the transports offered before issue 17,
// so the same program reproduces the defects on older code.
package main

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/sdkhook"
	"github.com/spry-dev/spry/internal/transport"
	"github.com/spry-dev/spry/sdk"
)

func main() {
	if os.Getenv("ROGUE_STALL") != "" {
		time.Sleep(time.Hour)
	}
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		in := string(req.Payload())
		verb, arg, _ := strings.Cut(in, ":")
		switch verb {
		case "route":
			scribbleRoute()
		case "forge":
			d, _ := time.ParseDuration(arg)
			forge(d)
		case "handoff":
			dieHandingOff(req)
		case "keep":
			keep(req)
		default:
			_, err := res.WriteString(strings.ToUpper(in))
			return err
		}
		_, err := res.WriteString("done")
		return err
	})
}

// mapPool maps the app's pool read-write.
func mapPool() []byte {
	fd, err := strconv.Atoi(os.Getenv(sdk.EnvPoolFD))
	if err != nil {
		panic(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		panic(err)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		panic(err)
	}
	return mem
}

// scribbleRoute writes huge slot bases and counts into every function's
// entry of the routing table: {base, max, hwm} after the 64-byte header,
// 16 bytes each (the pool header holds the routing region's offset at 48
// and the function count at 24).
func scribbleRoute() {
	mem := mapPool()
	route := binary.LittleEndian.Uint64(mem[48:])
	fns := binary.LittleEndian.Uint32(mem[24:])
	for i := range uint64(fns) {
		e := mem[route+64+16*i:]
		binary.LittleEndian.PutUint32(e[0:], 0x40000000)
		binary.LittleEndian.PutUint32(e[4:], 0x40000000)
		binary.LittleEndian.PutUint32(e[8:], 0x40000000)
	}
	unix.Munmap(mem)
}

// forge sends the gateway a reply for every buffer it holds, over and over
// for d, through an endpoint of the instance's own.
func forge(d time.Duration) {
	fd, err := strconv.Atoi(os.Getenv(sdk.EnvPoolFD))
	if err != nil {
		panic(err)
	}
	p, err := pool.Attach(fd)
	if err != nil {
		panic(err)
	}
	c, err := transport.Attach(os.Getenv, p)
	if err != nil {
		panic(err)
	}
	self, _ := strconv.Atoi(os.Getenv(transport.EnvID))
	gw := p.Gateway()
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := range p.Buffers() {
			h := p.Header(i)
			if uint16(h.Owner()) == gw {
				c.Send(desc.Desc{Dst: gw, Src: uint16(self), Buf: i, Gen: h.Gen(), Flags: desc.FlagReply})
			}
		}
	}
}

// dieHandingOff finds the buffer of req (the one this instance holds with
// req's id), picks the next step's instance as forward does, counts the
// descriptor in its queue, does what the handing-on does before the send
// (handoff), and dies.
func dieHandingOff(req *sdk.Request) {
	fd, err := strconv.Atoi(os.Getenv(sdk.EnvPoolFD))
	if err != nil {
		panic(err)
	}
	p, err := pool.Attach(fd)
	if err != nil {
		panic(err)
	}
	self, _ := strconv.Atoi(os.Getenv(transport.EnvID))
	for i := range p.Buffers() {
		h := p.Header(i)
		if uint16(h.Owner()) != uint16(self) || h.ReqID() != req.ID() {
			continue
		}
		fn, ok := p.Step(h.Chain(), req.Hop()+1)
		if !ok {
			panic("rogue: handoff needs a next step")
		}
		slot, dst, ok := p.Pick(fn, 0)
		if !ok {
			panic("rogue: no instance of the next step")
		}
		p.Stats(slot).Queue.Add(1)
		handoff(p, i, uint16(self), dst)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	panic("rogue: the request's buffer not found")
}

// keep holds a buffer of its own for good and says, in its stats slot, that
// it keeps state between requests.
func keep(req *sdk.Request) {
	p, self, _ := sdkhook.Pool(req)
	if _, ok := p.Alloc(self); !ok {
		panic("rogue: no buffer to keep")
	}
	sdkhook.Keeper(req)(1)
}
