package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/config"
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

func newIDP(t *testing.T) *IDP {
	t.Helper()
	p := &IDP{keys: map[string]any{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": p.Issuer(), "jwks_uri": p.Issuer() + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		p.Fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(p.jwks())
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

// Issuer is the provider's issuer URL.
func (p *IDP) Issuer() string { return p.srv.URL }

var (
	keyOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// AddRSA makes kid an RS256 key and serves it.
func (p *IDP) AddRSA(t *testing.T, kid string) {
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
func (p *IDP) AddEC(t *testing.T, kid string) {
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

// Sign signs claims with kid's key.
func (p *IDP) Sign(t *testing.T, kid string, claims jwt.MapClaims) string {
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

// Claims are valid claims for p and audience "bulkhead", naming tenant.
func (p *IDP) Claims(tenant string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": p.Issuer(), "aud": "bulkhead", "sub": "user-1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"org": tenant, "role": "editor",
	}
}

func issuerConfig(p *IDP, tenants ...string) config.Issuer {
	return config.Issuer{
		Issuer: p.Issuer(), Audience: "bulkhead", JWKSURL: p.Issuer() + "/keys", Algorithms: []string{"RS256", "ES256"},
		ClockSkew: 30 * time.Second, TenantClaim: "org", Tenants: tenants, RoleClaim: "role",
	}
}

func newVerifier(t *testing.T, issuers ...config.Issuer) *auth.Verifier {
	t.Helper()
	v := auth.NewVerifier(config.OIDC{
		Issuers:             issuers,
		JWKSRefreshInterval: time.Hour,
		JWKSRefetchInterval: time.Hour, // one refetch per test, whatever it sends
		JWKSTimeout:         10 * time.Second,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(v.Close)
	return v
}

func verify(t *testing.T, v *auth.Verifier, token string) (auth.Identity, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return v.Verify(ctx, token)
}

// refusedFor fails t unless err is a TokenError — a 401 — whose reason
// contains want.
func refusedFor(t *testing.T, err error, want string) {
	t.Helper()
	var te *auth.TokenError
	if !errors.As(err, &te) || !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("want a refused token (%s), got %v", want, err)
	}
	if !strings.Contains(te.Reason, want) {
		t.Fatalf("reason %q, want it to say %q", te.Reason, want)
	}
}

func TestAcceptsRS256AndES256(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	p.AddRSA(t, "rsa-1")
	p.AddEC(t, "ec-1")
	v := newVerifier(t, issuerConfig(p, "acme"))
	for _, kid := range []string{"rsa-1", "ec-1"} {
		id, err := verify(t, v, p.Sign(t, kid, p.Claims("acme")))
		if err != nil {
			t.Fatalf("%s: %v", kid, err)
		}
		want := auth.Identity{Issuer: p.Issuer(), Subject: "user-1", Slug: "acme", Role: auth.Editor}
		if id != want {
			t.Errorf("%s: identity %+v, want %+v", kid, id, want)
		}
	}
	if n := p.Fetches.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times for two known keys, want 1", n)
	}
}

func TestRefusesBadTokens(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	p.AddRSA(t, "rsa-1")
	other := newIDP(t) // trusted too, but only for beta
	other.AddRSA(t, "other-1")
	v := newVerifier(t, issuerConfig(p, "acme"), issuerConfig(other, "beta"))
	stranger := newIDP(t) // not trusted at all
	stranger.AddRSA(t, "stranger-1")

	with := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := p.Claims("acme")
		change(c)
		return c
	}
	hour := time.Hour

	cases := []struct {
		name, token, want string
	}{
		{"expired", p.Sign(t, "rsa-1", with(func(c jwt.MapClaims) {
			c["exp"] = time.Now().Add(-hour).Unix()
			c["iat"] = time.Now().Add(-2 * hour).Unix()
		})), "expired"},
		{"not yet valid", p.Sign(t, "rsa-1", with(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(hour).Unix() })), "not valid yet"},
		{"no expiry", p.Sign(t, "rsa-1", with(func(c jwt.MapClaims) { delete(c, "exp") })), "expiry"},
		{"wrong audience", p.Sign(t, "rsa-1", with(func(c jwt.MapClaims) { c["aud"] = "someone-else" })), "audience"},
		{"untrusted issuer", stranger.Sign(t, "stranger-1", stranger.Claims("acme")), "issuer is not trusted"},
		{"issuer claimed with another's key", stranger.Sign(t, "stranger-1", with(func(jwt.MapClaims) {})), "signing key is unknown"},
		{"tenant the issuer is not trusted for", p.Sign(t, "rsa-1", p.Claims("beta")), "not trusted for the tenant"},
		{"other issuer naming acme", other.Sign(t, "other-1", other.Claims("acme")), "not trusted for the tenant"},
		{"no tenant", p.Sign(t, "rsa-1", with(func(c jwt.MapClaims) { delete(c, "org") })), "names no tenant"},
		{"unknown kid", signWithKid(t, p, "rsa-1", "made-up", p.Claims("acme")), "signing key is unknown"},
		{"alg none", unsigned(p.Claims("acme")), "algorithm is not accepted"},
		{"HS256 with the public key", hmacWithPublicKey(t, p, "rsa-1", p.Claims("acme")), "algorithm is not accepted"},
		{"tampered", tamper(p.Sign(t, "rsa-1", p.Claims("acme"))), "signature"},
		{"garbage", "a.b.c", "malformed"},
	}
	for _, tc := range cases {
		_, err := verify(t, v, tc.token)
		refusedFor(t, err, tc.want)
	}
}

// signWithKid signs with kid's key but names another kid in the header.
func signWithKid(t *testing.T, p *IDP, kid, header string, claims jwt.MapClaims) string {
	t.Helper()
	tok := p.Sign(t, kid, claims)
	parts := strings.Split(tok, ".")
	h := fmt.Sprintf(`{"alg":"RS256","kid":%q,"typ":"JWT"}`, header)
	parts[0] = base64.RawURLEncoding.EncodeToString([]byte(h))
	return strings.Join(parts, ".")
}

func unsigned(claims jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		panic(err)
	}
	return s
}

// hmacWithPublicKey is the classic confusion attack: HS256 keyed with the
// bytes of the issuer's published RSA key.
func hmacWithPublicKey(t *testing.T, p *IDP, kid string, claims jwt.MapClaims) string {
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

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	var c map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(b, &c)
	c["role"] = "editor"
	c["sub"] = "someone-else"
	b, _ = json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestUnknownKidFloodFetchesOnce(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	p.AddRSA(t, "rsa-1")
	v := newVerifier(t, issuerConfig(p, "acme"))
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_, err := verify(t, v, signWithKid(t, p, "rsa-1", fmt.Sprintf("made-up-%d", i), p.Claims("acme")))
			var te *auth.TokenError
			if !errors.As(err, &te) {
				t.Errorf("made-up kid %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	// The first fetch, and at most one refetch for all the made-up kids.
	if n := p.Fetches.Load(); n > 2 {
		t.Errorf("50 made-up kids fetched the JWKS %d times, want at most 2", n)
	}
	// A real key still works from the cache.
	if _, err := verify(t, v, p.Sign(t, "rsa-1", p.Claims("acme"))); err != nil {
		t.Errorf("known key after the flood: %v", err)
	}
}

func TestRotatedKey(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	p.AddRSA(t, "old")
	v := newVerifier(t, issuerConfig(p, "acme"))
	if _, err := verify(t, v, p.Sign(t, "old", p.Claims("acme"))); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}
	p.AddEC(t, "new")
	p.Serve("new") // old removed, new served
	if _, err := verify(t, v, p.Sign(t, "new", p.Claims("acme"))); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	_, err := verify(t, v, p.Sign(t, "old", p.Claims("acme")))
	refusedFor(t, err, "signing key is unknown")
}

func TestUnreachableJWKSFailsClosedButKeepsCache(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	p.AddRSA(t, "rsa-1")
	v := newVerifier(t, issuerConfig(p, "acme"))
	if _, err := verify(t, v, p.Sign(t, "rsa-1", p.Claims("acme"))); err != nil {
		t.Fatal(err)
	}
	p.AddRSA(t, "rsa-2")
	good, unknown := p.Sign(t, "rsa-1", p.Claims("acme")), p.Sign(t, "rsa-2", p.Claims("acme"))
	p.srv.Close()
	if _, err := verify(t, v, good); err != nil {
		t.Errorf("cached key while the JWKS is down: %v", err)
	}
	_, err := verify(t, v, unknown)
	refusedFor(t, err, "signing key is unknown")

	// Down from the start: no key is ever trusted.
	down := newIDP(t)
	down.AddRSA(t, "rsa-1")
	tok := down.Sign(t, "rsa-1", down.Claims("acme"))
	explicit := issuerConfig(down, "acme")
	discovered := explicit
	discovered.JWKSURL = ""
	down.srv.Close()
	_, err = verify(t, newVerifier(t, explicit), tok)
	refusedFor(t, err, "signing key is unknown")
	_, err = verify(t, newVerifier(t, discovered), tok)
	refusedFor(t, err, "unavailable")
}

func TestClaimMapping(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	p.AddRSA(t, "rsa-1")
	ic := issuerConfig(p, "acme", "beta")
	ic.JWKSURL = "" // discovered
	ic.TenantMap = map[string]string{"org_123": "acme", "org.example.com": "beta"}
	ic.RoleClaim = ""
	ic.GroupsClaim = "groups"
	ic.GroupRoles = map[string]string{"finops-readers": "viewer", "finops-admins": "editor"}
	v := newVerifier(t, ic)

	token := func(org string, groups any) string {
		c := p.Claims(org)
		delete(c, "role")
		if groups != nil {
			c["groups"] = groups
		}
		return p.Sign(t, "rsa-1", c)
	}
	cases := []struct {
		org    string
		groups any
		slug   string
		role   auth.Role
	}{
		{"org_123", []any{"finops-readers", "staff"}, "acme", auth.Viewer},
		{"org.example.com", []any{"finops-readers", "finops-admins"}, "beta", auth.Editor},
		{"org_123", "finops-admins", "acme", auth.Editor},
	}
	for _, tc := range cases {
		id, err := verify(t, v, token(tc.org, tc.groups))
		if err != nil {
			t.Fatalf("%s %v: %v", tc.org, tc.groups, err)
		}
		if id.Slug != tc.slug || id.Role != tc.role {
			t.Errorf("%s %v: got %s/%s, want %s/%s", tc.org, tc.groups, id.Slug, id.Role, tc.slug, tc.role)
		}
	}
	_, err := verify(t, v, token("acme", []any{"finops-admins"})) // the slug itself is not a mapped value
	refusedFor(t, err, "not mapped")
	if _, err := verify(t, v, token("org_123", []any{"staff"})); !errors.Is(err, auth.ErrNoRole) {
		t.Errorf("no mapped group: %v, want ErrNoRole", err)
	}
}

func TestIsJWT(t *testing.T) {
	t.Parallel()
	k := auth.NewKey()
	if auth.IsJWT(k.Token) {
		t.Errorf("an API key looks like a JWT: %s", k.Token)
	}
	if !auth.IsJWT("eyJ.eyJ.sig") || auth.IsJWT("a.b") || auth.IsJWT("bh_a.b.c") {
		t.Error("IsJWT misjudges shapes")
	}
}
