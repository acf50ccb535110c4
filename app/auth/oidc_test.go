package auth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/internal/oidctest"
)

func issuerConfig(p *oidctest.IDP, tenants ...string) config.Issuer {
	return config.Issuer{
		Issuer: p.Issuer(), Audience: "bulkhead", JWKSURL: p.JWKSURL(), Algorithms: []string{"RS256", "ES256"},
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
	p := oidctest.New(t)
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
	p := oidctest.New(t)
	p.AddRSA(t, "rsa-1")
	other := oidctest.New(t) // trusted too, but only for beta
	other.AddRSA(t, "other-1")
	v := newVerifier(t, issuerConfig(p, "acme"), issuerConfig(other, "beta"))
	stranger := oidctest.New(t) // not trusted at all
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
		{"unknown kid", p.SignAs(t, "rsa-1", "made-up", p.Claims("acme")), "signing key is unknown"},
		{"alg none", oidctest.Unsigned(p.Claims("acme")), "algorithm is not accepted"},
		{"HS256 with the public key", p.HMACWithPublicKey(t, "rsa-1", p.Claims("acme")), "algorithm is not accepted"},
		{"tampered", tamper(p.Sign(t, "rsa-1", p.Claims("acme"))), "signature"},
		{"garbage", "a.b.c", "malformed"},
	}
	for _, tc := range cases {
		_, err := verify(t, v, tc.token)
		refusedFor(t, err, tc.want)
	}
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
	p := oidctest.New(t)
	p.AddRSA(t, "rsa-1")
	v := newVerifier(t, issuerConfig(p, "acme"))
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_, err := verify(t, v, p.SignAs(t, "rsa-1", fmt.Sprintf("made-up-%d", i), p.Claims("acme")))
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
	p := oidctest.New(t)
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
	p := oidctest.New(t)
	p.AddRSA(t, "rsa-1")
	v := newVerifier(t, issuerConfig(p, "acme"))
	if _, err := verify(t, v, p.Sign(t, "rsa-1", p.Claims("acme"))); err != nil {
		t.Fatal(err)
	}
	p.AddRSA(t, "rsa-2")
	good, unknown := p.Sign(t, "rsa-1", p.Claims("acme")), p.Sign(t, "rsa-2", p.Claims("acme"))
	p.Close()
	if _, err := verify(t, v, good); err != nil {
		t.Errorf("cached key while the JWKS is down: %v", err)
	}
	_, err := verify(t, v, unknown)
	refusedFor(t, err, "signing key is unknown")

	// Down from the start: no key is ever trusted.
	down := oidctest.New(t)
	down.AddRSA(t, "rsa-1")
	tok := down.Sign(t, "rsa-1", down.Claims("acme"))
	explicit := issuerConfig(down, "acme")
	discovered := explicit
	discovered.JWKSURL = ""
	down.Close()
	_, err = verify(t, newVerifier(t, explicit), tok)
	refusedFor(t, err, "signing key is unknown")
	_, err = verify(t, newVerifier(t, discovered), tok)
	refusedFor(t, err, "unavailable")
}

func TestClaimMapping(t *testing.T) {
	t.Parallel()
	p := oidctest.New(t)
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
