package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An app's instances get its environment (${VAR} from the node's, env
// files, defaults), its secrets (readable by it and by no other app) and
// the directory of their source as working directory.
func TestSecretsEnvWorkDir(t *testing.T) {
	const key = "k3y-from-the-node-environment"
	t.Setenv("SPRY_TEST_API_KEY", key)
	probe := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "probe")
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	pass := filepath.Join(dir, "db.pass")
	if err := os.WriteFile(pass, []byte("s3cret-db-password"), 0o600); err != nil { // root's only, when root
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.env"), []byte("FROM_FILE=file value\nGREETING=overridden\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vault := filepath.Join(dir, "vault.yaml")
	if err := os.WriteFile(vault, []byte(`app: vault
secrets:
  db: {file: ./db.pass}
  api: {value: "${SPRY_TEST_API_KEY}"}
functions:
  p:
    go: `+probe+`
    envFrom: ./app.env
    env: {GREETING: "hi ${SPRY_TEST_API_KEY}", OTHER: "${SPRY_TEST_UNSET:-default}"}
chains:
  p: {route: /vault, steps: [p], methods: [POST]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	snoop := writeConfig(t, "app: snoop\nfunctions:\n  p: {go: "+probe+"}\nchains:\n  p: {route: /snoop, steps: [p], methods: [POST]}\n")
	n := startNode(t, "-f", vault, "-f", snoop)

	ask := func(route string, lines ...string) map[string]string {
		t.Helper()
		status, got, err := n.post(client(1), route, strings.Join(lines, "\n"))
		if err != nil || status != 200 {
			t.Fatalf("%s: %d %q %v", route, status, got, err)
		}
		out := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
			for _, q := range lines {
				if v, ok := strings.CutPrefix(l, q+": "); ok {
					out[q] = v
				}
			}
		}
		return out
	}
	got := ask("/vault", "secret:db", "secret:api", "secret:nope", "env:GREETING", "env:FROM_FILE", "env:OTHER", "cwd:", "env:SPRY_SECRETS")
	for q, want := range map[string]string{
		"secret:db": "s3cret-db-password", "secret:api": key, "env:GREETING": "hi " + key,
		"env:FROM_FILE": "file value", "env:OTHER": "default", "cwd:": probe,
		"secret:nope": `sdk: no such secret: "nope"`,
	} {
		if got[q] != want {
			t.Errorf("%s: %q, want %q", q, got[q], want)
		}
	}
	secrets := got["env:SPRY_SECRETS"]
	if secrets == "" {
		t.Fatal("no SPRY_SECRETS in the instance's environment")
	}
	if os.Geteuid() == 0 {
		other := ask("/snoop", filepath.Join(secrets, "db"), secrets, "secret:db", "env:SPRY_SECRETS")
		for _, q := range []string{filepath.Join(secrets, "db"), secrets} {
			if !strings.Contains(other[q], "permission denied") {
				t.Errorf("another app's instance reaches %s: %q", q, other[q])
			}
		}
		if other["env:SPRY_SECRETS"] != "" || !strings.Contains(other["secret:db"], "no such secret") {
			t.Errorf("another app sees secrets: %v", other)
		}
	}
	if logs := n.logs(); strings.Contains(logs, "s3cret") || strings.Contains(logs, key) {
		t.Errorf("a secret is in the node's output:\n%s", logs)
	}
	st := n.mustStatus()
	n.stop()
	if _, err := os.Stat(secrets); !os.IsNotExist(err) {
		t.Errorf("secrets left behind in %s after the node stopped (%v); runtime dir %s", secrets, err, st.Node.RuntimeDir)
	}
}
