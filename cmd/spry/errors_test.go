package main

import (
	"strings"
	"testing"
)

// A function's 4xx (the request's fault) and its failures (the function's)
// are counted apart, in spry status and in spry_function_errors_total.
func TestClientAndServerErrors(t *testing.T) {
	cfg := writeConfig(t, "app: errs\nfunctions:\n  f: {builtin: fail}\nchains:\n  f: {route: /f, steps: [f]}\n")
	n := startNode(t, "-f", cfg)
	c := client(1)
	for _, q := range []string{"?status=400", "?status=404", "?status=422", "?status=500", "?status=503"} {
		if _, _, err := n.post(c, "/f"+q, "x"); err != nil {
			t.Fatal(err)
		}
	}
	in := findFunction(t, findApp(t, n.mustStatus(), "errs"), "f").Instances[0]
	if in.ClientErrors != 3 || in.Errors != 2 {
		t.Errorf("status: %d client errors, %d server errors; want 3 and 2", in.ClientErrors, in.Errors)
	}
	n.wantMetrics(
		`spry_function_errors_total{app="errs",class="client",function="f"} 3`,
		`spry_function_errors_total{app="errs",class="server",function="f"} 2`,
	)
}

// A 413 names the body's size and the setting that bounds it.
func TestTooLargeSaysWhy(t *testing.T) {
	cfg := writeConfig(t, "app: small\npool: {bufferSize: 1KiB}\nlimits: {maxBody: 1KiB}\nfunctions:\n  f: {builtin: echo}\nchains:\n  f: {route: /f, steps: [f]}\n")
	n := startNode(t, "-f", cfg)
	status, body, err := n.post(client(1), "/f", strings.Repeat("x", 2048))
	if err != nil || status != 413 || !strings.Contains(body, "2048 bytes") || !strings.Contains(body, "larger than limits.maxBody (1024 bytes) of app small") {
		t.Fatalf("413: %d %q %v", status, body, err)
	}
}
