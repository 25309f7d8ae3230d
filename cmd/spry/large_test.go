package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func largeApp(t *testing.T) string {
	fn := filepath.Join(repoRoot(t), "cmd", "spry", "testdata", "graphfn")
	return writeConfig(t, strings.ReplaceAll(`
app: big
pool: {memory: 1GiB}
limits: {maxBody: 256MiB}
functions:
  pass: {go: FN}
  sha: {go: FN}
  big: {go: FN}
chains:
  big: {route: /big, steps: [pass, sha, pass], timeout: 2m}
  gen: {route: /gen, steps: [big], timeout: 1m}
`, "FN", fn))
}

// pattern is a reader of n deterministic bytes (seeded), without a
// length the HTTP client could see (so it sends it chunked unless told).
type pattern struct {
	n, off int
	x      uint64
}

func newPattern(n int, seed uint64) *pattern { return &pattern{n: n, x: seed*0x9e3779b97f4a7c15 | 1} }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := min(len(b), p.n-p.off)
	for i := range k {
		if (p.off+i)%8 == 0 {
			p.x ^= p.x << 13
			p.x ^= p.x >> 7
			p.x ^= p.x << 17
		}
		b[i] = byte(p.x >> (8 * ((p.off + i) % 8)))
	}
	p.off += k
	return k, nil
}

func patternSum(n int, seed uint64) string {
	h := sha256.New()
	io.Copy(h, newPattern(n, seed))
	return hex.EncodeToString(h.Sum(nil))
}

// sendLarge posts n bytes of pattern seed to /big, with Content-Length or
// chunked, and checks that the same bytes come back through the 3-step
// chain and that its middle step saw them whole.
func sendLarge(n *spryNode, c *http.Client, size int, seed uint64, chunked bool) error {
	var body io.Reader = newPattern(size, seed)
	req, _ := http.NewRequest("POST", "http://"+n.http+"/big", body)
	if chunked {
		req.ContentLength = -1
	} else {
		req.ContentLength = int64(size)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	if err != nil {
		return err
	}
	want := patternSum(size, seed)
	if resp.StatusCode != 200 || got != int64(size) || hex.EncodeToString(h.Sum(nil)) != want || resp.Header.Get("X-Sha256") != want {
		return fmt.Errorf("%d bytes (chunked %v): status %d, %d bytes back, sha %s, X-Sha256 %s; want %s",
			size, chunked, resp.StatusCode, got, hex.EncodeToString(h.Sum(nil)), resp.Header.Get("X-Sha256"), want)
	}
	return nil
}

// Bodies of 1 MiB, 64 MiB and 256 MiB through a 3-step chain, with
// Content-Length and chunked, from a few clients at once: every byte back,
// nothing copied on the way (the middle step hashes the pieces in place),
// every buffer and extent back after.
func TestLargePayloads(t *testing.T) {
	n := startNode(t, "-f", largeApp(t))
	c := client(4)
	for _, tc := range []struct{ size, clients int }{{1 << 20, 4}, {64 << 20, 2}, {256 << 20, 1}} {
		for _, chunked := range []bool{false, true} {
			var wg sync.WaitGroup
			errs := make(chan error, tc.clients)
			for k := range tc.clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := sendLarge(n, c, tc.size, uint64(tc.size+k), chunked); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		}
	}
	// A large output a function writes in place (res.Alloc).
	resp, err := c.Post("http://"+n.http+"/gen", "text/plain", strings.NewReader("67108864"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(b) != 64<<20 || b[12345] != byte(12345*7%256) || b[len(b)-1] != byte((len(b)-1)*7) {
		t.Fatalf("64 MiB output: %d, %d bytes", resp.StatusCode, len(b))
	}
	n.waitFreeBuffers("big")
}

// The limits of large bodies: one byte over limits.maxBody is a 413 with
// nothing taken; a client gone in the middle of an upload gives everything
// back; a pool that cannot fit a body answers 503 at once.
func TestLargePayloadLimits(t *testing.T) {
	n := startNode(t, "-f", largeApp(t))
	c := client(2)
	const limit = 256 << 20
	for _, chunked := range []bool{false, true} {
		req, _ := http.NewRequest("POST", "http://"+n.http+"/big", newPattern(limit+1, 1))
		if chunked {
			req.ContentLength = -1
		} else {
			req.ContentLength = limit + 1
		}
		resp, err := c.Do(req)
		if err != nil {
			if chunked && strings.Contains(err.Error(), "connection reset") {
				continue // the gateway answered 413 and closed while the client still sent
			}
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || !strings.Contains(string(b), "limits.maxBody (268435456 bytes) of app big") {
			t.Fatalf("over the limit (chunked %v): %d %q", chunked, resp.StatusCode, b)
		}
		n.waitFreeBuffers("big")
	}

	// Uploads that stop half way: their extents are taken whole, at once.
	hold := func(size int) (net.Conn, string) {
		conn, err := net.Dial("tcp", n.http)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
		io.CopyN(conn, newPattern(size, 2), int64(size/2))
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return conn, line
	}
	var held []net.Conn
	for range 3 { // 768 MiB of the region's 960
		conn, line := hold(256 << 20)
		if line != "" {
			t.Fatalf("a held upload was answered: %q", line)
		}
		held = append(held, conn)
	}
	conn, line := hold(256 << 20)
	if !strings.HasPrefix(line, "HTTP/1.1 503") {
		t.Fatalf("no room for a fourth: %q, want 503 at once", line)
	}
	conn.Close()
	a := findApp(t, n.mustStatus(), "big")
	if a.Pool.ExtentUsed != 768<<20 || a.Pool.ExtentFails == 0 {
		t.Fatalf("extents used %d, failed claims %d", a.Pool.ExtentUsed, a.Pool.ExtentFails)
	}
	for _, conn := range held {
		conn.Close() // gone in the middle of the upload
	}
	n.waitFreeBuffers("big")
	if err := sendLarge(n, c, 64<<20, 3, true); err != nil {
		t.Fatalf("after the aborted uploads: %v", err)
	}
	n.waitFreeBuffers("big")
}
