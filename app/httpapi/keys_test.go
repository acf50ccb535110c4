package httpapi_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
)

type keyList struct {
	Items []map[string]any `json:"items"`
}

func listKeys(t *testing.T, env *apitest.Env, slug string) map[string]map[string]any {
	t.Helper()
	var l keyList
	env.Must(t, 200, "GET", "/admin/v1/tenants/"+slug+"/keys", apitest.AdminToken, nil).JSON(t, &l)
	out := map[string]map[string]any{}
	for _, k := range l.Items {
		if _, ok := k["key"]; ok {
			t.Fatalf("a listed key carries a secret: %v", k)
		}
		out[k["id"].(string)] = k
	}
	return out
}

// meAnswersSoon waits until the server answers GET /v1/me with key by
// status: a change made outside the server reaches its key cache within a
// second (control.Service.Authenticate); the deadline is far longer, for a
// busy machine.
func meAnswersSoon(t *testing.T, env *apitest.Env, key string, status int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := env.Do(t, "GET", "/v1/me", key, nil)
		if r.Status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/me still answers %s 15s after the key's change; want %d", r, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Keys are listed without their secret, with when they were last used,
// recorded at most once a minute; an expired key is a 401.
func TestKeyListExpiryAndLastUsed(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	env.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "acme"})
	env.Must(t, 404, "GET", "/admin/v1/tenants/nope/keys", apitest.AdminToken, nil)
	env.Must(t, 401, "GET", "/admin/v1/tenants/acme/keys", "", nil)

	past := env.Do(t, "POST", "/admin/v1/tenants/acme/keys", apitest.AdminToken,
		map[string]any{"role": "viewer", "expires_at": time.Now().Add(-time.Hour).Format(time.RFC3339)})
	if past.Status != 422 || !strings.Contains(string(past.Body), "expires_at") {
		t.Errorf("a key that expired before it was made: %s; want 422 naming expires_at", past)
	}
	expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	k := env.Must(t, 201, "POST", "/admin/v1/tenants/acme/keys", apitest.AdminToken,
		map[string]any{"role": "editor", "expires_at": expires.Format(time.RFC3339)}).Map(t)
	id, secret := k["id"].(string), k["key"].(string)
	if k["expires_at"] == nil {
		t.Errorf("created key: %v; want its expires_at", k)
	}

	got := listKeys(t, env, "acme")[id]
	if got["status"] != "active" || got["role"] != "editor" || got["last_used_at"] != nil || got["created_at"] == nil {
		t.Errorf("listed before use: %v", got)
	}
	if at, _ := time.Parse(time.RFC3339, got["expires_at"].(string)); !at.Equal(expires) {
		t.Errorf("listed expires_at %v, want %v", got["expires_at"], expires)
	}

	env.Must(t, 200, "GET", "/v1/me", secret, nil)
	first := listKeys(t, env, "acme")[id]["last_used_at"]
	if first == nil {
		t.Fatalf("last_used_at not recorded after a request")
	}
	// Recorded within the last minute: no write. (A value in the future
	// makes this independent of how long the test takes.)
	env.DB.Exec(t, `UPDATE bulkhead.api_keys SET last_used_at = '2999-01-01T00:00:00Z' WHERE id = $1`, id)
	env.Must(t, 200, "GET", "/v1/me", secret, nil)
	if got := listKeys(t, env, "acme")[id]["last_used_at"]; got != "2999-01-01T00:00:00Z" {
		t.Errorf("last_used_at rewritten within a minute: %v", got)
	}
	// (That it is written again a minute on, from a cached key too, is
	// control's TestCachedKeyRecordsItsUse: it needs a clock to move.)

	// Expired: refused like a revoked key, and listed as expired. Changed
	// behind the server's back, it reaches the server's key cache through
	// the authentication generation.
	env.DB.Exec(t, `UPDATE bulkhead.api_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, id)
	meAnswersSoon(t, env, secret, 401)
	if got := listKeys(t, env, "acme")[id]; got["status"] != "expired" {
		t.Errorf("an expired key listed as %v", got["status"])
	}

	env.Must(t, 204, "DELETE", "/admin/v1/keys/"+id, apitest.AdminToken, nil)
	if got := listKeys(t, env, "acme")[id]; got["status"] != "revoked" || got["revoked_at"] == nil {
		t.Errorf("a revoked key listed as %v", got)
	}
}

// Rotation issues a key with the old one's tenant, role and grants; the
// old one works for the grace period, then not.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	env.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "acme"})
	env.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "globex"})
	old := env.Must(t, 201, "POST", "/admin/v1/tenants/acme/keys", apitest.AdminToken, map[string]any{"role": "editor"}).Map(t)
	oldID, oldSecret := old["id"].(string), old["key"].(string)
	env.Must(t, 204, "POST", "/admin/v1/keys/"+oldID+"/grants", apitest.AdminToken, map[string]any{"tenant": "globex"})

	env.Must(t, 422, "POST", "/admin/v1/keys/"+oldID+"/rotate", apitest.AdminToken, map[string]any{"grace_seconds": -1})
	env.Must(t, 404, "POST", "/admin/v1/keys/aaaaaaaaaaaaaaaa/rotate", apitest.AdminToken, nil)
	env.Must(t, 401, "POST", "/admin/v1/keys/"+oldID+"/rotate", "", nil)

	r := env.Must(t, 201, "POST", "/admin/v1/keys/"+oldID+"/rotate", apitest.AdminToken, map[string]any{"grace_seconds": 3600}).Map(t)
	newID, newSecret := r["id"].(string), r["key"].(string)
	if r["replaces"] != oldID || r["tenant"] != "acme" || r["role"] != "editor" || r["replaced_expires_at"] == nil || newID == oldID {
		t.Fatalf("rotated: %v", r)
	}
	if at, err := time.Parse(time.RFC3339, r["replaced_expires_at"].(string)); err != nil || at.Before(time.Now().Add(30*time.Minute)) {
		t.Errorf("the old key ends at %v; want about an hour from now", r["replaced_expires_at"])
	}
	// During the grace period both work and speak for the same tenant.
	for _, s := range []string{oldSecret, newSecret} {
		me := env.Must(t, 200, "GET", "/v1/me", s, nil).Map(t)
		if me["tenant"].(map[string]any)["slug"] != "acme" || me["role"] != "editor" {
			t.Errorf("GET /v1/me: %v", me)
		}
	}
	var grants struct {
		Items []string `json:"items"`
	}
	env.Must(t, 200, "GET", "/admin/v1/keys/"+newID+"/grants", apitest.AdminToken, nil).JSON(t, &grants)
	if len(grants.Items) != 1 || grants.Items[0] != "globex" {
		t.Errorf("the new key's grants: %v; want the old key's [globex]", grants.Items)
	}

	// Rotating the new key with no grace ends it at once.
	r2 := env.Must(t, 201, "POST", "/admin/v1/keys/"+newID+"/rotate", apitest.AdminToken, map[string]any{"grace_seconds": 0}).Map(t)
	env.Must(t, 401, "GET", "/v1/me", newSecret, nil)
	env.Must(t, 200, "GET", "/v1/me", r2["key"].(string), nil)
	env.Must(t, 404, "POST", "/admin/v1/keys/"+newID+"/rotate", apitest.AdminToken, nil)
}

// A key change made through one server reaches another server on the same
// database (here behind PgBouncer in transaction mode, where LISTEN would
// not work), whose key cache answered the key until then without a query:
// at once on the server that made it, within a second on the other.
func TestKeyChangesReachEveryServer(t *testing.T) {
	t.Parallel()
	a := apitest.Start(t, nil)
	b := apitest.Start(t, a.DB, apitest.WithPgBouncer())
	a.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "acme"})
	a.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "globex"})
	newKey := func(slug string) (id, secret string) {
		k := a.Must(t, 201, "POST", "/admin/v1/tenants/"+slug+"/keys", apitest.AdminToken, map[string]any{"role": "viewer"}).Map(t)
		return k["id"].(string), k["key"].(string)
	}
	revoked, revokedSecret := newKey("acme")
	rotated, rotatedSecret := newKey("acme")
	_, globexSecret := newKey("globex")
	for _, s := range []string{revokedSecret, rotatedSecret, globexSecret} {
		for range 3 {
			b.Must(t, 200, "GET", "/v1/me", s, nil)
		}
	}

	a.Must(t, 204, "DELETE", "/admin/v1/keys/"+revoked, apitest.AdminToken, nil)
	a.Must(t, 401, "GET", "/v1/me", revokedSecret, nil)
	meAnswersSoon(t, b, revokedSecret, 401)

	a.Must(t, 201, "POST", "/admin/v1/keys/"+rotated+"/rotate", apitest.AdminToken, map[string]any{"grace_seconds": 0})
	meAnswersSoon(t, b, rotatedSecret, 401)

	a.Must(t, 200, "POST", "/admin/v1/tenants/globex/suspend", apitest.AdminToken, nil)
	meAnswersSoon(t, b, globexSecret, 403)
	a.Must(t, 200, "POST", "/admin/v1/tenants/globex/resume", apitest.AdminToken, nil)
	meAnswersSoon(t, b, globexSecret, 200)
	a.Must(t, 204, "DELETE", "/admin/v1/tenants/globex", apitest.AdminToken, nil)
	meAnswersSoon(t, b, globexSecret, 401)
}
