package main

import (
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
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate for 127.0.0.1 named cn, and
// its key, as PEM files, and returns it.
func writeCert(t *testing.T, certFile, keyFile, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Written beside, then renamed: a reload never reads half a file.
	for _, f := range []struct {
		path string
		b    *pem.Block
	}{{certFile, &pem.Block{Type: "CERTIFICATE", Bytes: der}}, {keyFile, &pem.Block{Type: "PRIVATE KEY", Bytes: kder}}} {
		if err := os.WriteFile(f.path+".new", pem.EncodeToMemory(f.b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Rename(keyFile+".new", keyFile)
	os.Rename(certFile+".new", certFile)
	leaf, _ := x509.ParseCertificate(der)
	return leaf
}

// spry up --tls-cert/--tls-key: HTTPS with HTTP/2 and HTTP/1.1 by ALPN;
// SIGHUP loads a renewed certificate under load with no failed request,
// and new handshakes get it.
func TestTLSNode(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	roots := x509.NewCertPool()
	roots.AddCert(writeCert(t, certFile, keyFile, "first"))
	n := startNode(t, "--tls-cert", certFile, "--tls-key", keyFile)
	if !n.mustStatus().Node.TLS {
		t.Fatal("status does not say the gateway serves TLS")
	}
	var sent, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	limit := time.Now().Add(time.Minute)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: i%2 == 0}
			if i%2 == 1 {
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for time.Now().Before(limit) {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Post("https://"+n.http+"/hello", "text/plain", strings.NewReader("tls"))
				sent.Add(1)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || !strings.Contains(string(b), "SLT") || resp.ProtoMajor != 2-i%2 {
						err = &net.AddrError{Err: resp.Proto + " " + resp.Status + " " + string(b)}
					}
				}
				if err != nil {
					failed.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
				}
			}
		}()
	}
	for sent.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
	}
	roots.AddCert(writeCert(t, certFile, keyFile, "second"))
	n.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(n.logs(), "TLS certificate loaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload after SIGHUP\n%s", n.logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := sent.Load()
	for sent.Load() < before+200 {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed across the certificate reload; first: %s", f, sent.Load(), *firstErr.Load())
	}
	c, err := tls.Dial("tcp", n.http, &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Fatalf("a handshake after the reload got %q", cn)
	}
	t.Logf("%d requests over TLS across the reload, none failed", sent.Load())
}
