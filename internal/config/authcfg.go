package config

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/textproto"
	"os"
	"strings"

	"github.com/spry-dev/spry/internal/auth"
)

// validate turns a chain's auth: into an auth.Config: ${VAR} expanded in
// keys and the secret, key files and the JWKS file read. It returns the
// config and a digest of its secrets (for reloads), or nil after adding the
// problems.
func (s *authSpec) validate(dir string, o Options, path string, ps *problems) (*auth.Config, string) {
	c := &auth.Config{}
	bad := false
	for _, it := range s.apiKeys.v {
		v, why := expand(it.v, o.getenv)
		switch {
		case why != "":
			ps.add(it.line, it.path, "%s", why)
			bad = true
		case v == "":
			ps.add(it.line, it.path, "an empty API key")
			bad = true
		default:
			c.APIKeys = append(c.APIKeys, v)
		}
	}
	if f := s.apiKeysFile; f.ok() {
		p, why := expand(f.v, o.getenv)
		var err error
		if why == "" {
			p, err = resolve(p, dir)
		}
		var data []byte
		if why == "" && err == nil {
			data, err = os.ReadFile(p)
		}
		if err != nil {
			why = p + ": " + reason(err)
		}
		if why != "" {
			ps.add(f.line, path+".apiKeysFile", "%s", why)
			bad = true
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if k := strings.TrimSpace(sc.Text()); k != "" && k[0] != '#' {
				c.APIKeys = append(c.APIKeys, k)
			}
		}
	}
	if h := s.apiKeyHeader; h.ok() {
		if !isToken(h.v) {
			ps.add(h.line, path+".apiKeyHeader", "%q is not an HTTP header name", h.v)
			bad = true
		}
		c.APIKeyHeader = textproto.CanonicalMIMEHeaderKey(h.v)
	}
	if s.jwtLine != 0 {
		j := &auth.JWT{Issuer: s.issuer.v, Audience: s.audience.v, Leeway: s.leeway.v}
		if sec := s.secret; sec.ok() {
			v, why := expand(sec.v, o.getenv)
			switch {
			case why != "":
				ps.add(sec.line, path+".jwt.secret", "%s", why)
				bad = true
			case len(v) < 32:
				ps.add(sec.line, path+".jwt.secret", "want at least 32 bytes for HS256 (a shorter secret can be guessed)")
				bad = true
			default:
				j.Secret = []byte(v)
			}
		}
		if k := s.jwks; k.ok() {
			p, why := expand(k.v, o.getenv)
			var err error
			if why == "" {
				if p, err = resolve(p, dir); err == nil {
					j.Keys, err = auth.LoadJWKS(p)
				}
			}
			if err != nil {
				why = p + ": " + reason(err)
			}
			if why != "" {
				ps.add(k.line, path+".jwt.jwks", "%s", why)
				bad = true
			}
		}
		if !s.secret.ok() && !s.jwks.ok() && !bad {
			ps.add(s.jwtLine, path+".jwt", "want secret: (HS256) or jwks: (RS256)")
			bad = true
		}
		c.JWT = j
	}
	if !bad && len(c.APIKeys) == 0 && c.JWT == nil {
		ps.add(s.line, path, "want apiKeys:, apiKeysFile: or jwt:")
		bad = true
	}
	if bad {
		return nil, ""
	}
	h := sha256.New()
	for _, k := range c.APIKeys {
		h.Write([]byte(k + "\x00"))
	}
	if c.JWT != nil {
		h.Write(c.JWT.Secret)
		for kid, k := range c.JWT.Keys {
			h.Write([]byte(kid + k.N.String()))
		}
	}
	h.Write([]byte(c.APIKeyHeader))
	return c, hex.EncodeToString(h.Sum(nil))
}
