package bench

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spawner starts processes from one OS thread that lives as long as the
// bench: the children's parent-death signal (SIGKILL, so nothing outlives a
// killed bench) fires when the thread that forked them exits, and Go may
// retire threads; a locked thread that never returns keeps it exact.
type spawner struct {
	reqs chan func()
}

var (
	spawnOnce sync.Once
	theSpawn  spawner
	// SystemCPUs, when set before the first process starts, are the CPUs
	// the processes under test (node, instances, baselines) run on: the
	// spawner's thread takes that affinity, and every process it forks
	// inherits it. Run the bench itself elsewhere (taskset -c) so that the
	// load generator does not steal the system's cores.
	SystemCPUs []int
)

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		theSpawn.reqs = make(chan func())
		go func() {
			runtime.LockOSThread()
			if len(SystemCPUs) > 0 {
				var set unix.CPUSet
				for _, c := range SystemCPUs {
					set.Set(c)
				}
				unix.SchedSetaffinity(0, &set) // this thread: its children inherit it
			}
			for f := range theSpawn.reqs {
				f()
			}
		}()
	})
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	errc := make(chan error, 1)
	theSpawn.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// child is a process the bench started.
type child struct {
	cmd  *exec.Cmd
	name string
	log  *os.File
	done chan struct{}
	err  error
}

func startChild(name string, cmd *exec.Cmd, logPath string) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := spawn(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	c := &child{cmd: cmd, name: name, log: f, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks the process to stop (SIGTERM), then kills its process group
// after grace. It returns once the process is reaped.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.done
	}
	// Whatever it left in its group (nothing, normally).
	syscall.Kill(-c.pid(), syscall.SIGKILL)
}

// freePorts reserves n loopback ports by binding and releasing them.
func freePorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, "127.0.0.1:"+strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return out, nil
}

var errNotListening = errors.New("did not start listening")

// waitListening waits until addr accepts connections or a child exits.
func waitListening(addr string, timeout time.Duration, children ...*child) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		for _, ch := range children {
			if ch.exited() {
				// The log's end in the error: a test's directory is gone
				// by the time anyone reads the error.
				log, _ := os.ReadFile(ch.log.Name())
				return fmt.Errorf("%s exited: %v (see %s): %s", ch.name, ch.err, ch.log.Name(), tail(log, 2000))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s %w in %s", addr, errNotListening, timeout)
}

// alive reports whether process pid exists (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2] != 'Z' && b[i+2] != 'X'
		}
	}
	return true
}
