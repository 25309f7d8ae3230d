// Command probe is a test function: for each path in its input (one per
// line) it tries to reach it the way an attacker in an instance would —
// open and read a file, list a directory, connect to a socket — and answers
// "path: ok" or "path: <error>" per line.
package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spry-dev/spry/sdk"
)

func main() {
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		var out bytes.Buffer
		for _, path := range strings.Split(strings.TrimSpace(string(req.Payload())), "\n") {
			fmt.Fprintf(&out, "%s: %s\n", path, reach(path))
		}
		_, err := res.Write(out.Bytes())
		return err
	})
}

func reach(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	switch {
	case st.Mode()&os.ModeSocket != 0:
		c, err := net.Dial("unixgram", path)
		if err != nil {
			return err.Error()
		}
		c.Close()
	case st.IsDir():
		if _, err := os.ReadDir(path); err != nil {
			return err.Error()
		}
	default:
		f, err := os.Open(path)
		if err != nil {
			return err.Error()
		}
		defer f.Close()
		if _, err := f.Read(make([]byte, 1)); err != nil {
			return err.Error()
		}
	}
	return "ok"
}
