// Package auth checks a request's credentials for a chain before the
// gateway admits it: API keys in a header, and JSON Web Tokens (HS256 with a
// shared secret, RS256 with the keys of a JWKS file) in Authorization:
// Bearer. A request that passes costs a hash and a map lookup once its
// token was seen (verified tokens are cached until they expire); one that
// does not gets a Denial, with the status (401 or 403) and a message that
// says what was wrong without echoing the credential.
package auth

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config is one chain's authentication. With both API keys and JWT, either
// passes.
type Config struct {
	// APIKeys are the accepted keys, sent in APIKeyHeader (default
	// X-API-Key) or as Authorization: Bearer KEY.
	APIKeys      []string
	APIKeyHeader string
	JWT          *JWT
}

// JWT accepts tokens signed with Secret (HS256) or with one of Keys
// (RS256, by the token's kid; a single key also takes tokens without one).
type JWT struct {
	Secret   []byte
	Keys     map[string]*rsa.PublicKey
	Issuer   string        // when set, iss must equal it
	Audience string        // when set, aud must contain it
	Leeway   time.Duration // clock skew allowed on exp and nbf
}

// Denial is why a request is refused.
type Denial struct {
	Status int // 401: no or bad credentials; 403: valid, but not for this chain
	Msg    string
}

func (d *Denial) Error() string { return d.Msg }

// The denials. Messages never contain the credential.
var (
	DenyMissing    = &Denial{401, "missing credentials"}
	DenyAPIKey     = &Denial{401, "invalid API key"}
	DenyMalformed  = &Denial{401, "malformed token (want a JWT: header.payload.signature, base64url)"}
	DenyAlg        = &Denial{401, "token algorithm not accepted"}
	DenyKid        = &Denial{401, "token signed with an unknown key (kid)"}
	DenySignature  = &Denial{401, "bad token signature"}
	DenyExpired    = &Denial{401, "token expired"}
	DenyNotYet     = &Denial{401, "token not valid yet (nbf)"}
	DenyNoExpiry   = &Denial{401, "token has no expiry (exp)"}
	DenyIssuer     = &Denial{403, "token issuer not accepted"}
	DenyAudience   = &Denial{403, "token audience not accepted"}
	DenyBearerOnly = &Denial{401, "want Authorization: Bearer <token>"}
)

// Denials lists every Denial, for callers that prepare a response per one.
var Denials = []*Denial{DenyMissing, DenyAPIKey, DenyMalformed, DenyAlg, DenyKid, DenySignature,
	DenyExpired, DenyNotYet, DenyNoExpiry, DenyIssuer, DenyAudience, DenyBearerOnly}

// Headers is where the checker reads credentials.
type Headers interface {
	Header(name string) []byte
}

// Checker checks requests against one Config. It is safe for concurrent use.
type Checker struct {
	keys   map[[32]byte]struct{} // sha256 of each API key
	header string
	jwt    *JWT
	cache  tokenCache
	// Challenge is the WWW-Authenticate value of a 401.
	Challenge string
}

// New makes a Checker.
func New(c Config) (*Checker, error) {
	if len(c.APIKeys) == 0 && c.JWT == nil {
		return nil, errors.New("auth: want apiKeys or jwt")
	}
	k := &Checker{header: c.APIKeyHeader, jwt: c.JWT}
	if k.header == "" {
		k.header = "X-API-Key"
	}
	var ch []string
	if len(c.APIKeys) > 0 {
		k.keys = map[[32]byte]struct{}{}
		for _, key := range c.APIKeys {
			if key == "" {
				return nil, errors.New("auth: an empty API key")
			}
			k.keys[sha256.Sum256([]byte(key))] = struct{}{}
		}
		ch = append(ch, `ApiKey header="`+k.header+`"`)
	}
	if c.JWT != nil {
		if len(c.JWT.Secret) == 0 && len(c.JWT.Keys) == 0 {
			return nil, errors.New("auth: jwt wants a secret (HS256) or jwks (RS256)")
		}
		ch = append(ch, `Bearer realm="spry"`)
	}
	k.Challenge = strings.Join(ch, ", ")
	k.cache.init(1024)
	return k, nil
}

// Check returns nil when h carries valid credentials, else why not.
func (k *Checker) Check(h Headers, now time.Time) *Denial {
	var bearer []byte
	if a := h.Header("Authorization"); a != nil {
		if len(a) > 7 && equalFold(a[:7], "bearer ") {
			bearer = bytes.TrimSpace(a[7:])
		} else if k.jwt != nil && k.keys == nil {
			return DenyBearerOnly
		}
	}
	if k.keys != nil {
		key := h.Header(k.header)
		if key == nil && bearer != nil && k.jwt == nil {
			key = bearer
		}
		if key != nil {
			if _, ok := k.keys[sha256.Sum256(key)]; ok {
				return nil
			}
			if k.jwt == nil || bearer == nil {
				return DenyAPIKey
			}
		}
	}
	if k.jwt != nil && bearer != nil {
		return k.checkJWT(bearer, now)
	}
	return DenyMissing
}

// checkJWT verifies a token, or finds it among those verified before.
func (k *Checker) checkJWT(tok []byte, now time.Time) *Denial {
	sum := sha256.Sum256(tok)
	if exp, d, ok := k.cache.get(sum); ok {
		if d != nil {
			return d
		}
		if now.Unix() > exp+int64(k.jwt.Leeway/time.Second) {
			return DenyExpired
		}
		return nil
	}
	exp, nbf, d := k.verify(tok, now)
	if d == nil && nbf > now.Unix()+int64(k.jwt.Leeway/time.Second) {
		return DenyNotYet // not cached: it becomes valid later
	}
	if d == nil || d == DenySignature || d == DenyMalformed || d == DenyAlg || d == DenyKid || d == DenyIssuer || d == DenyAudience {
		k.cache.put(sum, exp, d) // a verdict that time does not change
	}
	return d
}

