package baseline

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
)

// The broker (front-end proxy) routes the client's requests to the first
// function of their chain and every later hop (/_fn/NAME/…) to function
// NAME, each to one of the function's sidecars in turn. It is nginx when
// nginx is installed (NginxConfig), else this Go reverse proxy.
type broker struct {
	routes map[string]*upstream
	fns    map[string]*upstream
	seqs   map[string][]*upstream // route → its steps, for Sequences
	proxy  *httputil.ReverseProxy
	client *http.Client
}

type upstream struct {
	addrs []*url.URL
	n     atomic.Uint32
}

func newUpstream(addrs []string) (*upstream, error) {
	u := &upstream{}
	for _, a := range addrs {
		p, err := url.Parse("http://" + a)
		if err != nil {
			return nil, err
		}
		u.addrs = append(u.addrs, p)
	}
	if len(u.addrs) == 0 {
		return nil, fmt.Errorf("no addresses")
	}
	return u, nil
}

func (u *upstream) pick() *url.URL { return u.addrs[int(u.n.Add(1))%len(u.addrs)] }

type upstreamKey struct{}

func runBroker(ctx context.Context, c *Config) error {
	b := &broker{routes: map[string]*upstream{}, fns: map[string]*upstream{}, seqs: map[string][]*upstream{},
		client: &http.Client{Transport: transport()}}
	for fn, addrs := range c.Upstreams {
		u, err := newUpstream(addrs)
		if err != nil {
			return fmt.Errorf("broker: function %s: %w", fn, err)
		}
		b.fns[fn] = u
	}
	for route, fn := range c.Routes {
		if b.fns[fn] == nil {
			return fmt.Errorf("broker: route %s: no upstream %s", route, fn)
		}
		b.routes[route] = b.fns[fn]
	}
	for route, steps := range c.Sequences {
		for _, fn := range steps {
			if b.fns[fn] == nil {
				return fmt.Errorf("broker: sequence %s: no upstream %s", route, fn)
			}
			b.seqs[route] = append(b.seqs[route], b.fns[fn])
		}
	}
	b.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			u := pr.In.Context().Value(upstreamKey{}).(*url.URL)
			pr.Out.URL.Scheme, pr.Out.URL.Host = u.Scheme, u.Host
			pr.Out.Host = u.Host
			pr.Out.Body = limitBody(pr.In)
		},
		Transport:  transport(),
		BufferPool: proxyBuffers{},
	}
	return serveHTTP(ctx, c.Listen, b)
}

func (b *broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if steps := b.seqs[r.URL.Path]; steps != nil {
		b.serveSequence(w, r, steps)
		return
	}
	var u *upstream
	if rest, ok := strings.CutPrefix(r.URL.Path, fnPrefix); ok {
		name, _, _ := strings.Cut(rest, "/")
		u = b.fns[name]
	} else {
		u = b.routes[r.URL.Path]
	}
	if u == nil {
		http.Error(w, "broker: no route for "+r.URL.Path, http.StatusNotFound)
		return
	}
	b.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), upstreamKey{}, u.pick())))
}

// NginxConfig writes an nginx.conf into dir for a broker listening on
// listen with c's routes and upstreams, and returns its path. nginx runs in
// the foreground (daemon off) as root, with as many workers as cores, and
// keeps connections to the sidecars alive.
func NginxConfig(dir, listen string, c *Config) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, `# spry bench: the knative baseline's broker (front-end proxy)
daemon off;
user root;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  client_max_body_size 64m;
  client_body_buffer_size 2m;
  proxy_buffer_size 64k;
  proxy_buffers 32 64k;
  proxy_busy_buffers_size 128k;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $host;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
`, dir)
	fns := make([]string, 0, len(c.Upstreams))
	for fn := range c.Upstreams {
		fns = append(fns, fn)
	}
	sort.Strings(fns)
	for _, fn := range fns {
		fmt.Fprintf(&b, "  upstream fn_%s {\n", ident(fn))
		for _, a := range c.Upstreams[fn] {
			fmt.Fprintf(&b, "    server %s;\n", a)
		}
		b.WriteString("    keepalive 1024;\n    keepalive_requests 100000000;\n  }\n")
	}
	fmt.Fprintf(&b, "  server {\n    listen %s backlog=4096;\n", listen)
	routes := make([]string, 0, len(c.Routes))
	for r := range c.Routes {
		routes = append(routes, r)
	}
	sort.Strings(routes)
	for _, r := range routes {
		fmt.Fprintf(&b, "    location = %s { proxy_pass http://fn_%s; }\n", r, ident(c.Routes[r]))
	}
	for _, fn := range fns {
		fmt.Fprintf(&b, "    location %s%s/ { proxy_pass http://fn_%s; }\n", fnPrefix, fn, ident(fn))
	}
	b.WriteString("  }\n}\n")
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	path := filepath.Join(dir, "nginx.conf")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// ident makes a function name usable in an nginx upstream name.
func ident(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}
