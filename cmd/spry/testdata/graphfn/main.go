// Command graphfn is the test function of the graph and large-payload
// tests: what it does depends on its function's name in spry.yaml
// ($SPRY_FUNCTION), up to the first '-':
//
//	pass      passes its input on, untouched
//	sha       passes its input on and sets X-Sha256 to its SHA-256 (reading
//	          the pieces in place)
//	branch    writes "STEP:LEN:CRC" of its (shared) input into a fresh
//	          buffer; "sleep-STEP" in the input makes the step STEP sleep
//	          2s first, "fail-STEP" makes it fail (409)
//	merge     a join: writes each input's payload, or "-" for a missing
//	          one, and its status when not 200, separated by '|'
//	route     picks the next step named by the input's first line
//	          (res.Next); "stop" stops the chain
//	front     calls, in parallel, every function the input's first line
//	          names (comma-separated), and writes their answers joined by
//	          '|' (an error as "ERR status msg")
//	upper     answers a call with its payload upper-cased
//	slow      sleeps 1s, then answers with its payload
//	crash     kills its own process (a callee, or a branch, that dies)
//	cyc       calls the function named by its input's first line with the
//	          rest of the input, until the input is empty (a cycle of
//	          calls A → B → A …); answers "done" at the end
//	big       writes an output of the size its input names (res.Alloc),
//	          filled with a pattern
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spry-dev/spry/sdk"
)

func main() {
	name := os.Getenv("SPRY_FUNCTION")
	kind, _, _ := strings.Cut(name, "-")
	var h sdk.Handler
	switch kind {
	case "pass":
		h = func(*sdk.Request, *sdk.Response) error { return nil }
	case "sha":
		h = func(req *sdk.Request, res *sdk.Response) error {
			s := sha256.New()
			for seg := range req.Segments() {
				s.Write(seg)
			}
			res.SetHeader("X-Sha256", hex.EncodeToString(s.Sum(nil)))
			return nil
		}
	case "branch":
		h = func(req *sdk.Request, res *sdk.Response) error {
			p := req.Payload()
			if bytes.Contains(p, []byte("sleep-"+req.Step()+"\n")) {
				time.Sleep(2 * time.Second)
			}
			if bytes.Contains(p, []byte("fail-"+req.Step()+"\n")) {
				return sdk.Errorf(409, "%s failed", req.Step())
			}
			fmt.Fprintf(res, "%s:%d:%08x", req.Step(), len(p), crc32.ChecksumIEEE(p))
			return nil
		}
	case "merge":
		h = func(req *sdk.Request, res *sdk.Response) error {
			if !req.IsJoin() {
				return sdk.Errorf(500, "merge: not a join")
			}
			for i := range req.NumInputs() {
				if i > 0 {
					res.Write([]byte("|"))
				}
				in := req.Input(i)
				switch {
				case !in.Arrived():
					res.Write([]byte("-"))
				case in.Status() != 200:
					fmt.Fprintf(res, "%d %s", in.Status(), in.Payload())
				default:
					res.Write(in.Payload())
				}
			}
			return nil
		}
	case "route":
		h = func(req *sdk.Request, res *sdk.Response) error {
			first, _, _ := bytes.Cut(req.Payload(), []byte("\n"))
			if string(first) == "stop" {
				res.Stop()
				return nil
			}
			res.Next(string(first))
			return nil
		}
	case "front":
		h = func(req *sdk.Request, res *sdk.Response) error {
			first, rest, _ := bytes.Cut(req.Payload(), []byte("\n"))
			var fs []sdk.Future
			for _, fn := range strings.Split(string(first), ",") {
				fs = append(fs, req.Go(context.Background(), fn, rest))
			}
			for i, f := range fs {
				if i > 0 {
					res.Write([]byte("|"))
				}
				b, err := f.Wait()
				if err != nil {
					st := 0
					if e, ok := err.(*sdk.Error); ok {
						st = e.Status
					}
					fmt.Fprintf(res, "ERR %d %s", st, err)
					continue
				}
				res.Write(b)
			}
			return nil
		}
	case "upper":
		h = func(req *sdk.Request, res *sdk.Response) error {
			res.Write(bytes.ToUpper(req.Payload()))
			return nil
		}
	case "slow":
		h = func(req *sdk.Request, res *sdk.Response) error {
			time.Sleep(time.Second)
			return nil
		}
	case "crash":
		h = func(req *sdk.Request, res *sdk.Response) error {
			if bytes.Contains(req.Payload(), []byte("slow")) {
				time.Sleep(time.Second)
			}
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	case "cyc":
		h = func(req *sdk.Request, res *sdk.Response) error {
			p := req.Payload()
			if len(p) == 0 {
				res.Write([]byte("done"))
				return nil
			}
			next, rest, _ := bytes.Cut(p, []byte("\n"))
			b, err := req.Call(context.Background(), string(next), rest)
			if err != nil {
				return err
			}
			fmt.Fprintf(res, "%s<%s", name, b)
			return nil
		}
	case "big":
		h = func(req *sdk.Request, res *sdk.Response) error {
			n, err := strconv.Atoi(strings.TrimSpace(string(req.Payload())))
			if err != nil {
				return sdk.Errorf(400, "big: want a size")
			}
			out, err := res.Alloc(n)
			if err != nil {
				return err
			}
			for i := range out {
				out[i] = byte(i * 7)
			}
			return nil
		}
	default:
		fmt.Fprintln(os.Stderr, "graphfn: no behaviour for function", name)
		os.Exit(2)
	}
	sdk.Serve(h)
}
