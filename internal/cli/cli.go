// Package cli is the spry command line: `spry up` runs a node, the other
// verbs talk to a running node through its admin API.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/internal/builtin"
	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/node"
	"github.com/spry-dev/spry/sdk"
)

// DefaultAdmin is where the verbs look for a node's admin API.
const DefaultAdmin = "127.0.0.1:8081"

// Main runs the spry command with args and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(stderr, "spry:", ee.msg)
			}
			return ee.code
		}
		fmt.Fprintln(stderr, "spry:", err)
		return 1
	}
	return 0
}

// exitError ends the command with a given status.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "spry",
		Short:         "Spry runs zero-copy serverless function chains",
		Long:          "Spry runs serverless function chains on one node: a gateway writes each request once\ninto shared memory, and functions pass 16-byte descriptors instead of data.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(upCmd(), reloadCmd(), statusCmd(), topCmd(), invokeCmd(), builtinsCmd(), fnCmd(), runtimeCmd(), logsCmd(), newCmd(), contractCmd(), wasmHostCmd(), versionCmd(), flCmd())
	root.AddCommand(activationsCmd(), triggersCmd())
	root.AddCommand(benchCommands()...)
	root.AddCommand(simCmd(), controllerCmd(), deployCmd())
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the spry version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "spry", node.Version)
		},
	}
}

func builtinsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "builtins",
		Short: "List the functions built into spry (for builtin: in spry.yaml)",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			w := cmd.OutOrStdout()
			for _, name := range builtin.Names() {
				f, _ := builtin.Lookup(name)
				fmt.Fprintf(w, "%-10s %s\n", name, f.Doc)
			}
		},
	}
}

// fnCmd is how the node runs a builtin instance: `spry fn NAME`.
func fnCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "fn NAME",
		Short:  "Run a builtin function as an instance (the node does this)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, ok := builtin.Lookup(args[0])
			if !ok {
				return fmt.Errorf("no builtin function %q (see spry builtins)", args[0])
			}
			if err := sdk.Run(f.Handler); err != nil {
				return exitError{2, "function " + args[0] + ": " + err.Error()}
			}
			return nil
		},
	}
}

func configOptions() config.Options {
	return config.Options{
		Builtins:     func(name string) bool { _, ok := builtin.Lookup(name); return ok },
		BuiltinNames: builtin.Names(),
	}
}

// loadApps reads the config files, or the built-in demo app when none.
func loadApps(files []string) ([]*config.App, error) {
	if len(files) == 0 {
		a, err := config.Parse("built-in demo app", builtin.DemoYAML, "", configOptions())
		if err != nil {
			return nil, err
		}
		return []*config.App{a}, nil
	}
	return config.LoadAll(files, configOptions())
}

