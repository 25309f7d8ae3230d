// Command speed is a test function whose instances differ in speed: the
// instance in pool slot FAST_SLOT works for FAST_MS milliseconds per
// request, every other for SLOW_MS. It answers with its slot.
package main

import (
	"os"
	"strconv"
	"time"

	"github.com/spry-dev/spry/sdk"
)

func main() {
	slot := os.Getenv(sdk.EnvSlot)
	work := ms("SLOW_MS")
	if slot == os.Getenv("FAST_SLOT") {
		work = ms("FAST_MS")
	}
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		// Busy, like real work, rather than asleep.
		for end := time.Now().Add(work); time.Now().Before(end); {
		}
		_, err := res.WriteString(slot)
		return err
	})
}

func ms(k string) time.Duration {
	n, _ := strconv.Atoi(os.Getenv(k))
	return time.Duration(n) * time.Millisecond
}
