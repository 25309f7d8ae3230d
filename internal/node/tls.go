package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spry-dev/spry/internal/config"
)

// certs holds the gateway's TLS certificate. The gateway asks it for the
// certificate at every handshake, so a reload (ReloadCerts: spry reload,
// SIGHUP) changes what new connections get while the open ones stay.
type certs struct {
	mu        sync.Mutex // files, and loading
	files     config.TLS
	cur       atomic.Pointer[tls.Certificate]
	loaded    atomic.Int64 // when cur was loaded (unix ns)
	fromFlags bool         // the files came from the command line, not spry.yaml
}

// load reads the certificate and key files; on error the one in use stays.
func (c *certs) load(files config.TLS) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if files.Cert == "" || files.Key == "" {
		return errors.New("node: TLS: want both a certificate and a key file")
	}
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		return fmt.Errorf("node: TLS: %w", err)
	}
	c.files = files
	c.cur.Store(&cert)
	c.loaded.Store(time.Now().UnixNano())
	return nil
}

func (c *certs) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// tlsConfig is the gateway's TLS configuration: modern defaults from
// crypto/tls (TLS 1.2 and up), the certificate from c.
func (c *certs) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.get}
}

// ReloadCerts reads the gateway's certificate and key again (files names
// new ones, or the zero TLS for the same): connections already open keep
// theirs, new handshakes get the new one. On error the one in use stays.
// A node that serves no TLS has nothing to reload.
func (n *Node) ReloadCerts(files config.TLS) error {
	if n.certs == nil {
		if files != (config.TLS{}) {
			return errors.New("node: TLS: the node was started without TLS; restart it to serve TLS")
		}
		return nil
	}
	if files == (config.TLS{}) || n.certs.fromFlags {
		n.certs.mu.Lock()
		files = n.certs.files
		n.certs.mu.Unlock()
	}
	if err := n.certs.load(files); err != nil {
		return err
	}
	n.log.Info("TLS certificate loaded", "cert", files.Cert)
	return nil
}
