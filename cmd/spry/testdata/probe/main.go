// Command probe is a test function: for each path in its input (one per
// line) it tries to reach it the way an attacker in an instance would —
// open and read a file, list a directory, connect to a socket — and answers
// "path: ok" or "path: <error>" per line.
//
// Other lines ask it what it sees or make it use resources:
//
//	env:NAME      the value of environment variable NAME
//	cwd:          its working directory
//	secret:NAME   the app's secret NAME (sdk.Secret)
//	alloc:N       allocate and touch N MiB (and keep them until it answers)
//	spin:D        burn CPU for D (a Go duration) of CPU time
//	param:NAME    the route's parameter NAME (req.Param)
//	path:         req.Path(); fullpath: req.FullPath()
//	header:K=V    set response header K to V (res.SetHeader); add:K=V adds one
//	ctype:T       set the response's content type
//	status:N      set the response's status (res.SetStatus)
package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/sdk"
)

func main() {
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		var out bytes.Buffer
		var keep [][]byte
		for _, path := range strings.Split(strings.TrimSpace(string(req.Payload())), "\n") {
			verb, arg, _ := strings.Cut(path, ":")
			switch verb {
			case "env":
				fmt.Fprintf(&out, "%s: %s\n", path, os.Getenv(arg))
			case "cwd":
				wd, err := os.Getwd()
				fmt.Fprintf(&out, "%s: %s%v\n", path, wd, errOrNil(err))
			case "secret":
				b, err := sdk.Secret(arg)
				fmt.Fprintf(&out, "%s: %s%v\n", path, b, errOrNil(err))
			case "alloc":
				mib, _ := strconv.Atoi(arg)
				for range mib {
					b := make([]byte, 1<<20)
					for i := 0; i < len(b); i += 4096 {
						b[i] = 1
					}
					keep = append(keep, b)
				}
				fmt.Fprintf(&out, "%s: ok\n", path)
			case "param":
				fmt.Fprintf(&out, "%s: %s\n", path, req.Param(arg))
			case "path":
				fmt.Fprintf(&out, "%s: %s\n", path, req.Path())
			case "fullpath":
				fmt.Fprintf(&out, "%s: %s\n", path, req.FullPath())
			case "header", "add":
				k, v, _ := strings.Cut(arg, "=")
				if verb == "add" {
					res.AddHeader(k, v)
				} else {
					res.SetHeader(k, v)
				}
				fmt.Fprintf(&out, "%s: ok\n", path)
			case "ctype":
				res.SetContentType(arg)
				fmt.Fprintf(&out, "%s: ok\n", path)
			case "status":
				code, _ := strconv.Atoi(arg)
				res.SetStatus(code)
				fmt.Fprintf(&out, "%s: ok\n", path)
			case "spin":
				d, _ := time.ParseDuration(arg)
				spin(d)
				fmt.Fprintf(&out, "%s: ok\n", path)
			default:
				fmt.Fprintf(&out, "%s: %s\n", path, reach(path))
			}
		}
		runtime.KeepAlive(keep)
		_, err := res.Write(out.Bytes())
		return err
	})
}

func errOrNil(err error) any {
	if err == nil {
		return ""
	}
	return err
}

// spin burns d of this thread's CPU time.
func spin(d time.Duration) {
	var ts unix.Timespec
	cpu := func() time.Duration {
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
		return time.Duration(ts.Nano())
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for end := cpu() + d; cpu() < end; {
		for i := 0; i < 10000; i++ {
		}
	}
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
