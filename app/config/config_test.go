package config_test

import (
	"github.com/bulkheadhq/bulkhead/app"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/app/config"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bulkhead.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLayersLaterWins(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
profile: saas
http:
  addr: 127.0.0.1:9000
database:
  max_connections: 7
  pooler: pgbouncer
log:
  level: warn
`)
	l, err := load(config.Input{
		File: file,
		Env: []string{
			"BULKHEAD_HTTP_ADDR=127.0.0.1:9001",
			"BULKHEAD_DATABASE__MAX_CONNECTIONS=8",
			"BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS=33",
			"PATH=/bin",
		},
		Flags: []config.Flag{{Name: "http-addr", Key: "http.addr", Value: "127.0.0.1:9002"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	checks := []struct {
		key, got, want, source string
	}{
		{"profile", c.Profile, "saas", "file " + file},
		{"isolation.strategy", c.Isolation.Strategy, "rls", "profile saas"},
		{"system.enabled", boolString(c.System.Enabled), "true", "profile saas"},
		{"database.pooler", c.Database.Pooler, "pgbouncer", "file " + file},
		{"log.level", c.Log.Level, "warn", "file " + file},
		{"database.max_connections", itoa(c.Database.MaxConnections), "8", "env BULKHEAD_DATABASE__MAX_CONNECTIONS"},
		{"isolation.database.max_connections", itoa(databaseConfig(c).MaxConnections), "33", "env BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS"},
		{"http.addr", c.HTTP.Addr, "127.0.0.1:9002", "flag --http-addr"},
		{"http.shutdown_timeout", c.HTTP.ShutdownTimeout.String(), "15s", "default"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.key, ch.got, ch.want)
		}
		if got := l.Sources[ch.key]; got != ch.source {
			t.Errorf("%s came from %q, want %q", ch.key, got, ch.source)
		}
	}
}

func TestProfileDefaults(t *testing.T) {
	t.Parallel()
	for profile, strategy := range map[string]string{
		"saas": "rls", "regulated": "schema", "enterprise": "database", "community": "rls",
	} {
		l, err := load(config.Input{Env: []string{"BULKHEAD_PROFILE=" + profile}})
		if err != nil {
			t.Fatalf("%s: %v", profile, err)
		}
		if l.Config.Isolation.Strategy != strategy {
			t.Errorf("%s: strategy %q, want %q", profile, l.Config.Isolation.Strategy, strategy)
		}
		// An explicit strategy overrides the profile's.
		l, err = load(config.Input{Env: []string{"BULKHEAD_PROFILE=" + profile, "BULKHEAD_ISOLATION=schema"}})
		if err != nil || l.Config.Isolation.Strategy != "schema" {
			t.Errorf("%s with BULKHEAD_ISOLATION=schema: %v, %v", profile, l, err)
		}
	}
	l, err := load(config.Input{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.Profile != "community" || l.Config.Tenants.Bootstrap == "" {
		t.Errorf("default profile: %+v", l.Config)
	}
	if got := l.Config.Isolation.Allowed; !slices.Equal(got, []string{"rls", "schema", "database"}) {
		t.Errorf("isolation.allowed by default: %v, want every strategy", got)
	}
	l, err = load(config.Input{Env: []string{"BULKHEAD_ISOLATION__ALLOWED=[rls, database]"}})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Config.Allows("database") || l.Config.Allows("schema") {
		t.Errorf("isolation.allowed [rls, database]: %v", l.Config.Isolation.Allowed)
	}
}

func TestBadConfigNamesEveryKey(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "isolation:\n  stratgy: rls\nreplicas: 2\n")
	cases := []struct {
		name string
		in   config.Input
		want []string // each must appear in the one-line message
	}{
		{"unknown profile", config.Input{Env: []string{"BULKHEAD_PROFILE=cloud"}}, []string{"profile (from env BULKHEAD_PROFILE)", `"cloud"`}},
		{"unknown strategy", config.Input{Flags: []config.Flag{{Name: "isolation", Key: "isolation.strategy", Value: "shard"}}}, []string{"isolation.strategy (from flag --isolation)", `"shard"`}},
		{"unknown file keys", config.Input{File: file}, []string{"isolation.stratgy (from file " + file + "): unknown", "replicas (from file"}},
		{"unknown env key", config.Input{Env: []string{"BULKHEAD_HTTP__ADRESS=x"}}, []string{"http.adress (from env BULKHEAD_HTTP__ADRESS): unknown"}},
		{"unparsable DSN", config.Input{Env: []string{"BULKHEAD_DATABASE_URL=postgres://u:secret@host:notaport/db"}}, []string{"database.url (from env BULKHEAD_DATABASE_URL): not a valid PostgreSQL connection string"}},
		{"wrong type", config.Input{Env: []string{"BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS=many"}}, []string{"isolation.database.max_connections", "want an integer"}},
		{"short admin token", config.Input{Env: []string{"BULKHEAD_ADMIN_TOKEN=short"}}, []string{"admin.token", "at least 32"}},
		{"strategy not allowed", config.Input{Env: []string{"BULKHEAD_ISOLATION=schema", "BULKHEAD_ISOLATION__ALLOWED=[rls, database]"}},
			[]string{"isolation.allowed (from env BULKHEAD_ISOLATION__ALLOWED)", `must include isolation.strategy "schema"`}},
		{"unknown allowed strategy", config.Input{Env: []string{"BULKHEAD_ISOLATION__ALLOWED=[rls, shard, rls]"}},
			[]string{`isolation.allowed[1] (from env BULKHEAD_ISOLATION__ALLOWED): "shard" is not one of`, `isolation.allowed[2]`, "listed twice"}},
		{"unknown Citus mode", config.Input{Env: []string{"BULKHEAD_DATABASE__CITUS=yes"}}, []string{"database.citus (from env BULKHEAD_DATABASE__CITUS)", `"yes" is not one of auto, on, off`}},
		{"all at once", config.Input{Env: []string{"BULKHEAD_PROFILE=cloud", "BULKHEAD_LOG_FORMAT=xml", "BULKHEAD_POOLER=x"}}, []string{"profile", "log.format", "BULKHEAD_POOLER"}},
		{"load walls", config.Input{Env: []string{
			"BULKHEAD_LIMITS__CONCURRENCY__PER_TENANT=0",
			"BULKHEAD_LIMITS__RATE__RATE=-1",
			"BULKHEAD_HTTP__MAX_CONNECTIONS=0",
			"BULKHEAD_DATABASE__STATEMENT_TIMEOUT=2m",
			"BULKHEAD_HTTP__TRUSTED_PROXIES=[10.0.0.0/33]",
			"BULKHEAD_LIMITS__CONCURRENCY__QUEUE_TIMEOUT=0s",
		}}, []string{
			"limits.concurrency.per_tenant (from env BULKHEAD_LIMITS__CONCURRENCY__PER_TENANT): must be at least 1",
			"limits.rate.rate", "http.max_connections",
			"database.statement_timeout (from env BULKHEAD_DATABASE__STATEMENT_TIMEOUT): 2m0s must be shorter than http.write_timeout",
			"http.trusted_proxies[0]", "limits.concurrency.queue_timeout",
		}},
		{"tarpit", config.Input{Env: []string{
			"BULKHEAD_LIMITS__TARPIT__DELAY=-1s",
			"BULKHEAD_LIMITS__TARPIT__MAX_HELD=0",
			"BULKHEAD_LIMITS__TARPIT__RATE=-5",
			"BULKHEAD_LIMITS__TARPIT__BURST=0",
			"BULKHEAD_LIMITS__TARPIT__TRACKED=-1",
		}}, []string{
			"limits.tarpit.delay (from env BULKHEAD_LIMITS__TARPIT__DELAY): must be a duration such as 1s, or 0 to hold no refusal",
			"limits.tarpit.max_held (from env BULKHEAD_LIMITS__TARPIT__MAX_HELD): must be at least 1",
			"limits.tarpit.rate (from env BULKHEAD_LIMITS__TARPIT__RATE): must be a number of requests per second",
			"limits.tarpit.burst", "limits.tarpit.tracked",
		}},
		{"tarpit longer than the write timeout", config.Input{Env: []string{"BULKHEAD_LIMITS__TARPIT__DELAY=2m"}},
			[]string{"limits.tarpit.delay (from env BULKHEAD_LIMITS__TARPIT__DELAY): 2m0s must be shorter than http.write_timeout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(tc.in)
			if !config.IsConfigError(err) {
				t.Fatalf("want a configuration error, got %v", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message is not one line: %q", msg)
			}
			if strings.Contains(msg, "secret") {
				t.Errorf("message shows a password: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestReservedEnvironmentIsNotConfiguration(t *testing.T) {
	t.Parallel()
	_, err := load(config.Input{Env: []string{
		"BULKHEAD_TEST_DATABASE_URL=postgres://x/y", // the test harness's own
		"BULKHEAD_CONFIG=",
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestServersFromEnvironment(t *testing.T) {
	t.Parallel()
	l, err := load(config.Input{Env: []string{
		`BULKHEAD_ISOLATION__DATABASE__SERVERS=[{name: pg-a, url: "postgres://bulkhead_app:pw@a/bulkhead"}, {name: pg-b, url: "postgres://bulkhead_app@b/bulkhead"}]`,
	}})
	if err != nil {
		t.Fatal(err)
	}
	s := databaseConfig(l.Config).Servers
	if len(s) != 2 || s[0].Name != "pg-a" || s[1].URL != "postgres://bulkhead_app@b/bulkhead" {
		t.Fatalf("servers: %+v", s)
	}
	_, err = load(config.Input{Env: []string{`BULKHEAD_ISOLATION__DATABASE__SERVERS=[{name: pg-a, url: "postgres://a/b", port: 1}]`}})
	if !config.IsConfigError(err) || !strings.Contains(err.Error(), "isolation.database.servers") {
		t.Fatalf("unknown key inside a server: %v", err)
	}
}

func TestEntriesRedactSecrets(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
isolation:
  database:
    servers:
      - name: pg-a
        url: postgres://bulkhead_app:hunter2@a:5432/bulkhead
`)
	l, err := load(config.Input{File: file, Env: []string{
		"BULKHEAD_ADMIN_TOKEN=0123456789abcdef0123456789abcdefXYZ",
		"BULKHEAD_DATABASE_URL=postgres://bulkhead_app:hunter2@db:5432/bulkhead",
		"BULKHEAD_MIGRATE_DATABASE_URL=host=db user=postgres password=hunter2 dbname=bulkhead",
	}})
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, e := range l.Entries() {
		all.WriteString(e.Key + "=" + strings.TrimSpace(strings.ReplaceAll(fmtValue(e.Value), "\n", " ")) + "\n")
	}
	out := all.String()
	for _, secret := range []string{"hunter2", "0123456789abcdef"} {
		if strings.Contains(out, secret) {
			t.Errorf("entries show %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "postgres://bulkhead_app:REDACTED@db:5432/bulkhead") {
		t.Errorf("database.url not shown redacted:\n%s", out)
	}
}

func TestKeysHaveEnvironmentNames(t *testing.T) {
	t.Parallel()
	if got := config.EnvName("isolation.database.max_connections"); got != "BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS" {
		t.Errorf("EnvName: %s", got)
	}
	for alias, key := range config.EnvAliases {
		found := false
		for _, k := range config.Keys(app.Strategies...) {
			found = found || k == key
		}
		if !found {
			t.Errorf("alias %s names unknown key %s", alias, key)
		}
	}
}

// A secret key may come from the file NAME_FILE names, under the short name
// or the long one; setting it both ways, or naming a file that cannot be
// read, is an error naming the key.
func TestSecretsFromFiles(t *testing.T) {
	t.Parallel()
	dsn := writeFile(t, "postgres://bulkhead_app:hunter2@db/bulkhead\n")
	owner := writeFile(t, "postgres://bulkhead_owner:hunter3@db/bulkhead")
	token := writeFile(t, "0123456789abcdef0123456789abcdef\r\n")
	l, err := load(config.Input{Env: []string{
		"BULKHEAD_DATABASE__URL_FILE=" + dsn,
		"BULKHEAD_MIGRATE_DATABASE_URL_FILE=" + owner,
		"BULKHEAD_ADMIN_TOKEN_FILE=" + token,
	}})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	c := l.Config
	if c.Database.URL != "postgres://bulkhead_app:hunter2@db/bulkhead" ||
		c.Database.MigrateURL != "postgres://bulkhead_owner:hunter3@db/bulkhead" ||
		c.Admin.Token != "0123456789abcdef0123456789abcdef" {
		t.Errorf("got url %q, migrate_url %q, token %q: want the files' contents without the newline",
			c.Database.URL, c.Database.MigrateURL, c.Admin.Token)
	}
	if got := l.Sources["admin.token"]; got != "env BULKHEAD_ADMIN_TOKEN_FILE" {
		t.Errorf("source of admin.token = %q", got)
	}

	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"both", []string{"BULKHEAD_DATABASE_URL=postgres://a@db/x", "BULKHEAD_DATABASE_URL_FILE=" + dsn},
			"database.url (from env BULKHEAD_DATABASE_URL_FILE): set by both BULKHEAD_DATABASE_URL and BULKHEAD_DATABASE_URL_FILE"},
		{"both, long and short names", []string{"BULKHEAD_DATABASE__MIGRATE_URL_FILE=" + owner, "BULKHEAD_MIGRATE_DATABASE_URL=postgres://a@db/x"},
			"database.migrate_url (from env BULKHEAD_DATABASE__MIGRATE_URL_FILE): set by both BULKHEAD_MIGRATE_DATABASE_URL"},
		{"missing file", []string{"BULKHEAD_ADMIN_TOKEN_FILE=/nonexistent/token"},
			"admin.token (from env BULKHEAD_ADMIN_TOKEN_FILE): cannot read /nonexistent/token"},
		{"not a secret", []string{"BULKHEAD_LOG__FORMAT_FILE=" + token},
			"log.format_file (from env BULKHEAD_LOG__FORMAT_FILE): unknown configuration key"},
		{"short token in a file", []string{"BULKHEAD_ADMIN_TOKEN_FILE=" + writeFile(t, "short\n")},
			"admin.token (from env BULKHEAD_ADMIN_TOKEN_FILE): must be at least 32"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(config.Input{Env: tc.env})
			if !config.IsConfigError(err) {
				t.Fatalf("want a configuration error, got %v", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "hunter") {
				t.Errorf("message %q: want it to contain %q and no password", msg, tc.want)
			}
		})
	}
}

