package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/oidctest"
)

// An identity provider's JWTs work beside API keys through the whole
// server: the token's tenant claim decides the tenant, among those its
// issuer is trusted for, and the control plane decides whether that tenant
// may be served — as for a key.
func TestIdentityProviderTokens(t *testing.T) {
	t.Parallel()
	idp := oidctest.New(t)
	idp.AddRSA(t, "rsa-1")
	idp.AddEC(t, "ec-1")
	issuers, err := json.Marshal([]map[string]any{{
		"issuer":       idp.Issuer(),
		"audience":     "bulkhead",
		"tenant_claim": "org",
		"tenants":      []string{"acme", "beta", "ghost"}, // not gamma
		"role_claim":   "role",
	}})
	if err != nil {
		t.Fatal(err)
	}
	env := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_OIDC__ISSUERS", string(issuers)))
	acme := env.Tenant(t, "acme")
	env.Tenant(t, "beta")
	env.Tenant(t, "gamma")

	token := func(kid, tenant, role string) string {
		c := idp.Claims(tenant)
		c["role"] = role
		return idp.Sign(t, kid, c)
	}
	acmeEditor := token("rsa-1", "acme", "editor")
	betaViewer := token("ec-1", "beta", "viewer")

	me := env.Must(t, 200, "GET", "/v1/me", acmeEditor, nil).Map(t)
	if me["role"] != "editor" || me["tenant"].(map[string]any)["slug"] != "acme" || me["key_id"] != "" ||
		me["issuer"] != idp.Issuer() || me["subject"] != "user-1" {
		t.Errorf("GET /v1/me with a token: %v", me)
	}
	env.Must(t, 201, "POST", "/v1/accounts", acmeEditor, map[string]any{"provider": "aws", "external_id": "111122223333", "name": "prod"})
	if n := len(listAccounts(t, env, acme.Viewer)); n != 1 {
		t.Errorf("acme's API key sees %d accounts written with acme's token, want 1", n)
	}
	if n := len(listAccounts(t, env, betaViewer)); n != 0 {
		t.Errorf("beta's token sees %d accounts of acme", n)
	}
	p := env.Must(t, 403, "POST", "/v1/accounts", betaViewer, map[string]any{"provider": "aws", "external_id": "1", "name": "x"})
	wantProblem(t, p, "read-only")

	// Refused: each a problem with a useful detail and nothing of the token.
	expired := idp.Claims("acme")
	expired["exp"], expired["iat"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix()
	cases := []struct {
		name, token string
		status      int
		detail      string
	}{
		{"tenant its issuer is not trusted for", token("rsa-1", "gamma", "editor"), 401, "not trusted for the tenant"},
		{"trusted but unknown tenant", token("rsa-1", "ghost", "editor"), 401, "does not exist"},
		{"expired", idp.Sign(t, "rsa-1", expired), 401, "expired"},
		{"alg none", oidctest.Unsigned(idp.Claims("acme")), 401, "algorithm"},
		{"HS256 with the public key", idp.HMACWithPublicKey(t, "rsa-1", idp.Claims("acme")), 401, "algorithm"},
		{"no role", idp.Sign(t, "rsa-1", jwt.MapClaims(without(idp.Claims("acme"), "role"))), 403, "no role"},
	}
	for _, tc := range cases {
		r := env.Must(t, tc.status, "GET", "/v1/accounts", tc.token, nil)
		wantProblem(t, r, tc.detail)
		if tc.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
		if strings.Contains(string(r.Body), "user-1") || strings.Contains(string(r.Body), idp.Issuer()) {
			t.Errorf("%s: the problem shows token contents: %s", tc.name, r.Body)
		}
	}

	// An issuer without a console client is not offered for signing in;
	// the list is public, and the console's policy reaches no issuer.
	if r := env.Must(t, 200, "GET", "/v1/identity-providers", "", nil); strings.TrimSpace(string(r.Body)) != `{"items":[]}` {
		t.Errorf("GET /v1/identity-providers with no console client: %s", r.Body)
	}
	if csp := env.Must(t, 200, "GET", "/console/", "", nil).Header.Get("Content-Security-Policy"); strings.Contains(csp, idp.Issuer()) {
		t.Errorf("the console may connect to an issuer it does not sign in with: %s", csp)
	}

	// The control plane's word holds for tokens as for keys.
	env.Must(t, 200, "POST", "/admin/v1/tenants/acme/suspend", apitest.AdminToken, nil)
	wantProblem(t, env.Must(t, 403, "GET", "/v1/me", acmeEditor, nil), "suspended")
	env.Must(t, 403, "GET", "/v1/me", acme.Editor, nil)
	env.Must(t, 204, "DELETE", "/admin/v1/tenants/beta", apitest.AdminToken, nil)
	wantProblem(t, env.Must(t, 401, "GET", "/v1/me", betaViewer, nil), "does not exist")
}

func listAccounts(t *testing.T, env *apitest.Env, key string) []any {
	t.Helper()
	var list struct {
		Items []any `json:"items"`
	}
	env.Must(t, 200, "GET", "/v1/accounts", key, nil).JSON(t, &list)
	return list.Items
}

func wantProblem(t *testing.T, r *apitest.Response, detail string) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("content type %q, want application/problem+json: %s", ct, r.Body)
	}
	var p struct {
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(r.Body, &p); err != nil || !strings.Contains(p.Detail, detail) {
		t.Errorf("problem detail %q, want it to say %q (%v)", p.Detail, detail, err)
	}
}

func without(c map[string]any, claim string) map[string]any {
	delete(c, claim)
	return c
}
