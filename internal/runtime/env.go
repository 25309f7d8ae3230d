package runtime

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spry-dev/spry/internal/transport"
	"github.com/spry-dev/spry/sdk"
)

// PoolFD is the fd an instance inherits its app's pool as; the endpoint's
// files follow it (4, 5, …).
const PoolFD = 3

// Instance is what the supervisor tells one instance process about itself.
type Instance struct {
	App         string
	Function    string
	Slot        uint32        // its slot in the pool's routing table
	ID          uint16        // its endpoint id
	Concurrency int           // handlers at once
	Timeout     time.Duration // the longest one handler may run
	Files       int           // endpoint files inherited after the pool
}

// Env returns the contract's SPRY_* variables for in (the transport's own,
// from its Handoff, come after them).
func (in Instance) Env() []string {
	fds := make([]string, in.Files)
	for i := range fds {
		fds[i] = strconv.Itoa(PoolFD + 1 + i)
	}
	return []string{
		sdk.EnvPoolFD + "=" + strconv.Itoa(PoolFD),
		sdk.EnvSlot + "=" + strconv.Itoa(int(in.Slot)),
		sdk.EnvConcurrency + "=" + strconv.Itoa(in.Concurrency),
		sdk.EnvFunction + "=" + in.Function,
		sdk.EnvApp + "=" + in.App,
		sdk.EnvTimeout + "=" + strconv.FormatInt(in.Timeout.Milliseconds(), 10),
		transport.EnvID + "=" + strconv.Itoa(int(in.ID)),
		transport.EnvFDs + "=" + strings.Join(fds, ","),
	}
}

// BaseEnv is the environment every instance starts from, before its
// function's env: and the contract's variables: a PATH, and the node's
// time zone and locale.
func BaseEnv() []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	env := []string{"PATH=" + path}
	for _, k := range []string{"TZ", "LANG", "LC_ALL"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