type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

type claims struct {
	Exp *json.Number    `json:"exp"`
	Nbf *json.Number    `json:"nbf"`
	Iss string          `json:"iss"`
	Aud json.RawMessage `json:"aud"`
}

var b64 = base64.RawURLEncoding

// verify checks a token's signature and claims.
func (k *Checker) verify(tok []byte, now time.Time) (exp, nbf int64, d *Denial) {
	parts := bytes.Split(tok, []byte("."))
	if len(parts) != 3 {
		return 0, 0, DenyMalformed
	}
	hb, err1 := b64.DecodeString(string(parts[0]))
	pb, err2 := b64.DecodeString(string(parts[1]))
	sig, err3 := b64.DecodeString(string(parts[2]))
	var h header
	var c claims
	if err1 != nil || err2 != nil || err3 != nil || json.Unmarshal(hb, &h) != nil || json.Unmarshal(pb, &c) != nil {
		return 0, 0, DenyMalformed
	}
	signed := tok[:len(parts[0])+1+len(parts[1])]
	switch h.Alg {
	case "HS256":
		if len(k.jwt.Secret) == 0 {
			return 0, 0, DenyAlg
		}
		m := hmac.New(sha256.New, k.jwt.Secret)
		m.Write(signed)
		if subtle.ConstantTimeCompare(m.Sum(nil), sig) != 1 {
			return 0, 0, DenySignature
		}
	case "RS256":
		if len(k.jwt.Keys) == 0 {
			return 0, 0, DenyAlg
		}
		key := k.jwt.Keys[h.Kid]
		if key == nil && h.Kid == "" && len(k.jwt.Keys) == 1 {
			for _, v := range k.jwt.Keys {
				key = v
			}
		}
		if key == nil {
			return 0, 0, DenyKid
		}
		digest := sha256.Sum256(signed)
		if rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig) != nil {
			return 0, 0, DenySignature
		}
	default:
		return 0, 0, DenyAlg // "none" included
	}
	if c.Exp == nil {
		return 0, 0, DenyNoExpiry
	}
	expf, err := c.Exp.Float64()
	if err != nil {
		return 0, 0, DenyMalformed
	}
	exp = int64(expf)
	if c.Nbf != nil {
		f, err := c.Nbf.Float64()
		if err != nil {
			return 0, 0, DenyMalformed
		}
		nbf = int64(f)
	}
	if k.jwt.Issuer != "" && c.Iss != k.jwt.Issuer {
		return exp, nbf, DenyIssuer
	}
	if k.jwt.Audience != "" && !hasAudience(c.Aud, k.jwt.Audience) {
		return exp, nbf, DenyAudience
	}
	if now.Unix() > exp+int64(k.jwt.Leeway/time.Second) {
		return exp, nbf, DenyExpired
	}
	return exp, nbf, nil
}

// hasAudience reports whether aud (a string or a list of strings) holds want.
func hasAudience(aud json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(aud, &one) == nil {
		return one == want
	}
	var many []string
	return json.Unmarshal(aud, &many) == nil && slices.Contains(many, want)
}

// tokenCache remembers the verdict on recently seen tokens, by their hash,
// so that a client sending the same token again costs a hash and a lookup
// rather than a signature check (an RSA verification is tens of µs). It
// holds at most max tokens; when full, it starts over.
type tokenCache struct {
	mu  sync.RWMutex
	m   map[[32]byte]verdict
	max int
}

type verdict struct {
	exp int64
	d   *Denial
}

func (c *tokenCache) init(max int) { c.m, c.max = make(map[[32]byte]verdict, max), max }

func (c *tokenCache) get(sum [32]byte) (int64, *Denial, bool) {
	c.mu.RLock()
	v, ok := c.m[sum]
	c.mu.RUnlock()
	return v.exp, v.d, ok
}

func (c *tokenCache) put(sum [32]byte, exp int64, d *Denial) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[sum] = verdict{exp, d}
	c.mu.Unlock()
}

// LoadJWKS reads the RSA signing keys of a JWKS file ({"keys": [{"kty":
// "RSA", "kid": …, "n": …, "e": …}, …]}), by kid. Keys of other types, or
// for encryption (use: enc), are skipped.
func LoadJWKS(path string) (map[string]*rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []struct {
			Kty, Kid, Use, Alg, N, E string
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS file: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for i, k := range set.Keys {
		if k.Kty != "RSA" || k.Use == "enc" || k.Alg != "" && k.Alg != "RS256" {
			continue
		}
		n, err1 := b64.DecodeString(k.N)
		e, err2 := b64.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("keys[%d]: malformed n or e", i)
		}
		ev := 0
		for _, c := range e {
			ev = ev<<8 | int(c)
		}
		if _, dup := keys[k.Kid]; dup {
			return nil, fmt.Errorf("keys[%d]: kid %q appears twice", i, k.Kid)
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev}
	}
	if len(keys) == 0 {
		return nil, errors.New("no RSA signing key (kty RSA) in it")
	}
	return keys, nil
}

// equalFold compares ASCII case-insensitively, without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i]|0x20, s[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}
