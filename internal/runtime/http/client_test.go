package http

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/spry-dev/spry/sdk"
)

// pair returns a conn whose peer end the test writes the response into.
func pair(t testing.TB, response string) *conn {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The writer owns its end until it is done with it: closing it
	// earlier could hand the fd number to the next test while a write is
	// still to come.
	done := make(chan struct{})
	go func() {
		defer close(done)
		unix.Write(fds[1], []byte(response))
		unix.Shutdown(fds[1], unix.SHUT_WR)
	}()
	t.Cleanup(func() {
		unix.Close(fds[0]) // a writer blocked on a full socket fails now
		<-done
		unix.Close(fds[1])
	})
	return &conn{fd: fds[0]}
}

func TestReadResponse(t *testing.T) {
	for _, c := range []struct {
		name, resp string
		room       int
		head       bool
		status     int
		body       string
		ctype      string
		keep       bool
		err        string
	}{
		{name: "content-length", resp: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
			status: 200, body: "hello", ctype: "text/plain", keep: true},
		{name: "status and close", resp: "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
			status: 404, body: "no"},
		{name: "chunked", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
			status: 200, body: "abcde", keep: true},
		{name: "http/1.0 until close", resp: "HTTP/1.0 200 OK\r\nServer: py\r\n\r\nthe whole body",
			status: 200, body: "the whole body"},
		{name: "http/1.0 keep-alive", resp: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
			status: 200, body: "x", keep: true},
		{name: "100 continue first", resp: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
			status: 201, body: "ok", keep: true},
		{name: "no body for 204", resp: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, keep: true},
		{name: "no body for HEAD", resp: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", head: true, status: 200, keep: true},
		{name: "too large by length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", room: 10, err: "larger than a pool buffer"},
		{name: "too large chunked", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n", room: 10, err: "larger than a pool buffer"},
		{name: "too large until close", resp: "HTTP/1.0 200 OK\r\n\r\n0123456789ABC", room: 10, err: "larger than a pool buffer"},
		{name: "short body", resp: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", err: "closed the connection"},
		{name: "no answer", resp: "", err: "closed the connection"},
		{name: "bad status line", resp: "HTTP/2 200\r\n\r\n", err: "not valid HTTP/1.1"},
		{name: "bad header line", resp: "HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", err: "not valid HTTP/1.1"},
		{name: "bad length", resp: "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", err: "not valid HTTP/1.1"},
		{name: "bad chunk", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", err: "not valid HTTP/1.1"},
		{name: "huge head", resp: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", headRoom) + "\r\n\r\n", err: "head is larger"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cn := pair(t, c.resp)
			room := c.room
			if room == 0 {
				room = 1024
			}
			out := make([]byte, room+8)
			copy(out[room:], "CANARY!!")
			status, n, keep, err := cn.readResponse(out[:room:room], c.head)
			if !bytes.Equal(out[room:], []byte("CANARY!!")) {
				t.Fatal("wrote past the room it was given")
			}
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want one with %q", err, c.err)
				}
				if c.name == "too large by length" {
					var e *sdk.Error
					if !errors.As(err, &e) || e.Status != 502 {
						t.Errorf("err %v, want an sdk.Error with status 502", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if status != c.status || string(out[:n]) != c.body || keep != c.keep || string(cn.ctype[:cn.nctype]) != c.ctype {
				t.Errorf("got %d %q keep=%v ctype=%q, want %d %q keep=%v ctype=%q",
					status, out[:n], keep, cn.ctype[:cn.nctype], c.status, c.body, c.keep, c.ctype)
			}
		})
	}
}

// Two responses on one keep-alive connection, the second read right after
// the first's bytes.
func TestReadPipelined(t *testing.T) {
	cn := pair(t, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbc")
	out := make([]byte, 16)
	for _, want := range []string{"a", "bc"} {
		_, n, keep, err := cn.readResponse(out, false)
		if err != nil || !keep || string(out[:n]) != want {
			t.Fatalf("got %q keep=%v err=%v, want %q", out[:n], keep, err, want)
		}
	}
}

// Whatever a function answers, the reader returns (an error at worst) and
// never writes beyond the room it is given.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nbody",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, resp string) {
		if len(resp) > 1<<16 {
			return
		}
		cn := pair(t, resp)
		out := make([]byte, 72)
		copy(out[64:], "CANARY!!")
		_, n, _, _ := cn.readResponse(out[:64:64], false)
		if n < 0 || n > 64 || string(out[64:]) != "CANARY!!" {
			t.Fatalf("n=%d, canary %q", n, out[64:])
		}
	})
}
