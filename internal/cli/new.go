package cli

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// newCmd is `spry new go|python|http|wasm NAME`: a function NAME/ in the
// current directory and a spry.yaml that runs it at /NAME.
func newCmd() *cobra.Command {
	var src string
	cmd := &cobra.Command{
		Use:   "new go|python|http|wasm NAME",
		Short: "Scaffold a function NAME/ and add it (with a chain /NAME) to ./spry.yaml",
		Example: `  spry new python greet && spry up -f spry.yaml
  curl -s localhost:8080/greet -d spry`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name := args[0], args[1]
			if !fnName.MatchString(name) {
				return exitError{2, fmt.Sprintf("%q is not a function name: want lower-case letters, digits, '-' and '_'", name)}
			}
			files, entry, ok := scaffolds(kind, name, src)
			if !ok {
				return exitError{2, fmt.Sprintf("no template %q (known: go, python, http, wasm)", kind)}
			}
			if _, err := os.Stat(name); err == nil {
				return exitError{1, fmt.Sprintf("%s already exists", name)}
			}
			if kind == "go" || kind == "wasm" {
				gomod, _ := exec.Command("go", "env", "GOMOD").Output()
				if m := strings.TrimSpace(string(gomod)); m == "" || m == os.DevNull {
					if src == "" {
						return exitError{2, "a " + kind + ": function needs a Go module with the Spry SDK: run this inside one, or give --spry-src DIR (a checkout of spry) for a go.mod that points at it"}
					}
					abs, _ := filepath.Abs(src)
					files["go.mod"] = fmt.Sprintf("module %s\n\ngo 1.24\n\nrequire github.com/spry-dev/spry v0.0.0\n\nreplace github.com/spry-dev/spry => %s\n", name, abs)
				}
			}
			if err := os.Mkdir(name, 0o755); err != nil {
				return err
			}
			for f, content := range files {
				if err := os.WriteFile(filepath.Join(name, f), []byte(content), 0o644); err != nil {
					return err
				}
			}
			if files["go.mod"] != "" {
				// go.sum, so that spry up builds it at once.
				tidy := exec.Command("go", "mod", "tidy")
				tidy.Dir = name
				if out, err := tidy.CombinedOutput(); err != nil {
					os.RemoveAll(name)
					return fmt.Errorf("go mod tidy in %s: %v\n%s", name, err, out)
				}
			}
			created, err := addToConfig("spry.yaml", name, entry)
			if err != nil {
				os.RemoveAll(name)
				return err
			}
			w := cmd.OutOrStdout()
			verb := "added to"
			if created {
				verb = "created"
			}
			fmt.Fprintf(w, "%s/: a %s function; spry.yaml %s with chain /%s\n\n  spry up -f spry.yaml\n  curl -s localhost:8080/%s -d spry\n", name, kind, verb, name, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&src, "spry-src", "", "go: a checkout of spry for the function's go.mod, when not inside a Go module")
	return cmd
}

var fnName = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`)

// scaffolds returns a template's files and its function entry in spry.yaml.
func scaffolds(kind, name, src string) (map[string]string, map[string]any, bool) {
	switch kind {
	case "go", "wasm":
		// One source, two ways to run it: a process (go:), or a module in
		// the app's sandbox host (wasm:, built with GOOS=wasip1).
		entry := map[string]any{kind: "./" + name}
		return map[string]string{"main.go": `package main

import (
	"bytes"

	"github.com/spry-dev/spry/sdk"
)

// ` + name + ` answers "Hello, <body>!" (the body upper-cased in place first).
func main() {
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		p := req.Payload() // the request body, in shared memory: no copy
		copy(p, bytes.ToUpper(p))
		res.SetContentType("text/plain; charset=utf-8")
		_, err := res.Write(append(append([]byte("Hello, "), p...), '!'))
		return err
	})
}
`}, entry, true
	case "python":
		return map[string]string{"handler.py": `import spry


def handler(req: spry.Request, res: spry.Response) -> None:
    """Answers "Hello, <body>!" (the body upper-cased in place first)."""
    p = req.payload  # a memoryview into the app's pool: no copy
    p[:] = bytes(p).upper()
    res.set_content_type("text/plain; charset=utf-8")
    res.write(b"Hello, " + bytes(p) + b"!")
`}, map[string]any{"python": "./" + name + "/handler.py"}, true
	case "http":
		return map[string]string{"server.py": `"""An ordinary HTTP server: it listens on $PORT (as Knative's runtime contract
says) and knows nothing of Spry."""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        out = b"Hello, " + body + b"!"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
`}, map[string]any{"http": []string{"python3", "./" + name + "/server.py"}}, true
	}
	return nil, nil, false
}

// addToConfig adds function name (entry) and a chain /name to the config
// at path, creating it when missing. It reports whether it created it.
func addToConfig(path, name string, entry map[string]any) (bool, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		wd, _ := os.Getwd()
		app := strings.Trim(regexp.MustCompile(`[^a-z0-9-]+`).ReplaceAllString(strings.ToLower(filepath.Base(wd)), "-"), "-")
		if app == "" || len(app) > 32 {
			app = "app"
		}
		fn, err := yaml.Marshal(map[string]any{name: entry})
		if err != nil {
			return false, err
		}
		text := fmt.Sprintf("app: %s\nfunctions:\n%schains:\n  %s:\n    route: /%s\n    steps: [%s]\n    methods: [POST]\n",
			app, indent(string(fn)), name, name, name)
		return true, os.WriteFile(path, []byte("# spry up -f spry.yaml  (reference: docs/config.md)\n"+text), 0o644)
	}
	if err != nil {
		return false, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return false, fmt.Errorf("%s: not a spry.yaml mapping (add the function by hand)", path)
	}
	root := doc.Content[0]
	add := func(key string, val any) error {
		var m *yaml.Node
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == key {
				m = root.Content[i+1]
			}
		}
		if m == nil {
			m = &yaml.Node{Kind: yaml.MappingNode}
			root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, m)
		}
		if m.Kind != yaml.MappingNode {
			return fmt.Errorf("%s: %s is not a mapping", path, key)
		}
		for i := 0; i < len(m.Content); i += 2 {
			if m.Content[i].Value == name {
				return fmt.Errorf("%s: %s.%s exists already", path, key, name)
			}
		}
		var v yaml.Node
		if err := v.Encode(val); err != nil {
			return err
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, &v)
		return nil
	}
	if err := add("functions", entry); err != nil {
		return false, err
	}
	if err := add("chains", map[string]any{"route": "/" + name, "steps": []string{name}, "methods": []string{"POST"}}); err != nil {
		return false, err
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return false, err
	}
	return false, os.WriteFile(path, b.Bytes(), 0o644)
}

// indent indents every line of s by two spaces.
func indent(s string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = "  " + l
		}
	}
	return strings.Join(lines, "")
}
