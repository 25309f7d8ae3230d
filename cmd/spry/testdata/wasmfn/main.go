// Command wasmfn is the wasm: function of the end-to-end tests: $MODE
// (granted through env:) picks what it does with the payload, and ?do=
// misbehaves on request.
package main

import (
	"os"
	"unsafe"

	"github.com/spry-dev/spry/sdk"
)

func main() {
	mode := os.Getenv("MODE")
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		switch req.Query() {
		case "do=spin":
			for {
			}
		case "do=oob":
			req.Payload()[0] = *(*byte)(unsafe.Pointer(uintptr(0xfffffff0)))
		}
		p := req.Payload()
		switch mode {
		case "upper":
			for i, c := range p {
				if 'a' <= c && c <= 'z' {
					p[i] = c - 'a' + 'A'
				}
			}
		case "wrap":
			res.WriteString("w(")
			res.Write(p)
			res.WriteString(")")
		default:
			return sdk.Errorf(500, "no MODE")
		}
		return nil
	})
}
