//go:build linux

package bpf_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/spry-dev/spry/internal/bpf"
	"github.com/spry-dev/spry/internal/bpf/bpftest"
	"github.com/spry-dev/spry/internal/bpf/loopback"
	"golang.org/x/sys/unix"
)

// Child process modes: the test binary re-executes itself.
const childEnv = "SPRY_BPF_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		before := resources()
		code := m.Run()
		if leaked := slices.DeleteFunc(resources(), func(r string) bool { return slices.Contains(before, r) }); len(leaked) > 0 && code == 0 {
			fmt.Fprintf(os.Stderr, "tests leaked fds: %v\n", leaked)
			code = 1
		}
		os.Exit(code)
	case "hold":
		os.Exit(childHold())
	case "nocaps":
		os.Exit(childNoCaps())
	case "instance":
		os.Exit(childInstance())
	default:
		os.Exit(2)
	}
}

// resources lists open sockets and BPF objects of this process.
func resources() []string {
	es, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range es {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil &&
			(strings.HasPrefix(l, "socket:") || strings.Contains(l, "bpf")) {
			out = append(out, e.Name()+" -> "+l)
		}
	}
	return out
}

// endpoint is a registered socket and the peer that keeps it connected.
type endpoint struct {
	id      uint16
	fd, end int
}

func register(t *testing.T, sm *bpf.Sockmap, id uint16, app uint32) endpoint {
	t.Helper()
	a, b, err := loopback.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(a); unix.Close(b) })
	if err := sm.Register(id, app, a); err != nil {
		t.Fatal(err)
	}
	return endpoint{id: id, fd: a, end: b}
}

// send writes one descriptor naming dst (and src, which must not matter).
func send(t *testing.T, e endpoint, dst, src uint16, tag uint32) {
	t.Helper()
	writeRaw(t, e, batch(dst, src, tag, 1))
}

func writeRaw(t *testing.T, e endpoint, b []byte) {
	t.Helper()
	n, err := unix.Write(e.fd, b)
	if err != nil || n != len(b) {
		t.Fatalf("write %d bytes from %d: n=%d err=%v", len(b), e.id, n, err)
	}
}

// recv returns the tags of the descriptors that arrive at e within wait.
func recv(t *testing.T, e endpoint, wait time.Duration) []uint32 {
	t.Helper()
	var tags []uint32
	deadline := time.Now().Add(wait)
	var buf [1024]byte
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return tags
		}
		pfd := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return tags
		}
		m, err := unix.Read(e.fd, buf[:])
		if err == unix.EAGAIN {
			continue
		}
		if err != nil || m <= 0 {
			t.Fatalf("read at %d: n=%d err=%v", e.id, m, err)
		}
		if m%16 != 0 {
			t.Fatalf("read %d bytes at %d, not whole descriptors", m, e.id)
		}
		for i := 0; i < m; i += 16 {
			tags = append(tags, binary.LittleEndian.Uint32(buf[i+4:]))
		}
	}
}