func TestOIDCIssuers(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
oidc:
  issuers:
    - issuer: https://login.example.com/
      audience: bulkhead
      tenant_claim: https://example.com/org
      tenant_map: {"acme.example.com": acme, "o-1": beta}
      tenants: [acme, beta]
      groups_claim: groups
      group_roles: {"finops.editors": editor}
    - issuer: http://127.0.0.1:9999
      audience: bulkhead
      jwks_url: http://127.0.0.1:9999/keys
      algorithms: [ES256]
      clock_skew: 0s
      tenant_claim: tenant
      tenants: ["*"]
      default_role: viewer
      console:
        client_id: bulkhead-console
        scopes: [openid, profile]
`)
	l, err := load(config.Input{File: file})
	if err != nil {
		t.Fatal(err)
	}
	is := l.Config.OIDC.Issuers
	if len(is) != 2 {
		t.Fatalf("issuers: %+v", is)
	}
	if got := is[0].TenantMap["acme.example.com"]; got != "acme" {
		t.Errorf("a claim value with dots maps to %q, want acme: %+v", got, is[0].TenantMap)
	}
	if got := is[0].GroupRoles["finops.editors"]; got != "editor" {
		t.Errorf("a group with dots maps to %q: %+v", got, is[0].GroupRoles)
	}
	if strings.Join(is[0].Algorithms, ",") != "RS256,ES256" || is[0].ClockSkew.String() != "30s" {
		t.Errorf("defaults not filled: %+v", is[0])
	}
	if strings.Join(is[1].Algorithms, ",") != "ES256" || is[1].ClockSkew != 0 {
		t.Errorf("explicit values not kept: %+v", is[1])
	}
	if c := l.Config.OIDC; c.JWKSRefetchInterval.String() != "1m0s" || c.JWKSTimeout.String() != "5s" {
		t.Errorf("oidc defaults: %+v", c)
	}
	// The console signs in with the second issuer only; its CSP may
	// connect to that issuer's origin, and no other.
	if is[0].Console.ClientID != "" {
		t.Errorf("console sign-in with an issuer that has no console: %+v", is[0].Console)
	}
	if c := is[1].Console.Effective(is[1].Issuer); c.ClientID != "bulkhead-console" || c.Token != "access_token" ||
		c.Name != "127.0.0.1:9999" || strings.Join(c.Scopes, " ") != "openid profile" {
		t.Errorf("console: %+v", c)
	}
	if got := l.Config.OIDC.ConsoleOrigins(); strings.Join(got, " ") != "http://127.0.0.1:9999" {
		t.Errorf("console origins: %q", got)
	}

	bad := []struct {
		name, env string
		want      []string
	}{
		{"alg none", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, algorithms: [none]}]`,
			[]string{"oidc.issuers[0].algorithms", `"none" is never accepted`}},
		{"HMAC", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, algorithms: [HS256]}]`,
			[]string{"oidc.issuers[0].algorithms", `"HS256" is never accepted`}},
		{"plain http", `[{issuer: "http://idp.example.com", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer}]`,
			[]string{"oidc.issuers[0].issuer", "must use https"}},
		{"missing fields", `[{issuer: "https://i"}]`,
			[]string{"oidc.issuers[0].audience (from env BULKHEAD_OIDC__ISSUERS): required", "oidc.issuers[0].tenant_claim", "oidc.issuers[0].tenants", "oidc.issuers[0].role_claim"}},
		{"map outside trust", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], tenant_map: {x: beta}, default_role: viewer}]`,
			[]string{"oidc.issuers[0].tenant_map", `"x" maps to "beta", which is not in oidc.issuers[0].tenants`}},
		{"bad role", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], groups_claim: g, group_roles: {x: admin}}]`,
			[]string{"oidc.issuers[0].group_roles", `"admin"`}},
		{"skew", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, clock_skew: 1h}]`,
			[]string{"oidc.issuers[0].clock_skew"}},
		{"unknown field", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, audiences: [b]}]`,
			[]string{"oidc.issuers", "audiences"}},
		{"console without client", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, console: {name: SSO}}]`,
			[]string{"oidc.issuers[0].console.client_id", "required"}},
		{"console without openid", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, console: {client_id: c, scopes: [profile]}}]`,
			[]string{"oidc.issuers[0].console.scopes", "must include openid"}},
		{"console scope with a space", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, console: {client_id: c, scopes: [openid, "a b"]}}]`,
			[]string{"oidc.issuers[0].console.scopes", `"a b" is not a scope`}},
		{"console token", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, console: {client_id: c, token: refresh_token}}]`,
			[]string{"oidc.issuers[0].console.token", `"refresh_token" is not one of`}},
		{"console id token for another audience", `[{issuer: "https://i", audience: bulkhead, tenant_claim: t, tenants: [acme], default_role: viewer, console: {client_id: c, token: id_token}}]`,
			[]string{"oidc.issuers[0].console.token", `audience must be "c"`}},
		{"console name markup", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, console: {client_id: c, name: "<b>"}}]`,
			[]string{"oidc.issuers[0].console.name"}},
		{"console unknown field", `[{issuer: "https://i", audience: a, tenant_claim: t, tenants: [acme], default_role: viewer, console: {client_id: c, secret: s}}]`,
			[]string{"oidc.issuers", "secret"}},
	}
	for _, tc := range bad {
		_, err := load(config.Input{Env: []string{"BULKHEAD_OIDC__ISSUERS=" + tc.env}})
		if !config.IsConfigError(err) {
			t.Errorf("%s: want a configuration error, got %v", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not contain %q", tc.name, err, w)
			}
		}
	}
}
