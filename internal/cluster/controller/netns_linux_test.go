package controller

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Network namespaces for multi-node tests: each node agent runs in a
// namespace of its own with one interface on a bridge (in a namespace of
// its own too), so that a hop between nodes crosses a real interface.
// Only namespaces the test makes get addresses; the test process reaches
// into them (its clients, the control plane's forwarders) from a thread
// that enters the namespace only while it opens a socket.

// netnsSubnet is the nodes' subnet inside the test's namespaces.
const netnsSubnet = "10.213.0."

type netLab struct {
	t      *testing.T
	prefix string // namespace names start with it
	sw     string // the switch's namespace (bridge br0, address .254)
	nodes  []string
}

// needNetns skips (or fails, with SPRY_REQUIRE_K8S=1) without root or ip.
func needNetns(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "network namespaces need root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "no ip command (iproute2; .ci/setup.d/k8s.sh installs it)"
	}
	if why == "" {
		return
	}
	if os.Getenv("SPRY_REQUIRE_K8S") == "1" {
		t.Fatal("SPRY_REQUIRE_K8S=1: " + why)
	}
	t.Skip(why)
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// newNetLab makes n node namespaces joined by a bridge: node i (1-based)
// has address 10.213.0.i on its eth0.
func newNetLab(t *testing.T, n int) *netLab {
	needNetns(t)
	cleanStaleLabs()
	l := &netLab{t: t, prefix: fmt.Sprintf("sprylab%d-", os.Getpid())}
	l.sw = l.prefix + "sw"
	t.Cleanup(l.close)
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("netns", "add", l.sw)
	must("-n", l.sw, "link", "add", "br0", "type", "bridge")
	must("-n", l.sw, "addr", "add", netnsSubnet+"254/24", "dev", "br0")
	must("-n", l.sw, "link", "set", "br0", "up")
	must("-n", l.sw, "link", "set", "lo", "up")
	for i := 1; i <= n; i++ {
		ns := l.prefix + "n" + strconv.Itoa(i)
		l.nodes = append(l.nodes, ns)
		port := "p" + strconv.Itoa(i)
		must("netns", "add", ns)
		must("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", l.sw)
		must("-n", l.sw, "link", "set", port, "master", "br0")
		must("-n", l.sw, "link", "set", port, "up")
		must("-n", ns, "addr", "add", netnsSubnet+strconv.Itoa(i)+"/24", "dev", "eth0")
		must("-n", ns, "link", "set", "eth0", "up")
		must("-n", ns, "link", "set", "lo", "up")
	}
	return l
}

// addr returns node i's address (1-based).
func (l *netLab) addr(i int) string { return netnsSubnet + strconv.Itoa(i) }

func (l *netLab) close() {
	for _, ns := range append(l.nodes, l.sw) {
		_ = ipCmd("netns", "del", ns)
	}
}

// cleanStaleLabs deletes the namespaces of test processes that are gone.
func cleanStaleLabs() {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "sprylab") {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimPrefix(strings.SplitN(name, "-", 2)[0], "sprylab"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = ipCmd("netns", "del", name)
		}
	}
}

// in runs fn on a thread inside namespace ns: sockets fn opens live there
// (and keep working from any thread afterwards).
func in(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Unlocked only when the thread is back in its own namespace: a
		// thread that could not get back dies with this goroutine.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			runtime.UnlockOSThread()
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			runtime.UnlockOSThread()
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// dialIn dials addr from inside namespace ns.
func dialIn(ctx context.Context, ns, addr string) (net.Conn, error) {
	var c net.Conn
	err := in(ns, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// forward listens on addr inside namespace ns and forwards every
// connection to the same address in the test's own namespace (so a
// kubeconfig naming 127.0.0.1:port works inside ns). It stops with the
// test.
func forward(t *testing.T, ns, addr string) {
	var ln net.Listener
	if err := in(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(u, c); u.Close() }()
			go func() { defer wg.Done(); io.Copy(c, u); c.Close() }()
		}
	}()
}
