package baseline

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
)

// Knative's Sequence, for functions that know nothing of the chain (a plain
// HTTP server): the broker delivers the request to the first step's
// sidecar, takes its reply, sends that to the next step's sidecar, and so
// on, and answers the client with the last reply — as a Sequence's channel
// dispatcher does. Routes with a sequence go this way; the others are
// proxied as before.

// serveSequence runs steps for the request r.
func (b *broker) serveSequence(w http.ResponseWriter, r *http.Request, steps []*upstream) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, "broker: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctype := r.Header.Get("Content-Type")
	for _, u := range steps {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, u.pick().String()+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, "broker: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := b.client.Do(req)
		if err != nil {
			http.Error(w, "broker: "+err.Error(), http.StatusBadGateway)
			return
		}
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			http.Error(w, "broker: "+err.Error(), http.StatusBadGateway)
			return
		}
		ctype = resp.Header.Get("Content-Type")
		if resp.StatusCode >= 400 {
			w.WriteHeader(resp.StatusCode)
			w.Write(body)
			return
		}
	}
	if ctype != "" {
		w.Header().Set("Content-Type", ctype)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// RoleHTTPFn is a plain net/http server, with no SDK, running the chain
// workload's step: it increments the eight-digit counter at the start of
// the body and answers with the body. It listens on $PORT (the Knative
// runtime contract), or on Config.Listen. The bench runs it as an http:
// function on Spry and behind a sidecar in the knative-http mode: the same
// function on both.
const RoleHTTPFn = "httpfn"

func runHTTPFn(ctx context.Context, c *Config) error {
	addr := c.Listen
	if p := os.Getenv("PORT"); p != "" {
		addr = "127.0.0.1:" + p
	}
	if addr == "" {
		return fmt.Errorf("httpfn: no $PORT and no listen address")
	}
	return serveHTTP(ctx, addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !IncrementCounter(body) {
			http.Error(w, "want a payload that starts with an 8-digit counter", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
}

// IncrementCounter adds one to the eight-digit decimal counter at the start
// of p, in place (the chain workload's step).
func IncrementCounter(p []byte) bool {
	if len(p) < 8 {
		return false
	}
	n, err := strconv.Atoi(string(p[:8]))
	if err != nil {
		return false
	}
	n++
	for i := 7; i >= 0; i-- {
		p[i] = byte('0' + n%10)
		n /= 10
	}
	return true
}
