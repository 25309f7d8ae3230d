package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/node"
)

func reloadCmd() *cobra.Command {
	var admin string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make a running node re-read its config files and apply the changes without dropping a request",
		Long: `reload asks the node at --admin to read its config files again (as SIGHUP does).
Apps that changed (config, or the source of a go: function, or an exec: program)
start beside the running ones; once they are ready the gateway switches to them
and the old ones drain: no request is dropped or failed. New apps start, removed
ones drain and stop, unchanged ones are left alone. A config that fails to load,
build or start changes nothing, and the reason is printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := adminRequest(ctx, "POST", admin, "/v1/reload")
			if err != nil {
				return exitError{2, err.Error()}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("no spry node answers at %s (is `spry up` running? --admin sets the address): %w", admin, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if resp.StatusCode != 200 {
				return exitError{1, "reload failed: " + adminError(resp.Status, body)}
			}
			var res node.ReloadResult
			if err := json.Unmarshal(body, &res); err != nil {
				return fmt.Errorf("admin API at %s: bad answer: %w", admin, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "reloaded in %s: %s\n", res.Took, res)
			return nil
		},
	}
	cmd.Flags().StringVar(&admin, "admin", DefaultAdmin, "the node's admin API address")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long (builds and instance starts count)")
	return cmd
}

// watchSources reports, on the returned channel, which file changed among
// what a reload would read: the config files, the source files of go:
// functions (their package directory and the module's go.mod and go.sum),
// and exec: programs. It polls every half second (no inotify: it works the
// same on every file system, editors' rename-on-save included) and reports
// a change once the files have been still for a moment, so a save of
// several files is one reload.
func watchSources(ctx context.Context, files []string, log *slog.Logger) <-chan string {
	out := make(chan string)
	go func() {
		last := snapshotSources(files)
		var pending string
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			now := snapshotSources(files)
			if which := changedFile(last, now); which != "" {
				last, pending = now, which
				continue // wait until it holds still
			}
			if pending == "" {
				continue
			}
			select {
			case out <- pending:
			case <-ctx.Done():
				return
			}
			pending = ""
		}
	}()
	log.Info("watching config files and function sources; a change reloads")
	return out
}

// changedFile returns a file that differs between two snapshots, or "".
func changedFile(a, b map[string]string) string {
	for p, v := range b {
		if a[p] != v {
			return p
		}
	}
	for p := range a {
		if _, ok := b[p]; !ok {
			return p
		}
	}
	return ""
}

// snapshotSources returns the size and modification time of each watched
// file.
func snapshotSources(files []string) map[string]string {
	out := map[string]string{}
	add := func(path string, fi fs.FileInfo) {
		out[path] = fmt.Sprintf("%d|%d", fi.Size(), fi.ModTime().UnixNano())
	}
	seen := map[string]bool{}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			add(f, fi)
		}
	}
	// The sources the files name now. A config that does not load
	// watches the config files alone until it is fixed.
	apps, err := config.LoadAll(files, configOptions())
	if err != nil {
		return out
	}
	const most = 20000
	n := 0
	for _, a := range apps {
		for _, f := range a.Functions {
			switch f.Kind {
			case config.Exec:
				if fi, err := os.Stat(f.Exec[0]); err == nil {
					add(f.Exec[0], fi)
				}
			case config.Go:
				dir := f.Go
				if !filepath.IsAbs(dir) {
					dir = a.Dir // an import path: built from the app's module
				}
				for _, root := range []string{dir, moduleRoot(dir)} {
					if root == "" || seen[root] {
						continue
					}
					seen[root] = true
					filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
						if err != nil || n > most {
							return filepath.SkipDir
						}
						name := d.Name()
						if d.IsDir() {
							if path != root && (strings.HasPrefix(name, ".") || name == "vendor" || name == "testdata") {
								return filepath.SkipDir
							}
							if path != root && root != dir {
								return filepath.SkipDir // the module root: its go.mod and go.sum only
							}
							return nil
						}
						if strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum" {
							if fi, err := d.Info(); err == nil {
								add(path, fi)
								n++
							}
						}
						return nil
					})
				}
			}
		}
	}
	return out
}

// moduleRoot returns the directory of the go.mod above dir, or "".
func moduleRoot(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}
