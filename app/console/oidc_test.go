package console_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/browser"
	"github.com/bulkheadhq/bulkhead/internal/oidctest"
)

// Signing in with an identity provider, in the browser: the Authorization
// Code flow with PKCE against a provider on another origin, which the
// console's policy lets it reach and nothing else. The token is the tab's
// only, never in a URL, and its tenant claim decides what the console
// shows: a token for one tenant never shows another's data, even with the
// other's ids typed into the URL. A forged answer signs nobody in.
var codeInURL = regexp.MustCompile(`[?&](code|id_token|access_token)=`)

func testSignInWithIdentityProvider(t *testing.T, b *browser.Browser) {
	idp := oidctest.New(t)
	idp.AddRSA(t, "rsa-1")
	issuers, err := json.Marshal([]map[string]any{{
		"issuer": idp.Issuer(), "audience": "bulkhead", "tenant_claim": "org",
		"tenants": []string{"tenant-a", "tenant-b"}, "role_claim": "role",
		"console": map[string]any{"client_id": "bulkhead-console", "name": "Test SSO", "scopes": []string{"openid", "profile"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	env := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_OIDC__ISSUERS", string(issuers)))
	callback := env.URL + "/console/signin/callback"
	idp.Client("bulkhead-console", callback)

	// What the console learns, publicly, and the policy it runs under.
	var list struct {
		Items []map[string]any `json:"items"`
	}
	env.Must(t, 200, "GET", "/v1/identity-providers", "", nil).JSON(t, &list)
	if len(list.Items) != 1 || list.Items[0]["issuer"] != idp.Issuer() || list.Items[0]["client_id"] != "bulkhead-console" ||
		list.Items[0]["token"] != "access_token" || list.Items[0]["redirect_path"] != "/console/signin/callback" {
		t.Fatalf("GET /v1/identity-providers: %v", list.Items)
	}
	res, err := env.Client.Get(env.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self' "+idp.Issuer()+";") {
		t.Fatalf("the console's policy does not let it reach the identity provider %s: %s", idp.Issuer(), csp)
	}

	type side struct {
		tenant                  apitest.Tenant
		account, budget, marker string
	}
	sides := make([]side, 2)
	for i, slug := range []string{"tenant-a", "tenant-b"} {
		s := &sides[i]
		s.tenant = env.Tenant(t, slug)
		s.marker = fmt.Sprintf("sso%c", 'A'+i)
		s.account = newAccount(t, env, s.tenant.Editor, s.marker+"-account")
		ingest(t, env, s.tenant.Editor, fmt.Sprintf("%s,%s-service,2025-03-02,%d55555.555555,USD", s.account, s.marker, i+1))
		s.budget = env.Must(t, 201, "POST", "/v1/budgets", s.tenant.Editor, map[string]any{
			"name": s.marker + "-budget", "amount": "100", "currency": "USD", "period": "monthly",
		}).Map(t)["id"].(string)
	}

	p := open(t, b, env)
	const costs = "/console/costs?from=2025-03-01&to=2025-03-14"
	for i, self := range sides {
		other := sides[1-i]
		claims := idp.Claims(self.tenant.Slug)
		claims["role"], claims["sub"] = "viewer", "person-"+self.tenant.Slug
		idp.LogIn(claims)
		asked := len(idp.Authorizations())

		// A person opens a page of the console, chooses the provider, and
		// lands back on that page, signed in.
		p.do("open the sign-in page", chromedp.Navigate(env.URL+costs), chromedp.WaitVisible(chromedp.CSS(`button[data-provider="Test SSO"]`)))
		redeemed := idp.TokenRequests.Load()
		release := idp.Hold()
		t.Cleanup(release)
		p.do("sign in with the identity provider", chromedp.Click(chromedp.CSS(`button[data-provider="Test SSO"]`)))
		// While the code is being redeemed, it is already gone from the
		// address bar.
		for deadline := time.Now().Add(step); idp.TokenRequests.Load() == redeemed; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				release()
				t.Fatalf("the console did not redeem the code within %s", step)
			}
		}
		if href := eval[string](p, `location.href`); href != callback {
			t.Errorf("while the code is redeemed the address bar shows %s, want %s", href, callback)
		}
		release()
		p.ready("after signing in with the identity provider")
		p.settled("after signing in with the identity provider")

		az := idp.Authorizations()
		if len(az) != asked+1 {
			t.Fatalf("the provider saw %d authorization requests, want 1", len(az)-asked)
		}
		q := az[len(az)-1]
		if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 || len(q.Get("state")) < 43 ||
			len(q.Get("nonce")) < 43 || q.Get("redirect_uri") != callback || q.Get("scope") != "openid profile" || q.Get("response_type") != "code" {
			t.Errorf("authorization request: %v", q)
		}
		where := eval[string](p, `location.pathname + location.search`)
		if where != costs {
			t.Errorf("after signing in the console is at %s, want %s", where, costs)
		}
		// The code and state are gone from the address bar; the token is
		// this tab's session's only; nothing of the sign-in is left over.
		got := eval[[]string](p, `[location.href, String(localStorage.length), sessionStorage.getItem('bulkhead.console.key') ?? '',
			String(sessionStorage.getItem('bulkhead.console.signin')), document.cookie]`)
		if strings.Contains(got[0], "code=") || strings.Contains(got[0], "state=") || got[1] != "0" || got[3] != "null" || got[4] != "" {
			t.Errorf("after signing in: url %s, localStorage items %s, pending sign-in %s, cookies %q", got[0], got[1], got[3], got[4])
		}
		// Nor is the code anywhere in the tab's history: the callback's
		// entry was rewritten before the code was redeemed.
		hist, err := browser.Run(p.tab, step, chromedp.NavigationEntries())
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range hist.Entries {
			if codeInURL.MatchString(e.URL) {
				t.Errorf("the tab's history keeps the code: %s", e.URL)
			}
		}
		token := got[2]
		if strings.Count(token, ".") != 2 {
			t.Fatalf("the tab's bearer is not the provider's token: %q", token)
		}
		me := env.Must(t, 200, "GET", "/v1/me", token, nil).Map(t)
		if me["tenant"].(map[string]any)["slug"] != self.tenant.Slug || me["subject"] != "person-"+self.tenant.Slug || me["role"] != "viewer" {
			t.Errorf("the console's token speaks for %v", me)
		}
		if text := p.text(); !strings.Contains(text, self.tenant.Slug) || !strings.Contains(text, "viewer") {
			t.Errorf("the console does not say who is signed in: %q", text)
		}

		forbidden := []string{other.marker, fmt.Sprintf("%d55,555.555555", 2-i), other.account, other.budget}
		look := func(path string, want ...string) {
			t.Helper()
			p.visit(path)
			text := p.text() + eval[string](p, `document.documentElement.outerHTML`)
			for _, f := range forbidden {
				if strings.Contains(text, f) {
					t.Errorf("%s's console (signed in with the provider) at %s shows %s's %q", self.tenant.Slug, path, other.tenant.Slug, f)
				}
			}
			for _, w := range want {
				if !strings.Contains(p.text(), w) {
					t.Errorf("%s's console at %s does not say %q", self.tenant.Slug, path, w)
				}
			}
		}
		look(costs+"&by=service", self.marker+"-service")
		look("/console/budgets", self.marker+"-budget")
		look("/console/budgets/"+other.budget, "No such budget")
		look("/console/accounts/"+other.account, "No such account")
		look(costs+"&tenant="+other.tenant.Slug+"&tenant_id="+other.tenant.ID.String(), self.marker+"-service")
		perCurrency, _ := sums(t, summary(t, env, token, "from=2025-03-01&to=2025-03-14&group_by=day"))
		checkAmounts(t, self.tenant.Slug+" total", entries(p, "[data-total-currency]", "data-total-currency"), perCurrency)
		p.clean()
		p.do("sign out", chromedp.Click(chromedp.CSS(`#nav button`)), chromedp.WaitVisible(chromedp.CSS(`button[data-provider]`)))
		if left := eval[string](p, `sessionStorage.getItem('bulkhead.console.key') ?? ''`); left != "" {
			t.Errorf("signing out left the token in the tab")
		}
	}

	// Answers that do not come from this tab's sign-in: no pending request,
	// then one whose state is not ours. Neither reaches the token endpoint
	// nor signs anyone in, and the code leaves the address bar either way.
	redeemed := idp.TokenRequests.Load()
	forged := func(what, setup, want string) {
		t.Helper()
		p.do(what, chromedp.Navigate(env.URL+"/console/"), chromedp.WaitVisible(chromedp.CSS(`button[data-provider]`)))
		if setup != "" {
			eval[bool](p, setup+"; true")
		}
		p.do(what, chromedp.Navigate(callback+"?code=stolen-code&state=forged-state&iss="+idp.Issuer()),
			chromedp.WaitVisible(chromedp.CSS(`.signin-problem .msg-error`)))
		got := eval[[]string](p, `[location.href, document.querySelector('.signin-problem').textContent, sessionStorage.getItem('bulkhead.console.key') ?? '']`)
		if strings.Contains(got[0], "stolen-code") || !strings.Contains(got[1], want) || got[2] != "" {
			t.Errorf("%s: at %s, saying %q, token %q; want the code gone, %q, no token", what, got[0], got[1], got[2], want)
		}
	}
	forged("an answer nobody asked for", "", "No sign-in of this tab was waiting")
	forged("an answer to another request", fmt.Sprintf(`sessionStorage.setItem('bulkhead.console.signin', JSON.stringify({issuer: %q,
		client_id: 'bulkhead-console', token: 'access_token', token_endpoint: %q, redirect_uri: %q, state: 'the-state-asked-for',
		nonce: 'n', verifier: 'v', return_to: '/console/costs', at: Date.now()}))`, idp.Issuer(), idp.Issuer()+"/token", callback), "(state)")
	if n := idp.TokenRequests.Load() - redeemed; n != 0 {
		t.Errorf("forged answers reached the token endpoint %d times", n)
	}
	// A provider that says no: the console says why, and nobody is signed in.
	idp.LogIn(nil)
	p.do("sign in as nobody", chromedp.Navigate(env.URL+"/console/"), chromedp.Click(chromedp.CSS(`button[data-provider]`)),
		chromedp.WaitVisible(chromedp.CSS(`.signin-problem .msg-error`)))
	if text := eval[string](p, `document.querySelector('.signin-problem').textContent`); !strings.Contains(text, "access_denied") {
		t.Errorf("a refused sign-in says %q", text)
	}
	p.clean()
}