func counters(t *testing.T, sm *bpf.Sockmap, id uint16) bpf.Counters {
	t.Helper()
	c, err := sm.Counters(id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDeliverAndCount(t *testing.T) {
	sm := bpftest.New(t)
	a := register(t, sm, 11, 1)
	b := register(t, sm, 12, 1)
	for i := range 5 {
		send(t, a, 12, 11, uint32(i))
	}
	if got := recv(t, b, 200*time.Millisecond); !slices.Equal(got, []uint32{0, 1, 2, 3, 4}) {
		t.Fatalf("received %v, want 0..4 in order", got)
	}
	if c := counters(t, sm, 11); c != (bpf.Counters{Sent: 5}) {
		t.Fatalf("sender counters %+v", c)
	}
	if c := counters(t, sm, 12); c != (bpf.Counters{Received: 5}) {
		t.Fatalf("receiver counters %+v", c)
	}
	// Nothing went through TCP to the peers.
	if got := recv(t, endpoint{id: 0, fd: b.end}, 20*time.Millisecond); len(got) != 0 {
		t.Fatalf("peer of receiver got %v over TCP", got)
	}
}

// A descriptor forged by an instance of app A, naming an instance of app
// B (and claiming to come from one), is refused by the kernel, counted
// against the real sender, and never seen by B. The sender's socket keeps
// working afterwards.
func TestForgedCrossAppRefused(t *testing.T) {
	sm := bpftest.New(t)
	a1 := register(t, sm, 21, 1)
	a2 := register(t, sm, 22, 1)
	b1 := register(t, sm, 31, 2)
	b2 := register(t, sm, 32, 2)
	send(t, a1, 31, 32, 666) // to B's 31, "from" B's 32
	if got := recv(t, b1, 100*time.Millisecond); len(got) != 0 {
		t.Fatalf("app B instance received %v from app A", got)
	}
	if c := counters(t, sm, 21); c.Dropped != 1 || c.Sent != 0 {
		t.Fatalf("forger counters %+v, want one drop", c)
	}
	if c := counters(t, sm, 32); c != (bpf.Counters{}) {
		t.Fatalf("impersonated instance counters %+v, want none", c)
	}
	if c := counters(t, sm, 31); c.Received != 0 {
		t.Fatalf("target counters %+v", c)
	}
	// Not poisoned: the same socket still reaches its own app.
	send(t, a1, 22, 21, 7)
	if got := recv(t, a2, 200*time.Millisecond); !slices.Equal(got, []uint32{7}) {
		t.Fatalf("after a refusal, own-app delivery got %v", got)
	}
	// And B's traffic is unaffected.
	send(t, b2, 31, 32, 8)
	if got := recv(t, b1, 200*time.Millisecond); !slices.Equal(got, []uint32{8}) {
		t.Fatalf("app B delivery got %v", got)
	}
	waitRefused(t, sm, 1)
}

func waitRefused(t *testing.T, sm *bpf.Sockmap, want uint64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for sm.Refused() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := sm.Refused(); got != want {
		t.Fatalf("sink swallowed %d, want %d", got, want)
	}
}

// Unregistered destinations and malformed messages are refused; the
// receiver's framing survives them.
func TestRefusals(t *testing.T) {
	sm := bpftest.New(t)
	a := register(t, sm, 41, 1)
	b := register(t, sm, 42, 1)
	send(t, a, 999, 41, 1)                       // nobody
	send(t, a, bpf.SinkID, 41, 2)                // the sink is nobody's destination
	writeRaw(t, a, []byte{42, 0, 0, 0, 9, 0, 0}) // short
	odd := make([]byte, 24)                      // a descriptor and a half, for 42
	odd[0] = 42
	writeRaw(t, a, odd)
	big := batch(42, 41, 100, bpf.MaxDescs+1) // one descriptor too many
	writeRaw(t, a, big)
	send(t, a, 42, 41, 3)
	if got := recv(t, b, 200*time.Millisecond); !slices.Equal(got, []uint32{3}) {
		t.Fatalf("received %v, want only the well-formed descriptor", got)
	}
	// Sender counts: a malformed message is one drop, a well-formed
	// refused one its descriptors.
	if c := counters(t, sm, 41); c.Dropped != 5 || c.Sent != 1 {
		t.Fatalf("counters %+v, want 5 dropped, 1 sent", c)
	}
	waitRefused(t, sm, 1+1+0+1+bpf.MaxDescs+1) // 7 bytes round down, 24 to one
}

// batch encodes k descriptors for dst, tagged first, first+1, ….
func batch(dst, src uint16, first uint32, k int) []byte {
	b := make([]byte, 16*k)
	for i := range k {
		binary.LittleEndian.PutUint16(b[16*i:], dst)
		binary.LittleEndian.PutUint16(b[16*i+2:], src)
		binary.LittleEndian.PutUint32(b[16*i+4:], first+uint32(i))
	}
	return b
}

// Several descriptors in one message (up to MaxDescs) go whole to the
// first one's destination, in order, counted each; a Dst inside the
// message that names another endpoint, or another app's, does not move
// them elsewhere.
func TestBatchDelivered(t *testing.T) {
	sm := bpftest.New(t)
	a := register(t, sm, 61, 1)
	b := register(t, sm, 62, 1)
	c := register(t, sm, 63, 1)
	x := register(t, sm, 64, 2)
	writeRaw(t, a, batch(62, 61, 0, 3))
	full := batch(62, 61, 3, bpf.MaxDescs)
	binary.LittleEndian.PutUint16(full[16:], 63) // inside: another endpoint of the app
	binary.LittleEndian.PutUint16(full[32:], 64) // inside: another app's
	writeRaw(t, a, full)
	want := make([]uint32, 3+bpf.MaxDescs)
	for i := range want {
		want[i] = uint32(i)
	}
	if got := recv(t, b, 300*time.Millisecond); !slices.Equal(got, want) {
		t.Fatalf("received %v, want 0..%d in order", got, len(want)-1)
	}
	for _, e := range []endpoint{c, x} {
		if got := recv(t, e, 20*time.Millisecond); len(got) != 0 {
			t.Fatalf("endpoint %d got %v from a batch for 62", e.id, got)
		}
	}
	if got := counters(t, sm, 61); got != (bpf.Counters{Sent: uint64(len(want))}) {
		t.Fatalf("sender counters %+v", got)
	}
	if got := counters(t, sm, 62); got != (bpf.Counters{Received: uint64(len(want))}) {
		t.Fatalf("receiver counters %+v", got)
	}
	// A batch for another app's endpoint is refused whole.
	writeRaw(t, a, batch(64, 61, 500, 4))
	if got := recv(t, x, 50*time.Millisecond); len(got) != 0 {
		t.Fatalf("app 2 got %v", got)
	}
	if got := counters(t, sm, 61); got.Dropped != 4 {
		t.Fatalf("sender counters %+v, want 4 dropped", got)
	}
	waitRefused(t, sm, 4)
}

func TestUnregister(t *testing.T) {
	sm := bpftest.New(t)
	a := register(t, sm, 51, 1)
	b := register(t, sm, 52, 1)
	if err := sm.Unregister(52); err != nil {
		t.Fatal(err)
	}
	if err := sm.Unregister(52); err != nil {
		t.Fatalf("second unregister: %v", err)
	}
	send(t, a, 52, 51, 1)
	if got := recv(t, b, 50*time.Millisecond); len(got) != 0 {
		t.Fatalf("unregistered endpoint received %v", got)
	}
	// The id comes back with a new socket and fresh counters.
	c := register(t, sm, 52, 1)
	if got := counters(t, sm, 52); got != (bpf.Counters{}) {
		t.Fatalf("re-registered counters %+v", got)
	}
	send(t, a, 52, 51, 2)
	if got := recv(t, c, 200*time.Millisecond); !slices.Equal(got, []uint32{2}) {
		t.Fatalf("re-registered endpoint got %v", got)
	}
	if got := recv(t, b, 20*time.Millisecond); len(got) != 0 {
		t.Fatalf("old socket got %v", got)
	}
}

// A socket closed by its owner leaves the sockmap by itself; sends to its
// id are refused until the daemon unregisters it.
func TestClosedSocketRefused(t *testing.T) {
	sm := bpftest.New(t)
	a := register(t, sm, 61, 1)
	x, y, err := loopback.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(y)
	if err := sm.Register(62, 1, x); err != nil {
		t.Fatal(err)
	}
	unix.Close(x)
	send(t, a, 62, 61, 1)
	if c := counters(t, sm, 61); c.Dropped != 1 {
		t.Fatalf("counters %+v, want the send to a closed socket refused", c)
	}
	if err := sm.Unregister(62); err != nil {
		t.Fatalf("unregister a closed socket: %v", err)
	}
}

func TestRegisterErrors(t *testing.T) {
	sm := bpftest.New(t)
	a, b, err := loopback.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(a)
	defer unix.Close(b)
	if err := sm.Register(0, 1, a); !errors.Is(err, bpf.ErrBadID) {
		t.Errorf("id 0: %v", err)
	}
	if err := sm.Register(70, 0, a); err == nil {
		t.Error("app 0 accepted")
	}
	udp, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	defer unix.Close(udp)
	if err := sm.Register(70, 1, udp); !errors.Is(err, bpf.ErrBadSocket) {
		t.Errorf("udp socket: %v", err)
	}
	lone, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	defer unix.Close(lone)
	if err := sm.Register(70, 1, lone); !errors.Is(err, bpf.ErrBadSocket) {
		t.Errorf("unconnected socket: %v", err)
	}
	if err := sm.Register(70, 1, a); err != nil {
		t.Fatal(err)
	}
	if err := sm.Register(70, 2, b); !errors.Is(err, bpf.ErrRegistered) {
		t.Errorf("duplicate id: %v", err)
	}
	if err := sm.Register(71, 1, a); err == nil {
		t.Error("same socket under a second id accepted")
	}
	if app, ok := sm.Registered(70); !ok || app != 1 {
		t.Errorf("Registered(70) = %d, %v", app, ok)
	}
	n := 0
	sm.Each(func(id uint16, app uint32, c bpf.Counters) { n++ })
	if n != 1 {
		t.Errorf("Each saw %d instances, want 1", n)
	}
}

// pins lists /sys/fs/bpf (empty when bpffs is not mounted).
func pins(t *testing.T) []string {
	var out []string
	filepathWalk("/sys/fs/bpf", &out)
	return out
}

func filepathWalk(dir string, out *[]string) {
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		p := dir + "/" + e.Name()
		*out = append(*out, p)
		if e.IsDir() {
			filepathWalk(p, out)
		}
	}
}

// gone waits until none of the kernel objects exists any more.
func gone(t *testing.T, prog uint32, maps []uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var alive []string
		if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(prog)); err == nil {
			if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "spry_") {
				alive = append(alive, fmt.Sprintf("program %d", prog))
			}
			p.Close()
		}
		for _, id := range maps {
			if m, err := ebpf.NewMapFromID(ebpf.MapID(id)); err == nil {
				if info, err := m.Info(); err == nil && strings.HasPrefix(info.Name, "spry_") {
					alive = append(alive, fmt.Sprintf("map %d (%s)", id, info.Name))
				}
				m.Close()
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %v", alive)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCloseReleases(t *testing.T) {
	before := pins(t)
	sm := bpftest.New(t)
	register(t, sm, 81, 1)
	prog, maps := sm.MapIDs()
	if prog == 0 || len(maps) != 4 {
		t.Fatalf("ids %d %v", prog, maps)
	}
	sm.Close()
	sm.Close()
	gone(t, prog, maps)
	if after := pins(t); !slices.Equal(before, after) {
		t.Fatalf("/sys/fs/bpf changed: %v -> %v", before, after)
	}
	if err := sm.Register(82, 1, 0); err == nil {
		t.Fatal("Register after Close succeeded")
	}
}

// childHold plays the daemon: it loads everything, registers a socket,
// hands it to an instance process (childInstance), reports the kernel ids
// and the instance's pid, and waits to be killed.
func childHold() int {
	sm, err := bpf.New()
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	a, _, err := loopback.Pair()
	if err == nil {
		err = sm.Register(1, 1, a)
	}
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	inst := exec.Command(os.Args[0], "-test.run=^$")
	inst.Env = append(os.Environ(), childEnv+"=instance")
	inst.ExtraFiles = []*os.File{os.NewFile(uintptr(a), "endpoint")}
	if err := inst.Start(); err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	unix.Close(a) // the instance holds the endpoint now, as with spry
	prog, maps := sm.MapIDs()
	fmt.Print("READY ", inst.Process.Pid, " ", prog)
	for _, m := range maps {
		fmt.Print(" ", m)
	}
	fmt.Println()
	time.Sleep(30 * time.Second) // bounded: the parent kills us long before
	return 3
}

// childInstance reads its endpoint until the daemon is gone (end of file),
// as an SDK instance's receive loop does, then exits.
func childInstance() int {
	unix.SetsockoptTimeval(3, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 30})
	var b [64]byte
	for {
		n, err := unix.Read(3, b[:])
		if n > 0 || err == unix.EINTR {
			continue
		}
		if n == 0 && err == nil {
			return 0
		}
		if err != unix.EAGAIN {
			return 1
		}
		return 4 // timed out: the daemon's death went unnoticed
	}
}

