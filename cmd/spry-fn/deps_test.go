package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The runner starts with every builtin instance, so what it links is paid
// at every cold start (page faults, package initialisation): it must not
// pull in the node's or the network stack's packages. net/http (with
// crypto/tls) once came in through one builtin package's use of status
// constants and doubled the runner's start-up CPU.
func TestRunnerStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		switch {
		case p == "net/http", p == "net", p == "crypto/tls", p == "os/exec",
			strings.HasPrefix(p, "google.golang.org/"),
			strings.HasPrefix(p, "github.com/spf13/"),
			strings.HasPrefix(p, "github.com/prometheus/"),
			strings.HasPrefix(p, "github.com/spry-dev/spry/internal/gateway"),
			strings.HasPrefix(p, "github.com/spry-dev/spry/internal/node"):
			t.Errorf("spry-fn links %s: every builtin cold start pays for it", p)
		}
	}
}
