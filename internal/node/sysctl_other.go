//go:build !linux

package node

func (n *Node) ensureUnixQueue(need int) {}

// reachable: instances run as the node's user where uids are not switched.
func reachable(dir string, uid, gid int) bool { return true }
