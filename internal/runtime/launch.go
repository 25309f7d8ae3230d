package runtime

import (
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spry-dev/spry/internal/config"
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
		// A margin of a tenth, at least a second (but at most half): the
		// adapter starts, and reports, on a machine that may be busy.
		margin := min(max(ready/10, time.Second), ready/2)
		argv = append(argv, "--ready-timeout", (ready - margin).String())
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
