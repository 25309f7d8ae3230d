package gateway

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCert makes a self-signed certificate for 127.0.0.1 named cn.
func testCert(t testing.TB, cn string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

// tlsRig is a rig whose listener serves TLS with a certificate that can be
// swapped, as the node's reload does.
func tlsRig(t *testing.T) (*rig, *atomic.Pointer[tls.Certificate], *x509.CertPool) {
	cert, leaf := testCert(t, "first")
	var cur atomic.Pointer[tls.Certificate]
	cur.Store(&cert)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	r := newRigWith(t, rigOpts{buffers: 32, inflight: 32, timeout: 5 * time.Second, tls: &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cur.Load(), nil },
	}})
	return r, &cur, roots
}

func TestTLS(t *testing.T) {
	r, _, roots := tlsRig(t)
	for _, tc := range []struct {
		name  string
		h2    bool
		major int
	}{{"ALPN h2", true, 2}, {"ALPN http/1.1", false, 1}} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: tc.h2}
		if !tc.h2 {
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for range 3 {
			resp, err := cl.Post("https://"+r.addr+"/c", "text/plain", strings.NewReader("secret"))
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "secret" || resp.ProtoMajor != tc.major || resp.TLS.Version < tls.VersionTLS12 {
				t.Fatalf("%s: HTTP/%d %d %q", tc.name, resp.ProtoMajor, resp.StatusCode, b)
			}
		}
		tr.CloseIdleConnections()
	}
	r.waitFree(t, 32)
}

// Plain HTTP to the TLS port gets a clear answer, not a hang or garbage.
func TestTLSPlaintextRequest(t *testing.T) {
	r, _, _ := tlsRig(t)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), "use https://") {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
}

// A certificate swapped under load: no request fails, connections stay
// up, and new handshakes get the new certificate.
func TestTLSCertReloadUnderLoad(t *testing.T) {
	r, cur, roots := tlsRig(t)
	second, leaf2 := testCert(t, "second")
	roots.AddCert(leaf2)
	var failed, served atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: i%2 == 0}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for n := 0; n < 2000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := cl.Post("https://"+r.addr+"/c", "text/plain", strings.NewReader("load"))
				if err != nil {
					failed.Add(1)
					t.Error(err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "load" {
					failed.Add(1)
					t.Errorf("%d %q", resp.StatusCode, b)
					continue
				}
				served.Add(1)
			}
		}()
	}
	for served.Load() < 100 {
		time.Sleep(5 * time.Millisecond)
	}
	cur.Store(&second)
	before := served.Load()
	for served.Load() < before+100 {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed across the reload", failed.Load())
	}
	c, err := tls.Dial("tcp", r.addr, &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Fatalf("a new handshake got %q", cn)
	}
	c.Close()
	r.waitFree(t, 32)
}

// curl, the client most users try first: h2c with prior knowledge, and
// HTTP/2 over TLS by ALPN.
func TestCurlHTTP2(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("SPRY_REQUIRE_CURL") != "" {
			t.Fatal("curl is required (SPRY_REQUIRE_CURL is set) but not installed")
		}
		t.Skip("curl is not installed (Debian package curl)")
	}
	r := newRig(t, 16, 8, 5*time.Second, false)
	out, err := exec.Command(curl, "-sS", "--http2-prior-knowledge", "-w", " %{http_version}", "-d", "plain h2", "http://"+r.addr+"/c").CombinedOutput()
	if err != nil || string(out) != "plain h2 2" {
		t.Fatalf("curl --http2-prior-knowledge: %v %q", err, out)
	}
	out, err = exec.Command(curl, "-sS", "--http2", "-w", " %{http_version}", "-d", "upgraded", "http://"+r.addr+"/c").CombinedOutput()
	if err != nil || string(out) != "upgraded 2" {
		t.Fatalf("curl --http2 (h2c upgrade): %v %q", err, out)
	}
	tr, _, _ := tlsRig(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	cert := tr.g.tls.GetCertificate
	c, _ := cert(nil)
	writePEM(t, ca, c.Certificate[0])
	out, err = exec.Command(curl, "-sS", "--http2", "--cacert", ca, "-w", " %{http_version}", "-d", "over tls", "https://"+tr.addr+"/c").CombinedOutput()
	if err != nil || string(out) != "over tls 2" {
		t.Fatalf("curl --http2 over TLS: %v %q", err, out)
	}
}

func writePEM(t *testing.T, path string, der []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: der})
}
