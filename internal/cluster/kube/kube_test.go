package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/cluster/api"
)

// TestKubeconfigAndErrors: a kubeconfig with an inline CA and a token
// reaches a TLS server on 127.0.0.1; the API server's statuses map to the
// sentinel errors.
func TestKubeconfigAndErrors(t *testing.T) {
	var gotAuth string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		switch {
		case r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/sprynodes/a"):
			json.NewEncoder(w).Encode(api.SpryNode{Metadata: api.ObjectMeta{Name: "a", ResourceVersion: "7"}})
		case r.Method == "GET":
			w.WriteHeader(404)
			w.Write([]byte(`{"kind":"Status","reason":"NotFound","message":"sprynodes \"b\" not found"}`))
		case r.Method == "POST":
			w.WriteHeader(409)
			w.Write([]byte(`{"kind":"Status","reason":"AlreadyExists","message":"exists"}`))
		case r.Method == "PUT":
			w.WriteHeader(409)
			w.Write([]byte(`{"kind":"Status","reason":"Conflict","message":"the object has been modified"}`))
		default:
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kc := `apiVersion: v1
kind: Config
current-context: c
contexts: [{name: c, context: {cluster: k, user: u, namespace: shop}}]
clusters: [{name: k, cluster: {server: "` + srv.URL + `", certificate-authority-data: ` + base64.StdEncoding.EncodeToString(ca) + `}}]
users: [{name: u, user: {token: secret}}]
`
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := FromKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace != "shop" {
		t.Errorf("namespace %q", c.Namespace)
	}
	ctx := t.Context()
	var n api.SpryNode
	if err := c.Get(ctx, NodePath("a"), &n); err != nil || n.Metadata.ResourceVersion != "7" {
		t.Fatalf("get: %v %+v", err, n)
	}
	if gotAuth != "Bearer secret" {
		t.Errorf("authorization %q", gotAuth)
	}
	if err := c.Get(ctx, NodePath("b"), &n); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"b" not found`) {
		t.Errorf("missing: %v", err)
	}
	if err := c.Create(ctx, NodesPath(), NewNode("a", api.NodeSpec{}), nil); !errors.Is(err, ErrExists) {
		t.Errorf("create: %v", err)
	}
	if err := c.Update(ctx, NodePath("a"), &n, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("update: %v", err)
	}
}

// TestKubeconfigProblems: each broken kubeconfig is a clear error.
func TestKubeconfigProblems(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	for _, tc := range []struct{ name, kc, want string }{
		{"no context", "current-context: x\n", `no context "x"`},
		{"no cluster", "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n", `no cluster "k"`},
		{"bad CA", "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\nclusters: [{name: k, cluster: {server: https://127.0.0.1:1, certificate-authority-data: bm90IGEgY2VydA==}}]\n", "no certificate in the CA data"},
		{"cert without key", "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: [{name: k, cluster: {server: https://127.0.0.1:1}}]\nusers: [{name: u, user: {client-certificate-data: " + cert + "}}]\n", "client certificate"},
		{"not yaml", "\t:::", "kubeconfig"},
	} {
		path := filepath.Join(t.TempDir(), "kc")
		os.WriteFile(path, []byte(tc.kc), 0o600)
		if _, err := FromKubeconfig(path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := FromKubeconfig(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file: no error")
	}
}

// TestWatch: a watch sends the field selector, version and timeout, skips
// bookmarks, hands on every change, ends cleanly when the server closes
// the stream, and maps an expired version (an ERROR event with 410, or a
// 410 answer) to ErrGone.
func TestWatch(t *testing.T) {
	var mode string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("watch") != "true" || q.Get("fieldSelector") != "metadata.name=n1" || q.Get("timeoutSeconds") != "60" {
			w.WriteHeader(400)
			return
		}
		switch mode {
		case "events":
			if q.Get("resourceVersion") != "" {
				w.WriteHeader(400)
				return
			}
			fl := w.(http.Flusher)
			for _, ev := range []string{
				`{"type":"ADDED","object":{"metadata":{"name":"n1","resourceVersion":"5"}}}`,
				`{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"6"}}}`,
				`{"type":"MODIFIED","object":{"metadata":{"name":"n1","resourceVersion":"7"}}}`,
			} {
				w.Write([]byte(ev + "\n"))
				fl.Flush()
			}
		case "gone event":
			w.Write([]byte(`{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old resource version: 1 (9)"}}` + "\n"))
		case "gone":
			w.WriteHeader(410)
			w.Write([]byte(`{"kind":"Status","reason":"Expired","message":"expired"}`))
		case "garbage":
			w.Write([]byte(`{"type":"ADDED","object":`))
		}
	}))
	defer srv.Close()
	c := newClient(srv.URL, nil)
	ctx := t.Context()

	mode = "events"
	var got []string
	err := c.Watch(ctx, AssignmentsPath(), "n1", "", time.Minute, func(ev Event) error {
		var a api.SpryAssignment
		if err := json.Unmarshal(ev.Object, &a); err != nil {
			return err
		}
		got = append(got, ev.Type+"@"+a.Metadata.ResourceVersion)
		return nil
	})
	if err != nil || strings.Join(got, " ") != "ADDED@5 MODIFIED@7" {
		t.Fatalf("events: %v %v", got, err)
	}
	stop := errors.New("stop")
	if err := c.Watch(ctx, AssignmentsPath(), "n1", "", time.Minute, func(Event) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error: %v", err)
	}
	for _, m := range []string{"gone event", "gone"} {
		mode = m
		if err := c.Watch(ctx, AssignmentsPath(), "n1", "3", time.Minute, func(Event) error { return nil }); !errors.Is(err, ErrGone) {
			t.Fatalf("%s: %v, want ErrGone", m, err)
		}
	}
	mode = "garbage"
	if err := c.Watch(ctx, AssignmentsPath(), "n1", "", time.Minute, func(Event) error { return nil }); err == nil || errors.Is(err, ErrGone) {
		t.Fatalf("truncated event: %v", err)
	}
}
