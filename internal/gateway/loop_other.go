//go:build !linux

package gateway

import "net"

// Without Linux's epoll there are no event loops: every connection has a
// goroutine and every app a receive thread.

type loop struct{}

const (
	phHead = iota
	phOut
	phWrite
	phLinger
)

// schedEvery is how often a receive thread passes through the scheduler.
const schedEvery = int64(5e6)

func (g *Gateway) serveLoop(net.Listener) (error, bool) { return nil, false }
func (a *App) runLoop() (error, bool)                   { return nil, false }
func (l *loop) post(*conn)                              {}
func (c *conn) loopWrite(o, body []byte)                {}
func (c *conn) startLinger(*loop)                       {}
func (c *conn) handOver(Reply)                          {}
func (c *conn) closeLoop(bool)                          {}
func (c *conn) sendQueue() *sendQueue                   { return nil }
