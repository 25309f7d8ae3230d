package gateway

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseHead(t *testing.T) {
	t.Parallel()
	type want struct {
		method, path, query string
		length              int64
		chunked, close      bool
		expect              bool
		ctype               string
	}
	good := []struct {
		name, head string
		want       want
	}{
		{"post", "POST /hello?x=1&y HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Type: text/plain\r\n\r\n",
			want{"POST", "/hello", "x=1&y", 4, false, false, false, "text/plain"}},
		{"get keep-alive", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", want{"GET", "/", "", -1, false, false, false, ""}},
		{"leading empty lines", "\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n", want{"GET", "/a", "", -1, false, false, false, ""}},
		{"chunked", "PUT /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", want{"PUT", "/a", "", -1, true, false, false, ""}},
		{"close", "GET /a HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n", want{"GET", "/a", "", -1, false, true, false, ""}},
		{"1.0 closes", "GET /a HTTP/1.0\r\n\r\n", want{"GET", "/a", "", -1, false, true, false, ""}},
		{"1.0 keep-alive", "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", want{"GET", "/a", "", -1, false, false, false, ""}},
		{"expect", "POST /a HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n", want{"POST", "/a", "", 9, false, false, true, ""}},
		{"absolute form", "GET http://example.com/p/q?z HTTP/1.1\r\nHost: a\r\n\r\n", want{"GET", "/p/q", "z", -1, false, false, false, ""}},
		{"absolute form, no path", "GET http://example.com HTTP/1.1\r\nHost: a\r\n\r\n", want{"GET", "/", "", -1, false, false, false, ""}},
		{"same length twice", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", want{"POST", "/a", "", 3, false, false, false, ""}},
		{"spaces around value", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: \t 7 \r\n\r\n", want{"POST", "/a", "", 7, false, false, false, ""}},
	}
	for _, tc := range good {
		var r request
		if err := parseHead([]byte(tc.head), &r); err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got := want{string(r.method), string(r.path), string(r.query), r.length, r.chunked, r.close, r.expect, string(r.ctype)}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}

	bad := []struct {
		name, head string
		want       *Error
	}{
		{"no version", "GET /\r\nHost: a\r\n\r\n", errBadRequestLine},
		{"HTTP/2", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", errVersion},
		{"lowercase proto", "GET / http/1.1\r\nHost: a\r\n\r\n", errBadRequestLine},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", errBadMethod},
		{"long method", strings.Repeat("A", 17) + " / HTTP/1.1\r\nHost: a\r\n\r\n", errBadMethod},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", errBadTarget},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", errBadTarget},
		{"relative target", "GET a HTTP/1.1\r\nHost: a\r\n\r\n", errBadTarget},
		{"control in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", errBadTarget},
		{"no colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", errBadHeader},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", errBadHeader},
		{"empty name", "GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", errBadHeader},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", errObsFold},
		{"control in value", "GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n", errBadHeader},
		{"no host", "GET / HTTP/1.1\r\n\r\n", errNoHost},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", errTwoHosts},
		{"negative length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", errBadLength},
		{"plus length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", errBadLength},
		{"huge length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999\r\n\r\n", errBadLength},
		{"list length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", errBadLength},
		{"two lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", errTwoLengths},
		{"length and chunked", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", errLengthAndChunks},
		{"gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", errBadTE},
		{"TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", errTE10},
		{"expect other", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", errExpect},
		{"too many headers", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", MaxHeaders) + "\r\n", errTooManyHeaders},
	}
	for _, tc := range bad {
		var r request
		if err := parseHead([]byte(tc.head), &r); err != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestChunkSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0": 0, "a": 10, "FF": 255, "10;ext=1": 16, " 3 ": 3, "ffffffff": 0xffffffff} {
		if got, ok := parseChunkSize([]byte(in)); !ok || got != want {
			t.Errorf("parseChunkSize(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "12345678901", ";"} {
		if _, ok := parseChunkSize([]byte(in)); ok {
			t.Errorf("parseChunkSize(%q) accepted", in)
		}
	}
}

// FuzzParseHead: the request parser never panics, and what it accepts is
// well formed.
func FuzzParseHead(f *testing.F) {
	f.Add([]byte("POST /hello?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"))
	f.Add([]byte("GET http://h/p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := headEnd(b)
		if n < 0 {
			return
		}
		var r request
		if err := parseHead(b[:n], &r); err != nil {
			if err.Status < 400 || err.Msg == "" {
				t.Fatalf("error without a status or message: %+v", err)
			}
			return
		}
		if !isToken(r.method) || len(r.path) == 0 || r.path[0] != '/' {
			t.Fatalf("accepted method %q path %q", r.method, r.path)
		}
		if bytes.ContainsAny(r.path, " ?#\r\n") || bytes.ContainsAny(r.query, " #\r\n") {
			t.Fatalf("accepted path %q query %q", r.path, r.query)
		}
		if r.chunked && r.length >= 0 {
			t.Fatal("accepted both Content-Length and chunked")
		}
		if r.nh > MaxHeaders {
			t.Fatalf("%d headers", r.nh)
		}
	})
}