// exited reports whether process pid is gone (or a zombie: it exited).
func exited(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// kill -9 of the process that loaded the program leaves nothing behind,
// even while an instance process holds a registered socket (the instance
// reads end-of-file and exits, which frees the last reference), and a
// fresh process loads and works.
func TestKill9LeavesNothing(t *testing.T) {
	probe, err := bpf.New()
	if err != nil {
		bpftest.Unavailable(t, err)
	}
	probe.Close()
	before := pins(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=hold")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	var l string
	select {
	case l = <-line:
	case <-time.After(10 * time.Second):
		t.Fatal("child did not load in time")
	}
	f := strings.Fields(l)
	if len(f) != 7 || f[0] != "READY" {
		t.Fatalf("child said %q", l)
	}
	inst, _ := strconv.Atoi(f[1])
	defer unix.Kill(inst, unix.SIGKILL)
	var ids []uint32
	for _, s := range f[2:] {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, uint32(n))
	}
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	gone(t, ids[0], ids[1:])
	for deadline := time.Now().Add(5 * time.Second); !exited(inst); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("instance process did not notice the daemon's death")
		}
	}
	if after := pins(t); !slices.Equal(before, after) {
		t.Fatalf("/sys/fs/bpf changed: %v -> %v", before, after)
	}
	// Load again in this (fresh for the purpose) process: it works.
	sm := bpftest.New(t)
	a := register(t, sm, 1, 1)
	b := register(t, sm, 2, 1)
	send(t, a, 2, 1, 5)
	if got := recv(t, b, 200*time.Millisecond); !slices.Equal(got, []uint32{5}) {
		t.Fatalf("after reload got %v", got)
	}
}

// childNoCaps drops the capabilities loading needs from its thread's
// effective set and reports what New says.
func childNoCaps() int {
	runtime.LockOSThread() // capabilities are per thread
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		fmt.Println("capget", err)
		return 1
	}
	data[0].Effective &^= 1<<12 | 1<<21           // CAP_NET_ADMIN, CAP_SYS_ADMIN
	data[1].Effective &^= 1<<(38-32) | 1<<(39-32) // CAP_PERFMON, CAP_BPF
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		fmt.Println("capset", err)
		return 1
	}
	_, err := bpf.New()
	fmt.Println(err)
	return 0
}

// Without CAP_BPF and CAP_NET_ADMIN, New says so by name.
func TestMissingCapabilityNamed(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=nocaps")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	msg := string(out)
	for _, want := range []string{"CAP_BPF", "CAP_NET_ADMIN", "not permitted"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %s", strings.TrimSpace(msg), want)
		}
	}
}
