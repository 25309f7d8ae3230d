package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A step's status word is in the app's shared memory, where any process of
// the app may write anything: the client must still get one final,
// well-framed response. A 1xx status is an interim response to an HTTP
// client (it waits on for the final one: a request unanswered, seen as a
// 30 s client timeout under TestHostileInstance), and 204 and 304 carry no
// body (one written after them is read as the next response).
func TestReplyStatuses(t *testing.T) {
	for _, tc := range []struct {
		set  uint16
		want int
		body string
	}{
		{0, 200, "x"},
		{201, 201, "x"},
		{404, 404, "x"},
		{599, 599, "x"},
		{100, 502, ""},
		{101, 502, ""},
		{103, 502, ""},
		{199, 502, ""},
		{600, 502, ""},
		{999, 502, ""},
		{1000, 502, ""},
		{0xffff, 502, ""},
		{204, 204, ""},
		{304, 304, ""},
	} {
		r := newRig(t, 8, 4, 5*time.Second, true)
		nc, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(nc)
		for i := range 2 { // the second on the same connection: framing held
			if _, err := io.WriteString(nc, "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"); err != nil {
				t.Fatal(err)
			}
			d := r.take(t)
			r.p.Header(d.Buf).SetStatus(tc.set)
			r.reply(d)
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("status %d, request %d: %v", tc.set, i, err)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("status %d, request %d: body: %v", tc.set, i, err)
			}
			if resp.StatusCode != tc.want || tc.want != 502 && string(b) != tc.body {
				t.Fatalf("status %d, request %d: got %d %q, want %d %q", tc.set, i, resp.StatusCode, b, tc.want, tc.body)
			}
			if tc.want == 502 && !strings.Contains(string(b), "status") {
				t.Fatalf("status %d: 502 says %q", tc.set, b)
			}
		}
		nc.Close()
		r.waitFree(t, 8)
	}
}
