package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/mono"
)

// Command is how every instance of one function is started: the program
// and its arguments, environment to add (before the function's env:), and
// the working directory.
type Command struct {
	Argv []string
	Env  []string
	Dir  string
}

// Prepared is what Launch needs that the node makes before it: the spry
// executable (staged where the instances' uid can run it), the program
// of a go: function (built), the Python interpreter and the directory
// holding the Python SDK for python: functions.
type Prepared struct {
	Exe       string
	Runner    string        // builtins: the runner (cmd/spry-fn), or "" to run them as `Exe fn NAME`
	Program   string        // go: the built executable
	Python    string        // python: the interpreter
	PythonSDK string        // python: a directory with the spry package, for PYTHONPATH
	Ready     time.Duration // how long an instance may take to announce itself
}

// Launch returns the command that starts f's instances.
func Launch(f *config.Function, app *config.App, p Prepared) (Command, error) {
	switch f.Kind {
	case config.Builtin:
		if p.Runner != "" {
			return Command{Argv: []string{p.Runner, f.Builtin}, Dir: "/"}, nil
		}
		return Command{Argv: []string{p.Exe, "fn", f.Builtin}, Dir: "/"}, nil
	case config.Go:
		return Command{Argv: []string{p.Program}, Dir: "/"}, nil
	case config.Exec:
		return Command{Argv: append([]string(nil), f.Exec...), Dir: app.Dir}, nil
	case config.Python:
		return Command{
			Argv: []string{p.Python, "-m", "spry", f.Python},
			Env:  []string{"PYTHONPATH=" + p.PythonSDK, "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"},
			Dir:  filepath.Dir(f.Python),
		}, nil
	case config.HTTP, config.Lambda:
		return Command{Argv: AdapterArgv(p.Exe, f, p.Ready), Dir: app.Dir}, nil
	}
	return Command{}, fmt.Errorf("runtime: function %s: no runner for kind %v", f.Name, f.Kind)
}

// AdapterArgv is the command line of an adapter instance of f: `spry
// runtime KIND [flags] -- PROGRAM [ARGS]`. ready bounds how long the
// adapter waits for the program (a little less than the node waits for
// the instance, so the adapter's own error, which names what the program
// failed to do, is the one the user sees).
func AdapterArgv(exe string, f *config.Function, ready time.Duration) []string {
	argv := []string{exe, "runtime", f.Kind.String()}
	if ready > 0 {
		argv = append(argv, "--ready-timeout", (ready - ReadyMargin(ready)).String())
	}
	var prog []string
	switch f.Kind {
	case config.HTTP:
		if f.Port != 0 {
			argv = append(argv, "--port", strconv.Itoa(f.Port))
		}
		if f.Health != "" {
			argv = append(argv, "--health", f.Health)
		}
		prog = f.HTTP
	case config.Lambda:
		argv = append(argv, "--event", f.Event)
		if f.Handler != "" {
			argv = append(argv, "--handler", f.Handler)
		}
		prog = f.Lambda
	}
	return append(append(argv, "--"), prog...)
}

// ReadyMargin is the part of the node's ready timeout an adapter leaves
// itself to report that its program did not get ready (a tenth, at least
// a second, at most half): the node's message would only say the
// instance did not announce itself.
func ReadyMargin(ready time.Duration) time.Duration {
	return min(max(ready/10, time.Second), ready/2)
}

// EnvReadyBy is set by the node on an adapter's process: the
// CLOCK_MONOTONIC time (ns, internal/mono) by which the adapter is to
// have reported, the node's ready deadline less ReadyMargin. The adapter
// counts its wait from the node's start of it, not from its own start,
// which on a busy machine comes late: by more than the margin at load 40,
// and the node's timer won the race with the adapter's explanation.
const EnvReadyBy = "SPRY_READY_BY"

// ReadyBy is the value of EnvReadyBy for a ready timeout counted from now.
func ReadyBy(ready time.Duration) string {
	return strconv.FormatInt(mono.Now()+int64(ready-ReadyMargin(ready)), 10)
}

// AdapterTimeout is how long an adapter waits for its program to get
// ready: timeout (its --ready-timeout, 0: no limit), or less, to the
// node's EnvReadyBy when that is set.
func AdapterTimeout(timeout time.Duration) time.Duration {
	by, err := strconv.ParseInt(os.Getenv(EnvReadyBy), 10, 64)
	if err != nil {
		return timeout
	}
	left := max(time.Duration(by-mono.Now()), time.Nanosecond) // 0 would mean no limit
	if timeout > 0 && timeout < left {
		return timeout
	}
	return left
}
