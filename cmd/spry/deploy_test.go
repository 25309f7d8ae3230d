package main

import (
	"os/exec"
	"strings"
	"testing"
)

// spry deploy to a node (no cluster): the node runs the deployed app
// beside its own, a second deploy of it replaces it, the node keeps it
// across a reload and a restart, an app from a config file cannot be
// deployed over, and --delete removes it.
func TestDeployToNode(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, "--data-dir", data) // the demo app
	deploy := func(file string, args ...string) (string, error) {
		out, err := exec.Command(spryBin, append([]string{"deploy", "-f", file, "--node", "--admin", n.admin}, args...)...).CombinedOutput()
		return string(out), err
	}
	app := writeConfig(t, "app: shop\nfunctions:\n  up: {builtin: upper}\nchains:\n  buy: {route: /buy, steps: [up]}\n")
	out, err := deploy(app)
	if err != nil || !strings.Contains(out, "app shop deployed on the node at") || !strings.Contains(out, "added shop") {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	c := client(1)
	if code, body, err := n.post(c, "/buy", "spry"); err != nil || code != 200 || body != "SPRY" {
		t.Fatalf("deployed app: %d %q %v", code, body, err)
	}
	if code, body, _ := n.post(c, "/hello", "spry"); code != 200 || !strings.Contains(body, "YRPS") {
		t.Fatalf("the node's own app: %d %q", code, body)
	}
	// Changed: replaced (a reload's swap).
	app2 := writeConfig(t, "app: shop\nfunctions:\n  up: {builtin: reverse}\nchains:\n  buy: {route: /buy, steps: [up]}\n")
	if out, err := deploy(app2); err != nil || !strings.Contains(out, "changed shop") {
		t.Fatalf("redeploy: %v\n%s", err, out)
	}
	if code, body, _ := n.post(c, "/buy", "spry"); code != 200 || body != "yrps" {
		t.Fatalf("after redeploy: %d %q", code, body)
	}
	// A reload keeps it.
	if out, err := n.reload(t); err != nil || !strings.Contains(out, "unchanged demo, shop") {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	// The node's own app cannot be deployed over.
	demo := writeConfig(t, "app: demo\nfunctions:\n  up: {builtin: upper}\nchains:\n  x: {route: /x, steps: [up]}\n")
	if out, err := deploy(demo); err == nil || !strings.Contains(out, "comes from a config file") {
		t.Fatalf("deploy over a file's app: %v\n%s", err, out)
	}
	// A broken spec is refused by the CLI with its field path.
	bad := writeConfig(t, "app: bad\nfunctions:\n  up: {builtin: nope}\nchains:\n  x: {route: /x, steps: [up]}\n")
	if out, err := deploy(bad); err == nil || !strings.Contains(out, "functions.up") {
		t.Fatalf("bad spec: %v\n%s", err, out)
	}
	// A restart keeps it.
	n.stop()
	n = startNode(t, "--data-dir", data)
	if code, body, _ := n.post(c, "/buy", "spry"); code != 200 || body != "yrps" {
		t.Fatalf("after a restart: %d %q", code, body)
	}
	if out, err := deploy(app2, "--delete"); err != nil || !strings.Contains(out, "removed shop") {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if code, _, _ := n.post(c, "/buy", "spry"); code != 404 {
		t.Fatalf("after delete: %d", code)
	}
}
