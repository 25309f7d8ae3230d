// Package kube is the small Kubernetes API client of the node agent and
// the CLI: JSON over HTTPS for the few objects they touch (SpryApps,
// SpryNodes, SpryAssignments, Leases), with credentials from a kubeconfig
// file or the pod's service account. It exists so that `spry` — the node
// and every function instance it starts — carries no client-go: linking
// client-go and controller-runtime added 43 MB to the binary and 25 ms to
// every process start (their package initialisers), cold starts included.
// The controller, which needs watches, caches and leader election, uses
// controller-runtime in its own binary (cmd/spry-controller).
package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spry-dev/spry/internal/cluster/api"
)

// Errors the API server answers that callers act on.
var (
	ErrNotFound = errors.New("kube: not found")
	ErrConflict = errors.New("kube: conflict")
	ErrExists   = errors.New("kube: already exists")
	ErrGone     = errors.New("kube: resource version too old")
)

// Client talks to one API server.
type Client struct {
	server    string
	token     string
	http      *http.Client
	stream    *http.Client // for watches: no overall timeout
	Namespace string       // the kubeconfig context's (or the pod's) namespace, or ""
}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Load finds the cluster: kubeconfig if given, then $KUBECONFIG, then
// the pod's service account, then ~/.kube/config.
func Load(kubeconfig string) (*Client, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig == "" {
		if host := os.Getenv("KUBERNETES_SERVICE_HOST"); host != "" {
			return inCluster(host, os.Getenv("KUBERNETES_SERVICE_PORT"))
		}
		home, _ := os.UserHomeDir()
		kubeconfig = filepath.Join(home, ".kube", "config")
	}
	return FromKubeconfig(kubeconfig)
}

func inCluster(host, port string) (*Client, error) {
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("kube: in-cluster token: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("kube: in-cluster CA: %w", err)
	}
	ns, _ := os.ReadFile(filepath.Join(saDir, "namespace"))
	tc, err := tlsConfig(ca, nil, nil, false)
	if err != nil {
		return nil, err
	}
	c := newClient("https://"+net.JoinHostPort(host, port), tc)
	c.token, c.Namespace = strings.TrimSpace(string(token)), strings.TrimSpace(string(ns))
	return c, nil
}

