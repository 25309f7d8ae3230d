// gofn is the contract handler (see package contract) on the Go SDK.
package main

import (
	"bytes"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/spry-dev/spry/sdk"
)

func main() {
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		q, _ := url.ParseQuery(req.Query())
		switch req.Path() {
		case "/inplace":
			p := req.Payload()
			copy(p, bytes.ToUpper(p))
		case "/fresh":
			res.WriteString("fresh:")
			res.Write(req.Payload())
		case "/status":
			code, _ := strconv.Atoi(q.Get("code"))
			res.SetStatus(code)
			fmt.Fprintf(res, "status %d", code)
		case "/error":
			return fmt.Errorf("boom")
		case "/meta":
			fmt.Fprintf(res, "%s %s %s %s", req.Method(), req.Path(), req.Query(), req.Header("X-Contract"))
		case "/sleep":
			ms, _ := strconv.Atoi(q.Get("ms"))
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		return nil
	})
}
