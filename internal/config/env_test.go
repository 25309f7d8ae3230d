package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"KEY": "k3y", "EMPTY": ""}
	getenv := func(n string) (string, bool) { v, ok := env[n]; return v, ok }
	for _, c := range []struct{ in, want, why string }{
		{"plain", "plain", ""},
		{"${KEY}", "k3y", ""},
		{"a-${KEY}-b", "a-k3y-b", ""},
		{"${MISSING:-def}", "def", ""},
		{"${EMPTY:-def}", "def", ""},
		{"${EMPTY}", "", ""},
		{"$$", "$", ""},
		{"$${KEY}", "${KEY}", ""},
		{"$KEY costs $5", "$KEY costs $5", ""},
		{"end$", "end$", ""},
		{"${MISSING}", "", "${MISSING} is not set in the node's environment (give a default: ${MISSING:-value})"},
		{"${KEY", "", `"${KEY": ${ without a closing }`},
		{"${1X}", "", "${1X}: not a variable name (write $${ for a literal ${)"},
	} {
		got, why := expand(c.in, getenv)
		if got != c.want || why != c.why {
			t.Errorf("expand(%q) = %q, %q; want %q, %q", c.in, got, why, c.want, c.why)
		}
	}
}

// env:, envFrom:, secrets:, workDir: and limits: as a user writes them.
func TestEnvSecretsWorkDirLimits(t *testing.T) {
	dir := testDir(t)
	must(t, os.WriteFile(filepath.Join(dir, "app.env"), []byte("# comment\nexport A=1\nB=\"two words\\n\"\nC='lit ${X}'\n\nD=from-file\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "db.pass"), []byte("s3cret"), 0o600))
	o := builtins
	o.Getenv = func(n string) (string, bool) {
		v, ok := map[string]string{"API_KEY": "abc", "ENVFILE": "app.env"}[n]
		return v, ok
	}
	a, err := Parse("spry.yaml", []byte(yml(`
		app: s
		secrets:
		  db: {file: ./db.pass}
		  api-key: {value: "${API_KEY}"}
		functions:
		  f:
		    go: ./fn
		    envFrom: ./${ENVFILE}
		    env: {D: override, URL: "https://x/?k=${API_KEY}", TZ: "${TZ_UNSET:-UTC}"}
		    limits: {memory: 64MiB, cpu: 0.5}
		  g:
		    builtin: echo
		    workDir: ./bin
		    limits: {cpu: 250m}
		chains:
		  c: {route: /c, steps: [f, g]}
		`)), dir, o)
	must(t, err)
	f, g := a.Functions[0], a.Functions[1]
	wantEnv := []string{"A=1", "B=two words\n", "C=lit ${X}", "D=override", "URL=https://x/?k=abc", "TZ=UTC"}
	if !slices.Equal(f.Env, wantEnv) {
		t.Errorf("env %q, want %q", f.Env, wantEnv)
	}
	if f.WorkDir != filepath.Join(dir, "fn") || g.WorkDir != filepath.Join(dir, "bin") || f.WorkDirSet || !g.WorkDirSet {
		t.Errorf("workDir %q and %q", f.WorkDir, g.WorkDir)
	}
	if f.Limits != (FnLimits{Memory: 64 << 20, CPU: 0.5}) || g.Limits != (FnLimits{CPU: 0.25}) {
		t.Errorf("limits %+v and %+v", f.Limits, g.Limits)
	}
	if len(a.Secrets) != 2 || a.Secrets[0].Name != "db" || string(a.Secrets[0].Value) != "s3cret" ||
		a.Secrets[1].Name != "api-key" || string(a.Secrets[1].Value) != "abc" || a.Secrets[1].Source != "value" {
		t.Errorf("secrets %+v", a.Secrets)
	}

	must(t, os.WriteFile(filepath.Join(dir, "bad.env"), []byte("ok=1\nnot a line\n"), 0o644))
	_, err = Parse("spry.yaml", []byte(yml(`
		app: s
		secrets:
		  db: {file: ./nope}
		  both: {file: ./db.pass, value: x}
		  .hidden: {value: x}
		  none: {}
		functions:
		  f:
		    builtin: echo
		    envFrom: [./missing.env, ./bad.env]
		    env: {K: "${NOT_SET}"}
		    workDir: ./notexec
		    limits: {memory: 1MiB, cpu: lots}
		chains:
		  c: {route: /c, steps: [f]}
		`)), dir, Options{Builtins: builtins.Builtins, Getenv: func(string) (string, bool) { return "", false }})
	for _, want := range []string{
		"spry.yaml:3: secrets.db.file: " + filepath.Join(dir, "nope") + ": no such file or directory",
		"spry.yaml:4: secrets.both: want file: or value:, not both",
		`spry.yaml:5: secrets[".hidden"]: ".hidden" is not a valid secret name`,
		"spry.yaml:6: secrets.none: want file: (a file the node reads) or value:",
		"functions.f.envFrom[0]: " + filepath.Join(dir, "missing.env") + ": no such file or directory",
		"functions.f.envFrom[1]: " + filepath.Join(dir, "bad.env") + `:2: want NAME=value, got "not a line"`,
		"functions.f.env.K: ${NOT_SET} is not set in the node's environment (give a default: ${NOT_SET:-value})",
		"functions.f.workDir: " + filepath.Join(dir, "notexec") + ": not a directory",
		"functions.f.limits.memory: want at least 8MiB (an instance's runtime needs it), got 1MiB",
		`functions.f.limits.cpu: want CPUs, more than 0 and at most 1024, like 0.5 or 500m, got "lots"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("a secret's value is in a message:\n%v", err)
	}
}
