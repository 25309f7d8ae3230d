package node

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// unixQueueSysctl bounds how many datagrams wait at one Unix datagram
// socket: at most that many descriptors can be queued for one instance on
// the uds transport, whatever its buffer size. Linux defaults to 10.
const unixQueueSysctl = "/proc/sys/net/unix/max_dgram_qlen"

// ensureUnixQueue makes room for need descriptors queued at one uds
// endpoint. A sender that finds a queue full backs off and retries, so a
// queue shorter than the requests an app may have in flight costs
// throughput under load (and, in chains that visit a function twice, can
// stall until the retry deadline). As root it raises the limit for
// sockets created from now on (the setting belongs to the network
// namespace); otherwise it says how to.
func (n *Node) ensureUnixQueue(need int) {
	b, err := os.ReadFile(unixQueueSysctl)
	if err != nil {
		return
	}
	have, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || have >= need {
		return
	}
	if os.Geteuid() == 0 {
		if err := os.WriteFile(unixQueueSysctl, []byte(strconv.Itoa(need)), 0o644); err == nil {
			n.log.Info("raised the Unix datagram queue limit for the uds transport",
				"sysctl", "net.unix.max_dgram_qlen", "from", have, "to", need)
			return
		}
	}
	n.log.Warn("uds endpoints queue few descriptors: senders will back off under load",
		"sysctl", "net.unix.max_dgram_qlen", "value", have, "want", need,
		"fix", fmt.Sprintf("sysctl -w net.unix.max_dgram_qlen=%d", need))
}
