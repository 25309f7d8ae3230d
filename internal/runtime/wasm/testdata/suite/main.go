// Command suite is the guest the sandbox host's tests run: one handler
// whose ?do= picks a behaviour, from plain work to escape attempts.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
	"unsafe"

	"github.com/spry-dev/spry/sdk"
)

var hoard [][]byte

func depth(n int) int {
	var pad [64]byte
	pad[n%64] = byte(n)
	return depth(n+1) + int(pad[0])
}

func main() {
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		do := ""
		if q := req.Query(); len(q) > 3 && q[:3] == "do=" {
			do = q[3:]
		}
		p := req.Payload()
		switch do {
		case "":
			for i, c := range p {
				if 'a' <= c && c <= 'z' {
					p[i] = c - 'a' + 'A'
				}
			}
		case "wrap":
			res.SetContentType("text/x-wrapped")
			fmt.Fprintf(res, "%s %s hop=%d/%d id=%d x=%q ct=%q [%s]", req.Method(), req.Path(), req.Hop(), req.Steps(),
				req.ID(), req.Header("X-Test"), req.ContentType(), p)
		case "setlen":
			b := res.Buffer()
			n := copy(b, "short")
			res.SetLen(n)
		case "status":
			res.SetStatus(418)
		case "error":
			return sdk.Errorf(409, "conflict: %s", p)
		case "plainerror":
			return fmt.Errorf("plain failure")
		case "panic":
			panic("boom")
		case "stop":
			res.Stop()
		case "spin":
			for {
			}
		case "oob":
			v := *(*byte)(unsafe.Pointer(uintptr(0xfffffff0)))
			p[0] = v
		case "alloc":
			for {
				hoard = append(hoard, make([]byte, 1<<20))
			}
		case "recurse":
			depth(0)
		case "exit":
			os.Exit(3)
		case "open":
			b, err := os.ReadFile("/etc/passwd")
			if err != nil {
				return sdk.Errorf(403, "open: %v", err)
			}
			res.Write(b)
		case "env":
			res.WriteString(os.Getenv("GRANTED") + "|" + os.Getenv("HOME") + "|" + strconv.Itoa(len(os.Environ())))
		case "now":
			res.WriteString(strconv.FormatInt(time.Now().Unix(), 10))
		case "sleep":
			// An hour: without the clock grant the host's sleeps return at once.
			time.Sleep(time.Hour)
			res.WriteString("slept")
		case "nap":
			// A step that takes a while (with the clock grant).
			time.Sleep(200 * time.Millisecond)
			res.WriteString("napped")
		case "random":
			b := make([]byte, 16)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			res.WriteString(hex.EncodeToString(b))
		case "socket":
			c, err := net.Dial("tcp", "127.0.0.1:1")
			if err != nil {
				return sdk.Errorf(403, "dial: %v", err)
			}
			c.Close()
		case "around":
			// What lies in the window just outside the payload.
			base := uintptr(unsafe.Pointer(&p[0]))
			before := unsafe.Slice((*byte)(unsafe.Pointer(base-64)), 64)
			after := unsafe.Slice((*byte)(unsafe.Pointer(base+uintptr(len(p)))), 64)
			dirty := 0
			for i := range 64 {
				if before[i] != 0 {
					dirty++
				}
				if after[i] != 0 {
					dirty++
				}
			}
			res.WriteString("dirty=" + strconv.Itoa(dirty))
		case "grow":
			b := res.Buffer()
			n := len(p) + 5000
			for i := len(p); i < n; i++ {
				b[i] = 'g'
			}
			res.SetLen(n)
		case "scan":
			// Look for the payload's reverse (another request's secret)
			// anywhere in this instance's data, heap and windows.
			want := make([]byte, len(p))
			for i := range p {
				want[len(p)-1-i] = p[i]
			}
			top := uintptr(unsafe.Pointer(&res.Buffer()[0])) + uintptr(len(res.Buffer()))
			mem := unsafe.Slice((*byte)(unsafe.Pointer(uintptr(4096))), top-4096)
			// Skip our own copy of want.
			at := bytes.Index(mem, want)
			for at >= 0 && uintptr(unsafe.Pointer(&mem[at])) == uintptr(unsafe.Pointer(&want[0])) {
				n := bytes.Index(mem[at+1:], want)
				if n < 0 {
					at = -1
					break
				}
				at += 1 + n
			}
			res.WriteString("found=" + strconv.FormatBool(at >= 0) + " scanned=" + strconv.Itoa(len(mem)))
		default:
			return sdk.Errorf(400, "unknown do=%q", do)
		}
		return nil
	})
}
