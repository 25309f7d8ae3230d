package main

import (
	"errors"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Routes with parameters and prefixes reach their chain, the function sees
// the parameters and the rest of the path, and the headers and content
// type it sets reach the client.
func TestRoutesAndHeaders(t *testing.T) {
	probe := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "probe")
	cfg := writeConfig(t, `app: web
functions:
  p: {go: `+probe+`}
  echo: {builtin: echo}
chains:
  user: {route: "/users/{id}", steps: [p], methods: [POST]}
  me: {route: /users/me, steps: [echo], methods: [POST]}
  files: {route: "/users/{id}/files/*", steps: [p], methods: [POST]}
  static: {route: "/static/*", steps: [p], methods: [POST]}
`)
	n := startNode(t, "-f", cfg)
	c := client(1)
	post := func(route, body string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Post("http://"+n.http+route, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	resp, body := post("/users/42", "param:id\npath:\nfullpath:\nheader:Location=/users/42\nadd:Set-Cookie=a=1\nadd:Set-Cookie=b=2\nheader:Cache-Control=no-store\nctype:application/json")
	for _, want := range []string{"param:id: 42\n", "path:: /users/42\n", "fullpath:: /users/42\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("/users/42: body lacks %q:\n%s", want, body)
		}
	}
	if resp.StatusCode != 200 || resp.Header.Get("Location") != "/users/42" || resp.Header.Get("Cache-Control") != "no-store" ||
		strings.Join(resp.Header.Values("Set-Cookie"), ",") != "a=1,b=2" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("/users/42: %d %v", resp.StatusCode, resp.Header)
	}
	// A literal route beats the parameter; a function that sets no
	// content type does not answer with the request's.
	resp, body = post("/users/me", "hi")
	if body != "hi" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("/users/me: %q %v", body, resp.Header)
	}
	_, body = post("/users/7/files/docs/a.txt", "param:id\npath:\nfullpath:\nparam:*")
	for _, want := range []string{"param:id: 7\n", "path:: /docs/a.txt\n", "fullpath:: /users/7/files/docs/a.txt\n", "param:*: /docs/a.txt\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("files: body lacks %q:\n%s", want, body)
		}
	}
	_, body = post("/static", "path:")
	if !strings.Contains(body, "path:: /\n") {
		t.Errorf("/static: %q", body)
	}
	for _, route := range []string{"/users/", "/users/42/other", "/nope"} {
		if resp, _ := post(route, "x"); resp.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", route, resp.StatusCode)
		}
	}
	// A header the gateway owns, or one with a line break, fails the step
	// with the reason instead of reaching the client.
	resp, body = post("/users/1", "header:Content-Length=5")
	if resp.StatusCode != 502 || !strings.Contains(body, `"Content-Length": the gateway sets it`) {
		t.Errorf("framing header: %d %q", resp.StatusCode, body)
	}
	// A status no HTTP client takes as a final answer (1xx is interim: the
	// client would wait on for another) is answered 502 with the reason;
	// 204 and 304 go out without the body, and the connection (one, kept
	// alive) still frames the next response.
	quick := &http.Client{Timeout: 10 * time.Second, Transport: c.Transport}
	for _, code := range []int{100, 103, 199, 600} {
		resp, err := quick.Post("http://"+n.http+"/users/1", "text/plain", strings.NewReader("status:"+strconv.Itoa(code)))
		if err != nil {
			t.Fatalf("status %d: %v", code, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "answered with status " + strconv.Itoa(code) + ", which is no final HTTP status"; resp.StatusCode != 502 || !strings.Contains(string(b), want) {
			t.Errorf("status %d: %d %q", code, resp.StatusCode, b)
		}
	}
	for _, code := range []int{204, 304} {
		if resp, body := post("/users/1", "status:"+strconv.Itoa(code)); resp.StatusCode != code || body != "" {
			t.Errorf("status %d: %d %q", code, resp.StatusCode, body)
		}
		if resp, body := post("/users/me", "next"); resp.StatusCode != 200 || body != "next" {
			t.Errorf("after %d: %d %q", code, resp.StatusCode, body)
		}
	}
}

// --check reports two routes of one shape, within an app and across apps.
func TestCheckRouteConflicts(t *testing.T) {
	a := writeConfig(t, "app: a\nfunctions:\n  e: {builtin: echo}\nchains:\n  x: {route: \"/u/{id}\", steps: [e]}\n  y: {route: \"/u/{name}\", steps: [e]}\n  z: {route: \"/s/*/x\", steps: [e]}\n")
	b := writeConfig(t, "app: b\nfunctions:\n  e: {builtin: echo}\nchains:\n  x: {route: \"/u/{uid}\", steps: [e]}\n")
	out, err := exec.Command(spryBin, "up", "--check", "-f", a, "-f", b).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("--check: %v\n%s", err, out)
	}
	for _, want := range []string{
		`chains.y.route: /u/{name} is already served by chain "x" (line 5) as /u/{id} (the same route: parameter names do not tell routes apart)`,
		`chains.z.route: "/s/*/x" is not a valid route: * must be the last segment`,
		`chains.x.route: /u/{uid} is already served by app "a"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--check output lacks %q:\n%s", want, out)
		}
	}
}
