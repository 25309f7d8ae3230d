package python

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spry-dev/spry/internal/pool"
)

// python3 returns the interpreter for the tests, skipping without one
// unless SPRY_REQUIRE_PYTHON=1.
func python3(t *testing.T) string {
	p, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("SPRY_REQUIRE_PYTHON") == "1" {
			t.Fatal("python3 not found; SPRY_REQUIRE_PYTHON=1")
		}
		t.Skip("python3 not found (Debian: apt-get install python3)")
	}
	return p
}

// The SDK's own unit tests (unittest), with the sources in this directory.
func TestPythonUnittest(t *testing.T) {
	py := python3(t)
	cmd := exec.Command(py, "-m", "unittest", "discover", "-s", "tests")
	cmd.Env = append(os.Environ(), "PYTHONPATH=.", "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 -m unittest: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// The package installs with pip from this directory with no network: its
// build backend is in the tree and needs nothing else.
func TestPipInstallOffline(t *testing.T) {
	py := python3(t)
	if exec.Command(py, "-c", "import venv, ensurepip").Run() != nil {
		if os.Getenv("SPRY_REQUIRE_PYTHON") == "1" {
			t.Fatal("python3 has no venv/ensurepip (Debian: apt-get install python3-venv)")
		}
		t.Skip("python3 has no venv/ensurepip (Debian: apt-get install python3-venv)")
	}
	venv := t.TempDir()
	if out, err := exec.Command(py, "-m", "venv", venv).CombinedOutput(); err != nil {
		t.Fatalf("venv: %v\n%s", err, out)
	}
	vpy := filepath.Join(venv, "bin", "python")
	here, _ := os.Getwd()
	pip := exec.Command(vpy, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", "--no-input", here)
	pip.Env = append(os.Environ(), "PIP_NO_INDEX=1", "PYTHONDONTWRITEBYTECODE=1")
	if out, err := pip.CombinedOutput(); err != nil {
		t.Fatalf("pip install --no-index: %v\n%s", err, out)
	}
	check := exec.Command(vpy, "-c", "import spry; print(spry.LAYOUT_VERSION, spry.invoke(lambda q, r: r.write(b'ok')).body)")
	check.Dir = venv // not this directory: the installed copy
	out, err := check.CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d b'ok'", pool.Version)) {
		t.Fatalf("the installed package: %v\n%s", err, out)
	}
}
