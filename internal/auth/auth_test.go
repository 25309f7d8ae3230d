package auth

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type hdrs map[string]string

// Header returns a field; like the gateway's, it allocates nothing (the
// bytes are made once per value and kept).
func (h hdrs) Header(name string) []byte {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return bytesOf(v)
		}
	}
	return nil
}

var kept = map[string][]byte{}

func bytesOf(s string) []byte {
	b, ok := kept[s]
	if !ok {
		b = []byte(s)
		kept[s] = b
	}
	return b
}

// Sign makes a JWT for tests: HS256 with secret, or RS256 with key.
func sign(t testing.TB, alg, kid string, claims map[string]any, secret []byte, key *rsa.PrivateKey) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT", "kid": kid})
	c, _ := json.Marshal(claims)
	signed := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	var sig []byte
	switch alg {
	case "HS256":
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(signed))
		sig = m.Sum(nil)
	case "RS256":
		d := sha256.Sum256([]byte(signed))
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	return signed + "." + b64.EncodeToString(sig)
}

func TestAPIKeys(t *testing.T) {
	k, err := New(Config{APIKeys: []string{"k1", "k2"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, c := range []struct {
		h    hdrs
		want *Denial
	}{
		{hdrs{"X-API-Key": "k1"}, nil},
		{hdrs{"x-api-key": "k2"}, nil},
		{hdrs{"Authorization": "Bearer k2"}, nil},
		{hdrs{"X-API-Key": "k3"}, DenyAPIKey},
		{hdrs{"X-API-Key": ""}, DenyAPIKey},
		{hdrs{}, DenyMissing},
		{hdrs{"Authorization": "Basic azE6"}, DenyMissing},
	} {
		if got := k.Check(c.h, now); got != c.want {
			t.Errorf("%v: %v, want %v", c.h, got, c.want)
		}
	}
	h := hdrs{"X-API-Key": "k1"}
	if n := testing.AllocsPerRun(100, func() { k.Check(h, now) }); n != 0 {
		t.Errorf("%v allocations per good key", n)
	}
}

func TestJWT(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(jwks, []byte(`{"keys":[{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256","n":"`+
		b64.EncodeToString(rk.N.Bytes())+`","e":"`+b64.EncodeToString(big.NewInt(int64(rk.E)).Bytes())+`"},{"kty":"EC","kid":"ec"}]}`), 0o644)
	keys, err := LoadJWKS(jwks)
	if err != nil || len(keys) != 1 {
		t.Fatalf("LoadJWKS: %v %v", keys, err)
	}
	k, err := New(Config{JWT: &JWT{Secret: secret, Keys: keys, Issuer: "me", Audience: "orders", Leeway: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ok := map[string]any{"iss": "me", "aud": []string{"x", "orders"}, "exp": now.Add(time.Hour).Unix()}
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range ok {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return m
	}
	good := sign(t, "HS256", "", ok, secret, nil)
	for _, c := range []struct {
		name, tok string
		want      *Denial
	}{
		{"hs256", good, nil},
		{"hs256 again (cached)", good, nil},
		{"rs256", sign(t, "RS256", "k1", ok, nil, rk), nil},
		{"rs256 one key, no kid", sign(t, "RS256", "", ok, nil, rk), nil},
		{"rs256 other key", sign(t, "RS256", "k1", ok, nil, other), DenySignature},
		{"rs256 unknown kid", sign(t, "RS256", "k9", ok, nil, rk), DenyKid},
		{"hs256 wrong secret", sign(t, "HS256", "", ok, []byte("nope"), nil), DenySignature},
		{"expired", sign(t, "HS256", "", with("exp", now.Add(-time.Minute).Unix()), secret, nil), DenyExpired},
		{"within leeway", sign(t, "HS256", "", with("exp", now.Add(-2*time.Second).Unix()), secret, nil), nil},
		{"not yet", sign(t, "HS256", "", with("nbf", now.Add(time.Minute).Unix()), secret, nil), DenyNotYet},
		{"no exp", sign(t, "HS256", "", with("exp", nil), secret, nil), DenyNoExpiry},
		{"issuer", sign(t, "HS256", "", with("iss", "you"), secret, nil), DenyIssuer},
		{"audience", sign(t, "HS256", "", with("aud", "billing"), secret, nil), DenyAudience},
		{"audience string", sign(t, "HS256", "", with("aud", "orders"), secret, nil), nil},
		{"alg none", strings.Join(strings.Split(sign(t, "HS256", "", ok, secret, nil), ".")[:2], ".") + ".", DenySignature},
		{"garbage", "a.b.c", DenyMalformed},
		{"two parts", "a.b", DenyMalformed},
	} {
		if got := k.Check(hdrs{"Authorization": "Bearer " + c.tok}, now); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// alg none with an unsigned token, and HS256 forged with the RSA
	// public key as the secret (algorithm confusion), are refused.
	none := b64.EncodeToString([]byte(`{"alg":"none"}`)) + "." + b64.EncodeToString([]byte(`{"exp":9999999999}`)) + "."
	if got := k.Check(hdrs{"Authorization": "Bearer " + none}, now); got != DenyAlg {
		t.Errorf("alg none: %v", got)
	}
	rsOnly, _ := New(Config{JWT: &JWT{Keys: keys}})
	forged := sign(t, "HS256", "k1", ok, rk.N.Bytes(), nil)
	if got := rsOnly.Check(hdrs{"Authorization": "Bearer " + forged}, now); got != DenyAlg {
		t.Errorf("HS256 against an RS256-only chain: %v", got)
	}
	if got := k.Check(hdrs{}, now); got != DenyMissing {
		t.Errorf("no token: %v", got)
	}
	if got := k.Check(hdrs{"Authorization": "Basic x"}, now); got != DenyBearerOnly {
		t.Errorf("basic: %v", got)
	}
	// A cached token still expires.
	short := sign(t, "HS256", "", with("exp", now.Add(10*time.Second).Unix()), secret, nil)
	if k.Check(hdrs{"Authorization": "Bearer " + short}, now) != nil || k.Check(hdrs{"Authorization": "Bearer " + short}, now.Add(time.Minute)) != DenyExpired {
		t.Error("a cached token did not expire")
	}
	h := hdrs{"Authorization": "Bearer " + good}
	if n := testing.AllocsPerRun(100, func() { k.Check(h, now) }); n != 0 {
		t.Errorf("%v allocations per cached token", n)
	}
}

func BenchmarkCheck(b *testing.B) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	k, _ := New(Config{APIKeys: []string{"key"}, JWT: &JWT{Secret: secret}})
	now := time.Now()
	tok := sign(b, "HS256", "", map[string]any{"exp": now.Add(time.Hour).Unix()}, secret, nil)
	for _, c := range []struct {
		name string
		h    hdrs
	}{{"api-key", hdrs{"X-API-Key": "key"}}, {"jwt-cached", hdrs{"Authorization": "Bearer " + tok}}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if k.Check(c.h, now) != nil {
					b.Fatal("refused")
				}
			}
		})
	}
}
