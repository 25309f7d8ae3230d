// Package startprobe is the function the cold-start benchmark starts: it
// answers with how long after the gateway received the request its handler
// began, the request's wait for a new instance as the node's clock saw it.
// The same handler runs as a builtin (start-probe), as a go: function
// (./fn) and, prebuilt, as an exec: function, so that the three kinds
// differ only in how the node gets the program.
package startprobe

import (
	"strconv"
	"time"

	"github.com/spry-dev/spry/sdk"
)

// Handler answers {"start_us":N}: the time from the gateway's receipt of the
// request to the start of this step, in microseconds.
func Handler(req *sdk.Request, res *sdk.Response) error {
	start, _ := req.HopTiming(req.Hop())
	var b [64]byte
	out := append(b[:0], `{"start_us":`...)
	out = strconv.AppendFloat(out, float64(start)/float64(time.Microsecond), 'f', 1, 64)
	out = append(out, "}\n"...)
	res.SetContentType("application/json")
	_, err := res.Write(out)
	return err
}
