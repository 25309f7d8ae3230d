package node

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spry-dev/spry/internal/builtin"
)

// RunnerName is the builtin runner's file name (cmd/spry-fn): beside the
// spry executable, it runs builtin instances instead of `spry fn NAME`.
const RunnerName = "spry-fn"

// runner returns the path of the builtin runner beside the spry
// executable, or "" when there is none or it is from another build (its
// identity differs from this binary's builtins and pool layout): then
// builtins run as `spry fn NAME`. Looked up once.
func (n *Node) runner() string {
	n.runnerOnce.Do(func() {
		path := filepath.Join(filepath.Dir(n.cfg.Exe), RunnerName)
		if _, err := os.Stat(path); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, "--identify").Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != builtin.Identity() {
			n.log.Warn("the builtin runner beside spry is from another build: builtins start as `spry fn` (slower)",
				"runner", path, "err", err)
			return
		}
		n.runnerPath = path
		n.log.Info("builtins run with the runner beside spry", "runner", path)
	})
	return n.runnerPath
}