func upCmd() *cobra.Command {
	var (
		files                 []string
		listen, admin, tname  string
		tlsCert, tlsKey       string
		check                 bool
		uids, runDir, cache   string
		logLevel              string
		readyTimeout, drainTO time.Duration
		watch                 bool
		adminTokenFile        string
		dataDir, mqttAddr     string
		cl                    clusterFlags
	)
	cmd := &cobra.Command{
		Use:   "up [-f spry.yaml]...",
		Short: "Run a node serving the apps in the given config files (default: the built-in demo app)",
		Example: `  spry up                                  # the demo app: curl -s localhost:8080/hello -d spry
  spry up -f examples/hello/spry.yaml
  spry up -f a.yaml -f b.yaml --listen :9090
  spry up --check -f spry.yaml             # validate (and build go: functions), then exit
  spry up --watch -f spry.yaml             # reload on every saved change

SIGHUP or "spry reload" reloads the config files: changed apps are replaced
with no request lost, and a config that fails to load keeps the running one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cl.on && len(files) > 0 {
				return exitError{2, "--cluster: the controller assigns the apps (spry deploy -f spry.yaml); give no -f"}
			}
			var apps []*config.App
			var err error
			if !cl.on {
				if apps, err = loadApps(files); err != nil {
					return exitError{2, err.Error()}
				}
			}
			if check {
				if err := node.Build(cmd.Context(), apps, cache); err != nil {
					return exitError{2, err.Error()}
				}
				for _, a := range apps {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: app %s is valid (%d functions, %d chains)\n", a.File, a.Name, len(a.Functions), len(a.Chains))
				}
				return nil
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return exitError{2, fmt.Sprintf("--log-level %q: want debug, info, warn or error", logLevel)}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			cfg := node.Config{
				Apps: apps, Load: func() ([]*config.App, error) { return loadApps(files) }, Listen: listen, Admin: admin, Transport: tname,
				TLS:        config.TLS{Cert: absPath(tlsCert), Key: absPath(tlsKey)},
				RuntimeDir: runDir, CacheDir: cache, Log: log, Output: cmd.ErrOrStderr(),
				ReadyTimeout: readyTimeout, DataDir: dataDir, MQTT: mqttAddr, Cluster: cl.on,
				Options: configOptions(),
			}
			if cl.on {
				cfg.Load = nil // the assignment is the config
				if cfg.Peers, err = cl.peers(); err != nil {
					return exitError{2, err.Error()}
				}
			}
			if adminTokenFile != "" {
				b, err := os.ReadFile(adminTokenFile)
				if err != nil {
					return exitError{2, "--admin-token-file: " + err.Error()}
				}
				if cfg.AdminToken = strings.TrimSpace(string(b)); cfg.AdminToken == "" {
					return exitError{2, "--admin-token-file " + adminTokenFile + ": the file is empty"}
				}
			}
			if (tlsCert == "") != (tlsKey == "") {
				return exitError{2, "--tls-cert and --tls-key go together"}
			}
			if cfg.AppUIDs, err = parseUIDs(uids); err != nil {
				return exitError{2, err.Error()}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// SIGHUP reloads; caught from here on, so a HUP during the
			// start does not kill the node either.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			n, err := node.Start(ctx, cfg)
			if err != nil {
				if errors.Is(err, node.ErrAddrInUse) {
					return exitError{1, err.Error()}
				}
				return err
			}
			log.Info("spry is up", "http", n.Addr().String(), "admin", n.AdminAddr().String())
			agentDone := make(chan error, 1)
			if cl.on {
				if err := cl.start(ctx, n, log, agentDone); err != nil {
					stop()
					_ = n.Shutdown(context.Background())
					return exitError{2, err.Error()}
				}
			} else if len(files) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "\n  try:  curl -s localhost:%d/hello -d 'spry'\n        spry status%s\n\n",
					n.Addr().(*net.TCPAddr).Port, adminFlag(n.AdminAddr().String()))
			}
			reload := func(why string) {
				log.Info("reloading", "why", why)
				res, err := n.Reload(ctx)
				if err != nil {
					log.Error("reload failed", "err", err)
					return
				}
				log.Info("reloaded", "apps", res.String(), "took", res.Took)
			}
			var changed <-chan string
			if watch {
				changed = watchSources(ctx, files, log)
			}
			var failed error
		wait:
			for {
				select {
				case <-ctx.Done():
					break wait
				case failed = <-n.Failed():
					log.Error("node failed", "err", failed)
					break wait
				case failed = <-agentDone:
					log.Error("cluster agent stopped", "err", failed)
					break wait
				case <-hup:
					reload("SIGHUP")
				case what := <-changed:
					reload(what + " changed")
				}
			}
			stop()
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), drainTO)
			defer cancel()
			if err := n.Shutdown(sctx); err != nil {
				log.Warn("shutdown: requests still in flight were cut off", "err", err)
			}
			log.Info("stopped")
			return failed
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "file", "f", nil, "an app's config file (repeat for several apps)")
	f.StringVar(&listen, "listen", ":8080", "gateway address (HTTP/1.1 and HTTP/2; TLS with --tls-cert)")
	f.StringVar(&tlsCert, "tls-cert", "", "serve TLS on --listen with this certificate (PEM; reloaded on SIGHUP and spry reload)")
	f.StringVar(&tlsKey, "tls-key", "", "the certificate's private key (PEM)")
	f.StringVar(&admin, "admin", DefaultAdmin, "admin API address")
	f.StringVar(&tname, "transport", "", "override every app's transport (auto, skmsg, uds, adaptive, poll)")
	f.BoolVar(&check, "check", false, "validate the config files and exit")
	f.StringVar(&uids, "app-uids", "61000-61183", "when run as root: uids for the apps' instances, FIRST-LAST, or none")
	f.StringVar(&runDir, "runtime-dir", "", "directory for sockets and staged executables (default /run/spry as root)")
	f.StringVar(&cache, "cache-dir", "", "directory for builds of go: functions")
	f.StringVar(&dataDir, "data-dir", node.DefaultDataDir(), "directory of the activation store (one node per directory)")
	f.StringVar(&mqttAddr, "mqtt", "", "run the embedded MQTT broker on this address, e.g. 127.0.0.1:1883 (off when empty)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&readyTimeout, "ready-timeout", 30*time.Second, "how long a new instance may take to start")
	f.DurationVar(&drainTO, "drain-timeout", 10*time.Second, "on shutdown, how long requests in flight may take")
	f.StringVar(&adminTokenFile, "admin-token-file", "", "require this bearer token (the file's content) on the admin API; verbs send $SPRY_ADMIN_TOKEN")
	f.BoolVar(&watch, "watch", false, "reload when a config file or a function's source changes (for development)")
	cl.flags(f)
	return cmd
}

// absPath makes a file named on the command line absolute ("" stays ""),
// so that a reload finds it whatever the working directory.
func absPath(f string) string {
	if f == "" {
		return ""
	}
	if a, err := filepath.Abs(f); err == nil {
		return a
	}
	return f
}

func parseUIDs(s string) (node.UIDRange, error) {
	if s == "none" {
		return node.UIDRange{First: -1, Last: -1}, nil
	}
	var r node.UIDRange
	if _, err := fmt.Sscanf(s, "%d-%d", &r.First, &r.Last); err != nil || r.First < 1 || r.Last < r.First {
		return r, fmt.Errorf("--app-uids %q: want FIRST-LAST (uids above 0) or none", s)
	}
	return r, nil
}

// fetchStatus gets GET /v1/status from the node at admin.
func fetchStatus(ctx context.Context, admin string) (*node.Status, error) {
	req, err := adminRequest(ctx, "GET", admin, "/v1/status")
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no spry node answers at %s (is `spry up` running? --admin sets the address): %w", admin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("admin API at %s: %s: %s", admin, resp.Status, strings.TrimSpace(string(b)))
	}
	var s node.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("admin API at %s: bad status: %w", admin, err)
	}
	return &s, nil
}

// adminFlag is " --admin ADDR" when addr is not where the verbs look by
// default, for hints that name a verb.
func adminFlag(addr string) string {
	if addr == DefaultAdmin {
		return ""
	}
	return " --admin " + addr
}

// EnvAdminToken is where the verbs find the admin API's bearer token, for a
// node started with --admin-token-file.
const EnvAdminToken = "SPRY_ADMIN_TOKEN"

// adminRequest makes a request to the admin API at admin, with the bearer
// token from $SPRY_ADMIN_TOKEN when set.
func adminRequest(ctx context.Context, method, admin, path string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+admin+path, nil)
	if err == nil {
		if tok := os.Getenv(EnvAdminToken); tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	return req, err
}
