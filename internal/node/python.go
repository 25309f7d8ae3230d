package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/spry-dev/spry/internal/config"
	pysdk "github.com/spry-dev/spry/sdk/python"
)

// python returns the interpreter that runs python: function f, and the
// directory that holds the Python SDK (for PYTHONPATH): the one embedded in
// this spry binary, so the SDK always speaks the node's pool layout.
//
// The interpreter is the virtualenv's when f names one; a virtualenv spry
// makes in its cache (once per requirements file content) when f names
// requirements; else python3 from $PATH.
func (n *Node) python(ctx context.Context, a *config.App, f *config.Function) (interp, sdkDir string, err error) {
	where := fmt.Sprintf("%s:%d: functions.%s", a.File, f.Line, f.Name)
	if sdkDir, err = n.stagePythonSDK(); err != nil {
		return "", "", fmt.Errorf("%s: %w", where, err)
	}
	switch {
	case f.Virtualenv != "":
		interp = filepath.Join(f.Virtualenv, "bin", "python")
	case f.Requirements != "":
		if interp, err = n.requirementsVenv(ctx, f.Requirements); err != nil {
			return "", "", fmt.Errorf("%s.requirements: %w", where, err)
		}
	default:
		if interp, err = n.lookPython(); err != nil {
			return "", "", fmt.Errorf("%s: %w", where, err)
		}
	}
	return interp, sdkDir, nil
}

// lookPython finds python3 in $PATH. When instances run under the apps'
// uids, it skips interpreters those cannot run (a pyenv under a private
// home, say): the file and every directory above it must be open to
// others.
func (n *Node) lookPython() (string, error) {
	var skipped []string
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, "python3")
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			continue
		}
		if n.uids && !openToOthers(abs) {
			skipped = append(skipped, abs)
			continue
		}
		return abs, nil
	}
	if len(skipped) > 0 {
		return "", fmt.Errorf("no python3 in $PATH that the apps' uids can run (%s: a directory above it is private); install one system-wide (Debian: apt-get install python3), name a virtualenv:, or run with --app-uids none", strings.Join(skipped, ", "))
	}
	return "", fmt.Errorf("python3 not found in $PATH: install Python 3 (Debian: apt-get install python3), or name a virtualenv:")
}

// openToOthers reports whether a user other than the owner (and outside
// its group) can run the file at p: o+x on the file (through symlinks)
// and on every directory above it.
func openToOthers(p string) bool {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return false
	}
	for _, q := range []string{p, real} {
		fi, err := os.Stat(q)
		if err != nil || fi.Mode()&0o001 == 0 {
			return false
		}
		for d := filepath.Dir(q); ; d = filepath.Dir(d) {
			fi, err := os.Stat(d)
			if err != nil || fi.Mode()&0o001 == 0 {
				return false
			}
			if d == "/" || d == "." {
				break
			}
		}
	}
	return true
}

// stagePythonSDK writes the embedded SDK under the node's runtime
// directory, readable by every app's uid, once.
func (n *Node) stagePythonSDK() (string, error) {
	n.pyOnce.Do(func() {
		dir := filepath.Join(n.runDir, "python")
		n.pyErr = fs.WalkDir(pysdk.Files, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			dst := filepath.Join(dir, p)
			if d.IsDir() {
				if err := os.MkdirAll(dst, 0o755); err != nil {
					return err
				}
				return os.Chmod(dst, 0o755)
			}
			b, err := pysdk.Files.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		})
		if n.pyErr == nil {
			os.Chmod(dir, 0o755)
		}
		n.pyDir = dir
	})
	if n.pyErr != nil {
		return "", fmt.Errorf("stage the Python SDK: %w", n.pyErr)
	}
	return n.pyDir, nil
}

// venvMu serialises builds of requirement virtualenvs.
var venvMu sync.Mutex

// requirementsVenv returns the interpreter of a virtualenv with the
// requirements file installed, made with python3 -m venv and pip in the
// cache directory, keyed by the file's content and the python3 version.
func (n *Node) requirementsVenv(ctx context.Context, req string) (string, error) {
	py, err := n.lookPython() // the virtualenv's python runs it: the apps' uids must reach it
	if err != nil {
		return "", fmt.Errorf("%w (needed to make a virtualenv)", err)
	}
	content, err := os.ReadFile(req)
	if err != nil {
		return "", err
	}
	ver, err := exec.CommandContext(ctx, py, "-c", "import sys; print(sys.version)").Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", py, err)
	}
	h := sha256.New()
	h.Write(ver)
	h.Write([]byte(filepath.Dir(req)))
	h.Write(content)
	dir := filepath.Join(n.cfg.CacheDir, "python", hex.EncodeToString(h.Sum(nil))[:32])
	interp := filepath.Join(dir, "bin", "python")
	venvMu.Lock()
	defer venvMu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, ".spry-complete")); err == nil {
		return interp, nil
	}
	os.RemoveAll(dir)
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = filepath.Dir(req) // relative paths in the file are the file's
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			os.RemoveAll(dir)
			return fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(out.String()))
		}
		return nil
	}
	n.log.Info("making a virtualenv for python requirements", "requirements", req, "dir", dir)
	if err := run(py, "-m", "venv", dir); err != nil {
		return "", err
	}
	if err := run(interp, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-r", req); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ".spry-complete"), nil, 0o644); err != nil {
		return "", err
	}
	// Readable by the apps' uids: the cache may sit under a private home.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			if fi, err := d.Info(); err == nil {
				os.Chmod(p, fi.Mode().Perm()|0o444|(fi.Mode().Perm()&0o100)>>3|(fi.Mode().Perm()&0o100)>>6|dirX(d))
			}
		}
		return nil
	})
	return interp, nil
}

// dirX is the search bits for a directory, so other uids can enter it.
func dirX(d fs.DirEntry) fs.FileMode {
	if d.IsDir() {
		return 0o111
	}
	return 0
}