type kubeconfigFile struct {
	CurrentContext string `yaml:"current-context"`
	Clusters       []struct {
		Name    string `yaml:"name"`
		Cluster struct {
			Server   string `yaml:"server"`
			CAData   string `yaml:"certificate-authority-data"`
			CAFile   string `yaml:"certificate-authority"`
			Insecure bool   `yaml:"insecure-skip-tls-verify"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		Name string `yaml:"name"`
		User struct {
			CertData  string `yaml:"client-certificate-data"`
			KeyData   string `yaml:"client-key-data"`
			CertFile  string `yaml:"client-certificate"`
			KeyFile   string `yaml:"client-key"`
			Token     string `yaml:"token"`
			TokenFile string `yaml:"tokenFile"`
		} `yaml:"user"`
	} `yaml:"users"`
	Contexts []struct {
		Name    string `yaml:"name"`
		Context struct {
			Cluster   string `yaml:"cluster"`
			User      string `yaml:"user"`
			Namespace string `yaml:"namespace"`
		} `yaml:"context"`
	} `yaml:"contexts"`
}

// FromKubeconfig reads a kubeconfig file's current context: server, CA,
// client certificate or token.
func FromKubeconfig(path string) (*Client, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kube: kubeconfig: %w", err)
	}
	var kc kubeconfigFile
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("kube: kubeconfig %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p != "" && !filepath.IsAbs(p) {
			return filepath.Join(dir, p)
		}
		return p
	}
	ctxName := kc.CurrentContext
	if ctxName == "" && len(kc.Contexts) == 1 {
		ctxName = kc.Contexts[0].Name
	}
	var cluster, user, ns string
	found := false
	for _, c := range kc.Contexts {
		if c.Name == ctxName {
			cluster, user, ns, found = c.Context.Cluster, c.Context.User, c.Context.Namespace, true
		}
	}
	if !found {
		return nil, fmt.Errorf("kube: kubeconfig %s: no context %q", path, ctxName)
	}
	var c *Client
	for _, cl := range kc.Clusters {
		if cl.Name != cluster {
			continue
		}
		ca, err := pemData(cl.Cluster.CAData, rel(cl.Cluster.CAFile))
		if err != nil {
			return nil, fmt.Errorf("kube: kubeconfig %s: cluster %s CA: %w", path, cluster, err)
		}
		var cert, key []byte
		var token string
		for _, u := range kc.Users {
			if u.Name != user {
				continue
			}
			if cert, err = pemData(u.User.CertData, rel(u.User.CertFile)); err != nil {
				return nil, fmt.Errorf("kube: kubeconfig %s: user %s certificate: %w", path, user, err)
			}
			if key, err = pemData(u.User.KeyData, rel(u.User.KeyFile)); err != nil {
				return nil, fmt.Errorf("kube: kubeconfig %s: user %s key: %w", path, user, err)
			}
			token = u.User.Token
			if u.User.TokenFile != "" {
				b, err := os.ReadFile(rel(u.User.TokenFile))
				if err != nil {
					return nil, fmt.Errorf("kube: kubeconfig %s: user %s token: %w", path, user, err)
				}
				token = strings.TrimSpace(string(b))
			}
		}
		tc, err := tlsConfig(ca, cert, key, cl.Cluster.Insecure)
		if err != nil {
			return nil, fmt.Errorf("kube: kubeconfig %s: %w", path, err)
		}
		c = newClient(strings.TrimSuffix(cl.Cluster.Server, "/"), tc)
		c.token, c.Namespace = token, ns
	}
	if c == nil {
		return nil, fmt.Errorf("kube: kubeconfig %s: no cluster %q", path, cluster)
	}
	return c, nil
}

func pemData(inline, file string) ([]byte, error) {
	if inline != "" {
		return base64.StdEncoding.DecodeString(inline)
	}
	if file != "" {
		return os.ReadFile(file)
	}
	return nil, nil
}

func tlsConfig(ca, cert, key []byte, insecure bool) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // only when the kubeconfig asks
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, errors.New("no certificate in the CA data")
		}
		tc.RootCAs = pool
	}
	if len(cert) > 0 {
		kp, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return tc, nil
}

func newClient(server string, tc *tls.Config) *Client {
	tr := &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext}
	return &Client{server: server, http: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		stream: &http.Client{Transport: tr}}
}

// Paths of the objects Spry uses.
func AppsPath(ns string) string { return "/apis/spry.dev/v1alpha1/namespaces/" + ns + "/spryapps" }
func AppPath(ns, name string) string {
	return AppsPath(ns) + "/" + name
}
func NodePath(name string) string       { return "/apis/spry.dev/v1alpha1/sprynodes/" + name }
func NodesPath() string                 { return "/apis/spry.dev/v1alpha1/sprynodes" }
func AssignmentPath(name string) string { return AssignmentsPath() + "/" + name }
func AssignmentsPath() string           { return "/apis/spry.dev/v1alpha1/spryassignments" }
func LeasesPath(ns string) string       { return "/apis/coordination.k8s.io/v1/namespaces/" + ns + "/leases" }
func LeasePath(ns, name string) string  { return LeasesPath(ns) + "/" + name }

// Get reads the object at path into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, "GET", path, nil, out)
}

// Create posts in to the collection at path; out (may be nil) gets the result.
func (c *Client) Create(ctx context.Context, path string, in, out any) error {
	return c.do(ctx, "POST", path, in, out)
}

// Update replaces the object at path (its resourceVersion guards it).
func (c *Client) Update(ctx context.Context, path string, in, out any) error {
	return c.do(ctx, "PUT", path, in, out)
}

// Delete deletes the object at path.
func (c *Client) Delete(ctx context.Context, path string) error {
	return c.do(ctx, "DELETE", path, nil, nil)
}

type status struct {
	Message string `json:"message"`
	Reason  string `json:"reason"`
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.send(ctx, c.http, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("kube: %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return statusError(method, path, resp, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("kube: %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kube: %s %s: %w", method, path, err)
	}
	return resp, nil
}

// statusError turns an API server's error answer into an error wrapping
// the matching sentinel.
func statusError(method, path string, resp *http.Response, b []byte) error {
	var s status
	_ = json.Unmarshal(b, &s)
	msg := s.Message
	if msg == "" {
		msg = strings.TrimSpace(string(b))
	}
	var sentinel error
	switch resp.StatusCode {
	case http.StatusNotFound:
		sentinel = ErrNotFound
	case http.StatusConflict:
		sentinel = ErrConflict
		if s.Reason == "AlreadyExists" {
			sentinel = ErrExists
		}
	case http.StatusGone:
		sentinel = ErrGone
	}
	if sentinel != nil {
		return fmt.Errorf("%w: %s %s: %s", sentinel, method, path, msg)
	}
	return fmt.Errorf("kube: %s %s: %s: %s", method, path, resp.Status, msg)
}

// Event is one change a watch reports: Type is ADDED, MODIFIED or
// DELETED (BOOKMARKs only advance the resource version; ERRORs end the
// watch), Object the object as JSON.
type Event struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// Watch watches the object named name in the collection at path (a
// field selector on metadata.name) from resourceVersion rv, calling fn
// with every change until ctx ends, the server closes the watch (after
// timeout; nil is returned then, and the caller watches again from the
// last version it saw), or fn fails. An expired rv is ErrGone: read the
// object again and watch from its version.
func (c *Client) Watch(ctx context.Context, path, name, rv string, timeout time.Duration, fn func(Event) error) error {
	q := url.Values{"watch": {"true"}, "fieldSelector": {"metadata.name=" + name},
		"allowWatchBookmarks": {"true"}, "timeoutSeconds": {fmt.Sprint(max(int(timeout/time.Second), 1))}}
	if rv != "" {
		q.Set("resourceVersion", rv)
	}
	full := path + "?" + q.Encode()
	resp, err := c.send(ctx, c.stream, "GET", full, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return statusError("GET", full, resp, b)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("kube: watch %s: %w", path, err)
		}
		switch ev.Type {
		case "BOOKMARK":
			continue
		case "ERROR":
			var s struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(ev.Object, &s)
			if s.Code == http.StatusGone {
				return fmt.Errorf("%w: watch %s: %s", ErrGone, path, s.Message)
			}
			return fmt.Errorf("kube: watch %s: %d %s", path, s.Code, s.Message)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// Typed helpers with apiVersion/kind filled.

// NewNode returns a SpryNode ready to create.
func NewNode(name string, spec api.NodeSpec) *api.SpryNode {
	return &api.SpryNode{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "SpryNode"},
		Metadata: api.ObjectMeta{Name: name}, Spec: spec}
}

// NewApp returns a SpryApp ready to create.
func NewApp(ns, name string, spec json.RawMessage) *api.SpryApp {
	return &api.SpryApp{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "SpryApp"},
		Metadata: api.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
}

// NewLease returns a Lease ready to create.
func NewLease(ns, name, holder string, duration time.Duration, now time.Time) *api.Lease {
	d := int32(duration / time.Second)
	return &api.Lease{TypeMeta: api.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		Metadata: api.ObjectMeta{Name: name, Namespace: ns},
		Spec:     api.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &d, RenewTime: &api.MicroTime{Time: now}}}
}
