package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spry-dev/spry/internal/config"
)

// Build builds every go: function of apps as a node would (into cacheDir,
// "" for the default) and returns every failure, one per line, with the
// file and line of the function: what `spry up --check` runs, so a
// function that does not compile is not called valid.
func Build(ctx context.Context, apps []*config.App, cacheDir string) error {
	if cacheDir == "" {
		cacheDir = defaultCacheDir()
	}
	var msgs []string
	for _, a := range apps {
		for _, f := range a.Functions {
			if f.Kind != config.Go {
				continue
			}
			if _, err := buildGo(ctx, filepath.Join(cacheDir, "build"), f.Go, a.Dir); err != nil {
				msgs = append(msgs, fmt.Sprintf("%s:%d: functions.%s: %v", a.File, f.Line, f.Name, err))
			}
		}
	}
	if len(msgs) > 0 {
		return errors.New(strings.Join(msgs, "\n"))
	}
	return nil
}

// buildGo builds the Go package pkg (an absolute directory or an import
// path, built from the module of workDir) into the cache and returns the
// executable's path. The cache key is
// the content of everything the build reads: the Go version and target,
// every file of every package of the build that is not from the module
// cache, and the module@version of the others. An unchanged function is not
// rebuilt.
func buildGo(ctx context.Context, cacheDir, pkg, workDir string) (string, error) {
	return buildGoFor(ctx, cacheDir, pkg, workDir, buildTarget{})
}

// buildTarget is what a build makes besides a program for this machine:
// environment (GOOS, GOARCH) and flags for go build, and the output's
// file name suffix.
type buildTarget struct {
	env    []string
	flags  []string
	suffix string
}

// buildGoFor is buildGo for target t.
func buildGoFor(ctx context.Context, cacheDir, pkg, workDir string, t buildTarget) (string, error) {
	dir, target := workDir, pkg
	if filepath.IsAbs(pkg) {
		dir, target = pkg, "."
	}
	key, err := buildKey(ctx, dir, target, t.env)
	if err != nil {
		return "", err
	}
	name := filepath.Base(pkg) + t.suffix
	out := filepath.Join(cacheDir, key[:32], name)
	if st, err := os.Stat(out); err == nil && st.Mode().IsRegular() {
		return out, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	tmp := out + ".tmp" + fmt.Sprint(os.Getpid())
	args := append(append([]string{"build"}, t.flags...), "-o", tmp, target)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	if t.env != nil {
		cmd.Env = append(os.Environ(), t.env...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build %s: %w\n%s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	return out, nil
}

// buildKey hashes what a build of target in dir depends on.
func buildKey(ctx context.Context, dir, target string, goenv []string) (string, error) {
	const format = `{{if not .Standard}}{{.ImportPath}}|{{.Dir}}|{{with .Module}}{{.Path}}@{{.Version}}|{{.GoMod}}{{end}}|` +
		`{{join .GoFiles ","}}|{{join .CgoFiles ","}}|{{join .EmbedFiles ","}}|{{join .CFiles ","}}|{{join .HFiles ","}}|{{.Name}}{{end}}`
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-f", format, target)
	cmd.Dir = dir
	if goenv != nil {
		cmd.Env = append(os.Environ(), goenv...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list %s: %w\n%s", target, err, strings.TrimSpace(stderr.String()))
	}
	ecmd := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOOS", "GOARCH", "CGO_ENABLED", "GOFLAGS")
	if goenv != nil {
		ecmd.Env = append(os.Environ(), goenv...)
	}
	env, err := ecmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	h := sha256.New()
	h.Write(env)
	h.Write([]byte(target))
	mainPkg := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		h.Write([]byte(line))
		h.Write([]byte{'\n'})
		f := strings.Split(line, "|")
		if len(f) < 10 {
			continue
		}
		pkgDir, mod, goMod, name := f[1], f[2], f[3], f[9]
		mainPkg = name == "main" // the target comes last in -deps order
		if strings.Contains(mod, "@") && !strings.HasSuffix(mod, "@") {
			continue // a versioned module from the module cache: its version says it all
		}
		if goMod != "" {
			if err := hashFile(h, goMod); err != nil {
				return "", err
			}
			if err := hashFile(h, strings.TrimSuffix(goMod, "mod")+"sum"); err != nil && !os.IsNotExist(err) {
				return "", err
			}
		}
		for _, list := range f[4:9] {
			for _, file := range strings.Split(list, ",") {
				if file == "" {
					continue
				}
				if err := hashFile(h, filepath.Join(pkgDir, file)); err != nil {
					return "", err
				}
			}
		}
	}
	if !mainPkg {
		return "", fmt.Errorf("go package %s is not a main package (a function's package calls sdk.Serve from main)", target)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashFile(h io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(h, "%s\n", path)
	_, err = io.Copy(h, f)
	return err
}
