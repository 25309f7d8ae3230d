package main

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func jwt(t *testing.T, alg, kid string, claims map[string]any, secret []byte, key *rsa.PrivateKey) string {
	t.Helper()
	b64 := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid})
	c, _ := json.Marshal(claims)
	signed := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	var sig []byte
	if alg == "HS256" {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(signed))
		sig = m.Sum(nil)
	} else {
		d := sha256.Sum256([]byte(signed))
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	return signed + "." + b64.EncodeToString(sig)
}

// Per-chain auth: API keys and JWTs (HS256, RS256 with a JWKS file) are
// checked in the gateway before anything is taken; good credentials pass,
// bad, expired and missing ones get 401 (403 for a token of another
// audience) with a body that says why.
func TestAuth(t *testing.T) {
	secret := "an HS256 secret of at least 32 bytes!"
	t.Setenv("SPRY_TEST_JWT_SECRET", secret)
	t.Setenv("SPRY_TEST_API_KEY", "key-from-env")
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b64 := base64.RawURLEncoding
	jwks := `{"keys":[{"kty":"RSA","kid":"main","use":"sig","n":"` + b64.EncodeToString(rk.N.Bytes()) +
		`","e":"` + b64.EncodeToString(big.NewInt(int64(rk.E)).Bytes()) + `"}]}`
	if err := os.WriteFile(filepath.Join(dir, "jwks.json"), []byte(jwks), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "spry.yaml")
	os.WriteFile(cfg, []byte(`app: guarded
functions:
  e: {builtin: echo}
chains:
  keys: {route: /keys, steps: [e], auth: {apiKeys: ["${SPRY_TEST_API_KEY}", other-key]}}
  hs: {route: /hs, steps: [e], auth: {jwt: {secret: "${SPRY_TEST_JWT_SECRET}", audience: orders}}}
  rs: {route: /rs, steps: [e], auth: {jwt: {jwks: ./jwks.json}}}
  open: {route: /open, steps: [e]}
`), 0o644)
	n := startNode(t, "-f", cfg)
	c := client(1)
	do := func(route string, hdr ...string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+n.http+route, strings.NewReader("x"))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b), resp.Header
	}
	now := time.Now()
	good := map[string]any{"aud": "orders", "exp": now.Add(time.Hour).Unix()}
	for _, c := range []struct {
		name, route string
		hdr         []string
		status      int
		body        string
	}{
		{"key from env", "/keys", []string{"X-API-Key", "key-from-env"}, 200, "x"},
		{"second key as bearer", "/keys", []string{"Authorization", "Bearer other-key"}, 200, "x"},
		{"bad key", "/keys", []string{"X-API-Key", "guess"}, 401, "spry: invalid API key\n"},
		{"no key", "/keys", nil, 401, "spry: missing credentials\n"},
		{"hs256", "/hs", []string{"Authorization", "Bearer " + jwt(t, "HS256", "", good, []byte(secret), nil)}, 200, "x"},
		{"hs256 expired", "/hs", []string{"Authorization", "Bearer " + jwt(t, "HS256", "", map[string]any{"aud": "orders", "exp": now.Add(-time.Hour).Unix()}, []byte(secret), nil)}, 401, "spry: token expired\n"},
		{"hs256 other audience", "/hs", []string{"Authorization", "Bearer " + jwt(t, "HS256", "", map[string]any{"aud": "billing", "exp": now.Add(time.Hour).Unix()}, []byte(secret), nil)}, 403, "spry: token audience not accepted\n"},
		{"hs256 forged", "/hs", []string{"Authorization", "Bearer " + jwt(t, "HS256", "", good, []byte("not the secret, but 32 bytes long"), nil)}, 401, "spry: bad token signature\n"},
		{"rs256", "/rs", []string{"Authorization", "Bearer " + jwt(t, "RS256", "main", good, nil, rk)}, 200, "x"},
		{"rs256 unknown kid", "/rs", []string{"Authorization", "Bearer " + jwt(t, "RS256", "old", good, nil, rk)}, 401, "spry: token signed with an unknown key (kid)\n"},
		{"garbage token", "/rs", []string{"Authorization", "Bearer x.y"}, 401, "spry: malformed token"},
		{"open chain", "/open", nil, 200, "x"},
	} {
		status, body, h := do(c.route, c.hdr...)
		if status != c.status || !strings.HasPrefix(body, c.body) {
			t.Errorf("%s: %d %q, want %d %q", c.name, status, body, c.status, c.body)
		}
		if status == 401 && h.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: a 401 without WWW-Authenticate", c.name)
		}
	}
	if logs := n.logs(); strings.Contains(logs, secret) || strings.Contains(logs, "key-from-env") {
		t.Errorf("a credential is in the node's output")
	}
	n.waitFreeBuffers("guarded")
}

// The admin API can require a bearer token; the verbs send
// $SPRY_ADMIN_TOKEN.
func TestAdminToken(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "admin.token")
	os.WriteFile(tok, []byte("s3cret-admin-token\n"), 0o600)
	n := startNode(t, "--admin-token-file", tok)
	resp, err := adminClient.Get("http://" + n.admin + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status without the token: %d", resp.StatusCode)
	}
	if resp, err := adminClient.Get("http://" + n.admin + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	cmd := exec.Command(spryBin, "status", "--admin", n.admin)
	cmd.Env = append(os.Environ(), "SPRY_ADMIN_TOKEN=s3cret-admin-token")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "app demo") {
		t.Fatalf("spry status with the token: %v\n%s", err, out)
	}
	cmd = exec.Command(spryBin, "status", "--admin", n.admin)
	cmd.Env = append(os.Environ(), "SPRY_ADMIN_TOKEN=wrong")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "401") {
		t.Fatalf("spry status with a wrong token: %v\n%s", err, out)
	}
}
