package bench

import (
	"github.com/spry-dev/spry/bench/startprobe"
	"github.com/spry-dev/spry/sdk"
)

func init() {
	register("start-", map[string]struct {
		doc string
		h   sdk.Handler
	}{
		"probe": {"bench: answers how long after the gateway received the request the step started (cold starts)", startprobe.Handler},
	})
}
