package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A function in a module of its own, outside this repository, built the way
// README's "Writing a function" tells a user: a go.mod that requires the
// SDK's module and replaces it with a local checkout, `go mod tidy`, and a
// spry.yaml with go: . beside it.
func TestFunctionInOwnModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	dir := t.TempDir()
	// As a user's project directory usually is: reachable by the app's uid.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	files := map[string]string{
		"go.mod": "module example.com/greeter\n\ngo 1.24\n\nrequire github.com/spry-dev/spry v0.0.0\n\nreplace github.com/spry-dev/spry => " + repoRoot(t) + "\n",
		"main.go": `package main

import (
	"os"

	"github.com/spry-dev/spry/sdk"
)

func main() {
	greeting, err := os.ReadFile("greeting.txt") // beside the source: the working directory
	if err != nil {
		panic(err)
	}
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		res.Write(greeting)
		res.Write(req.Payload())
		return nil
	})
}
`,
		"greeting.txt": "hello, ",
		"spry.yaml":    "app: greeter\nfunctions:\n  greet: {go: .}\nchains:\n  greet: {route: /greet, steps: [greet], methods: [POST]}\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tidy := exec.Command("go", "mod", "tidy")
	tidy.Dir = dir
	if out, err := tidy.CombinedOutput(); err != nil {
		t.Fatalf("go mod tidy: %v\n%s", err, out)
	}
	n := startNode(t, "-f", filepath.Join(dir, "spry.yaml"))
	status, got, err := n.post(client(1), "/greet", "world")
	if err != nil || status != 200 || got != "hello, world" {
		t.Fatalf("/greet: %d %q %v", status, got, err)
	}

	// Edit the function and reload: spry rebuilds it and swaps it in.
	src := strings.Replace(files["main.go"], "res.Write(req.Payload())", "res.Write(req.Payload())\n\t\tres.WriteString(\"!\")", 1)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := n.reload(t); err != nil || !strings.Contains(out, "changed greeter") {
		t.Fatalf("spry reload after an edit: %v\n%s", err, out)
	}
	n.waitFor("/greet", "world", func(st int, got string) bool { return st == 200 && got == "hello, world!" })
}
