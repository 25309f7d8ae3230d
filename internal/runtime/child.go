package runtime

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/internal/transport"
	"github.com/spry-dev/spry/sdk"
)

// Child is the user's program run by an adapter instance.
//
// It gets the adapter's environment without the contract's SPRY_*
// variables, plus the kind's; the adapter's pool and endpoint fds are
// closed in it (Start marks them close-on-exec), so the program cannot
// reach the app's shared memory. It dies with the adapter (parent-death
// signal): call Start from a goroutine locked to its OS thread that never
// unlocks it — Linux sends the signal when the forking thread exits.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{}
	why  string
}

// ErrExited is wrapped by the errors of a child that exited.
var ErrExited = errors.New("the function's program exited")

// Start starts argv in dir with env added to the adapter's.
func Start(argv, env []string, dir string) (*Child, error) {
	if len(argv) == 0 {
		return nil, errors.New("runtime: no program to run (want `-- PROGRAM [ARGS]`)")
	}
	closeContractFDs()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(childEnv(), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	c := &Child{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		c.why = ExitReason(err)
		close(c.done)
	}()
	return c, nil
}

// Done is closed when the program exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err describes how the program exited (valid once Done is closed).
func (c *Child) Err() error { return fmt.Errorf("%w (%s)", ErrExited, c.why) }

// PID returns the program's process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Stop asks the program to stop (SIGTERM), and kills it after grace.
func (c *Child) Stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// ExitReason describes how a process ended.
func ExitReason(err error) string {
	if err == nil {
		return "exited with status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
		}
		return ee.String()
	}
	return err.Error()
}

// childEnv is the adapter's environment without the contract's variables.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SPRY_") {
			env = append(env, kv)
		}
	}
	return env
}

// closeContractFDs marks the pool's and the endpoint's inherited fds
// close-on-exec, so the user's program does not inherit them.
func closeContractFDs() {
	if fd, err := strconv.Atoi(os.Getenv(sdk.EnvPoolFD)); err == nil && fd > 2 {
		unix.CloseOnExec(fd)
	}
	for _, s := range strings.Split(os.Getenv(transport.EnvFDs), ",") {
		if fd, err := strconv.Atoi(s); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// FreePort returns a loopback TCP port nobody listens on now.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// PortFree reports an error when something already listens on port.
func PortFree(port int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return fmt.Errorf("port %d is already in use by another process: the function must be able to listen there (%w)", port, err)
	}
	ln.Close()
	return nil
}

// Ready waits until probe succeeds, the child exits, or timeout passes
// (0: no limit), probing every few milliseconds.
func Ready(c *Child, timeout time.Duration, what string, probe func() error) error {
	var limit <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		limit = t.C
	}
	wait := time.Millisecond
	var last error
	for {
		if last = probe(); last == nil {
			return nil
		}
		select {
		case <-c.Done():
			return fmt.Errorf("%w before it was ready (%s)", ErrExited, c.why)
		case <-limit:
			return fmt.Errorf("the function's program did not become ready within %s: %s (last try: %v)", timeout.Round(time.Millisecond), what, last)
		case <-time.After(wait):
			wait = min(2*wait, 50*time.Millisecond)
		}
	}
}

// ProbeTCP succeeds once addr accepts a connection.
func ProbeTCP(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// ProbeHTTP succeeds once GET url answers 2xx.
func ProbeHTTP(url string) func() error {
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return func() error {
		resp, err := cl.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}
