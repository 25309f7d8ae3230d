package load

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Each protocol's client drives a server that speaks it, and checks the
// answers: HTTP/2 in the clear, HTTP/1.1 and HTTP/2 over TLS.
func TestProtos(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(append([]byte(r.Proto+" "), b...))
	})
	tlsSrv := httptest.NewUnstartedServer(echo)
	tlsSrv.EnableHTTP2 = true
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h2s := &http2.Server{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go h2s.ServeConn(c, &http2.ServeConnOpts{Handler: echo})
		}
	}()
	defer ln.Close()
	for _, tc := range []struct{ proto, addr, want string }{
		{ProtoH2C, ln.Addr().String(), "HTTP/2.0 hi"},
		{ProtoTLS, tlsSrv.Listener.Addr().String(), "HTTP/1.1 hi"},
		{ProtoH2, tlsSrv.Listener.Addr().String(), "HTTP/2.0 hi"},
	} {
		req := Request{Raw: Build("POST", "/x", "h", nil, []byte("hi")), WantStatus: 200, WantBody: []byte(tc.want)}
		c := Config{Addr: tc.addr, Proto: tc.proto, Requests: []Request{req}, Connections: 2, Duration: 200 * time.Millisecond}
		runUntil(t, c, func(res *Result) {
			if res.Errors != 0 {
				t.Errorf("%s: %d requests, %d errors: %s", tc.proto, res.Requests, res.Errors, res.FirstErr)
			}
		}, func(res *Result) bool { return res.Requests > 0 })
	}
}
