package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A request refused before its body (or the rest of its head) was read is
// answered, and the client receives the answer even though it is still
// sending: the gateway half-closes and drains instead of closing on unread
// input, which would make the kernel reset the connection and lose the
// answer.
func TestRefusedWhileSending(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, false)
	for _, tc := range []struct {
		name   string
		head   string
		status int
	}{
		{"body too large", "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(8<<20) + "\r\n\r\n", 413},
		{"head too large", "POST /c HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 2*MaxHeaderBytes), 431},
		{"unknown route", "POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(8<<20) + "\r\n\r\n", 404},
	} {
		for i := range 10 {
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			// The client sends all it has before it reads (as many
			// clients do): 1 MiB, well within what the gateway drains.
			io.WriteString(c, tc.head)
			chunk := []byte(strings.Repeat("z", 16<<10))
			for k := range 64 {
				if _, err := c.Write(chunk); err != nil {
					t.Fatalf("%s #%d: writing the body (chunk %d): %v", tc.name, i, k, err)
				}
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("%s #%d: no answer: %v", tc.name, i, err)
			}
			io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s #%d: %d, want %d", tc.name, i, resp.StatusCode, tc.status)
			}
			c.Close()
		}
	}
	r.waitFree(t, 8)
}

// A client that sends its refused body slowly (1 MiB over ~1.3 s, a pause
// well under a second between parts) still reads its answer: the gateway
// drains while the client keeps sending. (The drain had one bound for all
// of it, 1 s: such a client got "broken pipe" or a reset, not the 413.)
func TestRefusedSlowSender(t *testing.T) {
	r := newRig(t, 8, 4, 5*time.Second, false)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(8<<20)+"\r\n\r\n")
	chunk := []byte(strings.Repeat("z", 64<<10))
	began := time.Now()
	for k := 0; k < 16 || time.Since(began) < 1200*time.Millisecond; k++ {
		time.Sleep(80 * time.Millisecond)
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("writing the body (part %d, %v in): %v", k, time.Since(began).Round(time.Millisecond), err)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	io.ReadAll(resp.Body)
	if resp.StatusCode != 413 {
		t.Fatalf("%d, want 413", resp.StatusCode)
	}
	r.waitFree(t, 8)
}
