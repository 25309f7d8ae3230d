//go:build !linux

package node

func (n *Node) ensureUnixQueue(need int) {}
