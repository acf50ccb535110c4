// Package oidctest is an identity provider for tests: OpenID discovery and
// a JWKS served on a loopback port, and tokens signed with its keys —
// RS256 and ES256 — or forged in the ways attackers forge them.
package oidctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// IDP is an identity provider for tests: it serves its discovery document
// and JWKS on a loopback httptest server, counts JWKS fetches, and signs
// tokens with the keys it holds.
type IDP struct {
	srv     *httptest.Server
	Fetches atomic.Int64

	mu     sync.Mutex
	keys   map[string]any // kid → private key
	served []string       // kids the JWKS lists
}

// New starts an identity provider until t ends.
func New(t testing.TB) *IDP {
	t.Helper()
	p := &IDP{keys: map[string]any{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": p.Issuer(), "jwks_uri": p.JWKSURL()})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		p.Fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(p.jwks())
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	return p
}

// Close stops serving: the provider becomes unreachable.
func (p *IDP) Close() { p.srv.Close() }

// Issuer is the provider's issuer URL.
func (p *IDP) Issuer() string { return p.srv.URL }

var (
	keyOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// AddRSA makes kid an RS256 key and serves it.
func (p *IDP) AddRSA(t testing.TB, kid string) {
	t.Helper()
	keyOnce.Do(func() { // RSA keys are slow to make: share a few
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = rsaKeys[len(p.keys)%len(rsaKeys)]
	p.served = append(p.served, kid)
}

// AddEC makes kid an ES256 key and serves it.
func (p *IDP) AddEC(t testing.TB, kid string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = k
	p.served = append(p.served, kid)
}

// Serve replaces the kids the JWKS lists (keys are kept for signing).
func (p *IDP) Serve(kids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.served = kids
}

func (p *IDP) jwks() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	b64 := base64.RawURLEncoding.EncodeToString
	var keys []map[string]string
	for _, kid := range p.served {
		switch k := p.keys[kid].(type) {
		case *rsa.PrivateKey:
			keys = append(keys, map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PrivateKey:
			x, y := make([]byte, 32), make([]byte, 32)
			k.X.FillBytes(x)
			k.Y.FillBytes(y)
			keys = append(keys, map[string]string{"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256",
				"crv": "P-256", "x": b64(x), "y": b64(y)})
		}
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// Sign signs claims with kid's key, naming kid in the header.
func (p *IDP) Sign(t testing.TB, kid string, claims jwt.MapClaims) string {
	t.Helper()
	p.mu.Lock()
	key := p.keys[kid]
	p.mu.Unlock()
	var m jwt.SigningMethod = jwt.SigningMethodRS256
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		m = jwt.SigningMethodES256
	}
	tok := jwt.NewWithClaims(m, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// JWKSURL is where the provider serves its key set.
func (p *IDP) JWKSURL() string { return p.Issuer() + "/keys" }

// Claims are valid claims for p and audience "bulkhead", naming tenant.
func (p *IDP) Claims(tenant string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": p.Issuer(), "aud": "bulkhead", "sub": "user-1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"org": tenant, "role": "editor",
	}
}

// SignAs signs claims with kid's key but names header in the token's kid.
func (p *IDP) SignAs(t testing.TB, kid, header string, claims jwt.MapClaims) string {
	t.Helper()
	tok := p.Sign(t, kid, claims)
	parts := strings.Split(tok, ".")
	h := fmt.Sprintf(`{"alg":"RS256","kid":%q,"typ":"JWT"}`, header)
	parts[0] = base64.RawURLEncoding.EncodeToString([]byte(h))
	return strings.Join(parts, ".")
}

// Unsigned is claims as an alg "none" token.
func Unsigned(claims jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		panic(err) // none with its marker cannot fail
	}
	return s
}

// HMACWithPublicKey is the classic confusion attack: an HS256 token keyed
// with the PEM of kid's published RSA key.
func (p *IDP) HMACWithPublicKey(t testing.TB, kid string, claims jwt.MapClaims) string {
	t.Helper()
	p.mu.Lock()
	pub := &p.keys[kid].(*rsa.PrivateKey).PublicKey
	p.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
