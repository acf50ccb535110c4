// Package config builds Bulkhead's typed configuration from its layers —
// built-in defaults < profile < YAML file < environment < flags — with koanf,
// records where every value came from, and validates the result as a whole.
//
// Every problem is reported at once, in one *Error whose message is a single
// line naming each bad key; the command line turns it into exit status 2.
package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/profiles"
)

// Pooler names, as configured in database.pooler.
const (
	PoolerNone      = "none"
	PoolerPgBouncer = "pgbouncer"
)

// Citus modes, as configured in database.citus.
const (
	CitusAuto = "auto"
	CitusOn   = "on"
	CitusOff  = "off"
)

// Config is the effective configuration. Its koanf tags are the YAML keys;
// the environment names derive from them (see Load).
type Config struct {
	Profile   string    `koanf:"profile"`
	Isolation Isolation `koanf:"isolation"`
	Database  Database  `koanf:"database"`
	HTTP      HTTP      `koanf:"http"`
	Admin     Admin     `koanf:"admin"`
	Log       Log       `koanf:"log"`
	Tenants   Tenants   `koanf:"tenants"`
	System    System    `koanf:"system"`
	OIDC      OIDC      `koanf:"oidc"`
	Limits    Limits    `koanf:"limits"`
	Import    Import    `koanf:"import"`
}

// Import bounds the loading of billing exports (FOCUS datasets on POST
// /v1/costs and `bulkhead costs import`): far larger and slower than the
// API's other requests, and streamed rather than read whole.
type Import struct {
	// MaxBytes bounds one export, compressed and decompressed alike: the
	// 10 MiB API limit does not apply to it.
	MaxBytes int64 `koanf:"max_bytes"`
	// Timeout bounds one load, from the first byte of its body to its
	// commit: its request's read and write deadlines are moved to it.
	Timeout time.Duration `koanf:"timeout"`
	// SpoolDir holds a Parquet body while it loads (Parquet is read from
	// its end); empty is the system's temporary directory.
	SpoolDir string `koanf:"spool_dir"`
}

// Isolation selects the isolation strategy new tenants are provisioned
// with, and holds every strategy's own configuration.
type Isolation struct {
	Strategy string `koanf:"strategy"`
	// Allowed lists the strategies a tenant may be placed in or moved to;
	// migrate prepares each. Strategy must be among them.
	Allowed []string `koanf:"allowed"`
	// MigrateParallelism bounds how many tenants migrate at once.
	MigrateParallelism int `koanf:"migrate_parallelism"`
	// Strategies names the strategies this build has (Input.Strategies),
	// in their order: the values isolation.strategy may take.
	Strategies []string `koanf:"-"`
	// Settings holds each strategy's configuration, loaded from the keys
	// under isolation.<name> (isolation.Descriptor.Config); nil for a
	// strategy that takes none.
	Settings map[string]isolation.Config `koanf:"-"`
}

// Database holds the connection settings of the control-plane database.
type Database struct {
	URL        string `koanf:"url"`
	MigrateURL string `koanf:"migrate_url"`
	Pooler     string `koanf:"pooler"`
	// MaxConnections sizes the serving pool.
	MaxConnections int `koanf:"max_connections"`
	// Citus says whether the database is a Citus coordinator whose
	// tenant tables (rls) and tenant schemas (schema) are distributed
	// over its workers: auto (when the citus extension is installed),
	// on (required) or off.
	Citus string `koanf:"citus"`
	// StatementTimeout, LockTimeout and IdleInTransactionTimeout bound
	// every tenant transaction of a request (SET LOCAL in its BEGIN); 0
	// leaves the server's setting.
	StatementTimeout         time.Duration `koanf:"statement_timeout"`
	LockTimeout              time.Duration `koanf:"lock_timeout"`
	IdleInTransactionTimeout time.Duration `koanf:"idle_in_transaction_timeout"`
}

// HTTP configures the listener.
type HTTP struct {
	Addr            string        `koanf:"addr"`
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// ReadHeaderTimeout bounds reading a request's headers; ReadTimeout
	// the whole request, body included (the body's read deadline);
	// WriteTimeout the time from the end of the headers to the end of the
	// response; IdleTimeout how long a keep-alive connection may wait for
	// its next request. Routes may be given longer read and write
	// allowances of their own.
	ReadHeaderTimeout time.Duration `koanf:"read_header_timeout"`
	ReadTimeout       time.Duration `koanf:"read_timeout"`
	WriteTimeout      time.Duration `koanf:"write_timeout"`
	IdleTimeout       time.Duration `koanf:"idle_timeout"`
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int `koanf:"max_header_bytes"`
	// MaxConnections caps the open client connections; at the cap, the
	// oldest idle one is closed for a new one, or the new one is.
	MaxConnections int `koanf:"max_connections"`
	// TrustedProxies lists the networks (CIDR) of proxies whose
	// X-Forwarded-For names the client; empty: the peer address is the
	// client's.
	TrustedProxies []string `koanf:"trusted_proxies"`
}

// Admin configures the admin API.
type Admin struct {
	// Token is the bearer token of /admin/v1; empty turns the admin API off.
	Token string `koanf:"token"`
}

// Log configures logging.
type Log struct {
	// Format is json or text; empty picks text on a terminal, else json.
	Format string `koanf:"format"`
	Level  string `koanf:"level"`
}

// Tenants configures tenant lifecycle defaults.
type Tenants struct {
	// Bootstrap is the slug of a tenant `bulkhead migrate` creates when there
	// are none (the community profile's single tenant); empty creates none.
	Bootstrap string `koanf:"bootstrap"`
}

// Limits configures the load walls: how much of a server one tenant, one
// key or one client address may take.
type Limits struct {
	Concurrency Concurrency `koanf:"concurrency"`
	Rate        RateLimit   `koanf:"rate"`
	AuthFailure RateLimit   `koanf:"auth_failures"`
	Tarpit      Tarpit      `koanf:"tarpit"`
	Stats       Stats       `koanf:"stats"`
}

// Concurrency configures the admission of tenant transactions.
type Concurrency struct {
	// PerTenant is how many transactions one tenant may run at once in one
	// process (a tenant's override replaces it).
	PerTenant int `koanf:"per_tenant"`
	// MaxShare is the largest share of a pool's slots one tenant may hold,
	// its override included: (0, 1].
	MaxShare float64 `koanf:"max_share"`
	// QueuePerTenant is how many more may wait; beyond, 429 at once.
	QueuePerTenant int `koanf:"queue_per_tenant"`
	// Queue is how many may wait in all; beyond, 503 at once.
	Queue int `koanf:"queue"`
	// QueueTimeout bounds a wait; then 429 (the tenant's own cap) or 503.
	QueueTimeout time.Duration `koanf:"queue_timeout"`
	// HeavyPerTenant is how many transactions a tenant whose transactions
	// run long may run at once while other tenants are served: at most
	// half the database server's cores. 0 turns it off.
	HeavyPerTenant int `koanf:"heavy_per_tenant"`
	// HeavyAfter is how long a tenant's transactions must last on average
	// for it to count as heavy.
	HeavyAfter time.Duration `koanf:"heavy_after"`
}

// RateLimit is a token bucket per key: Rate per second, Burst at once,
// for at most Tracked keys at a time. A Rate of 0 turns it off.
type RateLimit struct {
	Rate    float64 `koanf:"rate"`
	Burst   int     `koanf:"burst"`
	Tracked int     `koanf:"tracked"`
}

// Tarpit configures how refusals of a client that keeps coming back are
// slowed: a client (an API key, or the address of a client without one)
// may be refused at Rate per second, Burst at once, and be answered at
// once; each further refusal is held for Delay before it is answered, at
// most MaxHeld at a time (and at most half of HTTP.MaxConnections).
// Tracked bounds the clients counted. A Delay or a
// Rate of 0 turns it off.
type Tarpit struct {
	Delay   time.Duration `koanf:"delay"`
	MaxHeld int           `koanf:"max_held"`
	Rate    float64       `koanf:"rate"`
	Burst   int           `koanf:"burst"`
	Tracked int           `koanf:"tracked"`
}

// Stats configures the per-tenant usage counters of `tenant stats`.
type Stats struct {
	// FlushInterval is how often a server records its counters in the
	// control plane; Retention how long they are kept there.
	FlushInterval time.Duration `koanf:"flush_interval"`
	Retention     time.Duration `koanf:"retention"`
	// Tenants bounds the tenants counted one by one between flushes; Top
	// is how many of each measure a flush records (the rest are added up).
	Tenants int `koanf:"tenants"`
	Top     int `koanf:"top"`
}

// System configures the audited cross-tenant system role.
type System struct {
	Enabled bool `koanf:"enabled"`
}

// OIDC configures bearer tokens (JWTs) from identity providers, accepted
// beside API keys. With no issuers only API keys are accepted.
type OIDC struct {
	Issuers []Issuer `koanf:"issuers"`
	// JWKSRefreshInterval is how often each issuer's key set is fetched
	// again in the background.
	JWKSRefreshInterval time.Duration `koanf:"jwks_refresh_interval"`
	// JWKSRefetchInterval bounds fetches caused by a token whose key id is
	// not in the cached set: at most one per interval and issuer, so that
	// made-up key ids cannot hammer the identity provider.
	JWKSRefetchInterval time.Duration `koanf:"jwks_refetch_interval"`
	// JWKSTimeout bounds one fetch of a key set or discovery document.
	JWKSTimeout time.Duration `koanf:"jwks_timeout"`
}

// Issuer is one trusted identity provider.
type Issuer struct {
	// Issuer must equal the token's iss claim.
	Issuer string `koanf:"issuer"`
	// Audience must be one of the token's aud claim.
	Audience string `koanf:"audience"`
	// JWKSURL is where the issuer's keys are; empty discovers it from
	// Issuer + /.well-known/openid-configuration.
	JWKSURL string `koanf:"jwks_url"`
	// Algorithms are the signing algorithms accepted (asymmetric only).
	Algorithms []string `koanf:"algorithms"`
	// ClockSkew is how far exp, nbf and iat may be off.
	ClockSkew time.Duration `koanf:"clock_skew"`
	// TenantClaim names the claim whose value names the tenant.
	TenantClaim string `koanf:"tenant_claim"`
	// TenantMap maps the claim's value to a tenant slug; empty means the
	// value is the slug.
	TenantMap map[string]string `koanf:"tenant_map"`
	// Tenants are the slugs this issuer may name; ["*"] trusts it for every
	// tenant (an identity provider run for all of them).
	Tenants []string `koanf:"tenants"`
	// RoleClaim names a claim holding "viewer" or "editor" (or a list).
	RoleClaim string `koanf:"role_claim"`
	// GroupsClaim names a claim holding group names (or one name), mapped
	// to roles by GroupRoles; the highest role found wins.
	GroupsClaim string            `koanf:"groups_claim"`
	GroupRoles  map[string]string `koanf:"group_roles"`
	// DefaultRole is the role of a token no claim gives one; empty refuses
	// such a token (403).
	DefaultRole string `koanf:"default_role"`
	// Console offers "Sign in with <name>" on the tenant console; without a
	// client id, the console offers no sign-in with this issuer.
	Console IssuerConsole `koanf:"console"`
}

// IssuerConsole is the web console's sign-in with an issuer: the
// Authorization Code flow with PKCE, run by the browser as a public client
// (no secret) whose redirect URI is the console's ConsoleCallbackPath.
type IssuerConsole struct {
	// ClientID is the console's client at the issuer; empty: no sign-in.
	ClientID string `koanf:"client_id"`
	// Name is what the button says: "Sign in with <Name>"; empty: the
	// issuer's host.
	Name string `koanf:"name"`
	// Scopes are requested at sign-in; they must include openid. Empty:
	// openid alone.
	Scopes []string `koanf:"scopes"`
	// Token is the token the console sends to the API: access_token (the
	// default), or id_token, whose aud is ClientID — then the issuer's
	// audience must be ClientID too.
	Token string `koanf:"token"`
}

// Tokens the console may send: the access token or the ID token.
const (
	ConsoleAccessToken = "access_token"
	ConsoleIDToken     = "id_token"
)

// ConsoleCallbackPath is the path of the console's redirect URI: an
// issuer's console client must list <the console's origin> + this path.
const ConsoleCallbackPath = "/console/signin/callback"

// Effective fills what c leaves out with the defaults: openid alone, the
// access token, the issuer's host as the name.
func (c IssuerConsole) Effective(issuer string) IssuerConsole {
	if len(c.Scopes) == 0 {
		c.Scopes = []string{"openid"}
	}
	if c.Token == "" {
		c.Token = ConsoleAccessToken
	}
	if c.Name == "" {
		if u, err := url.Parse(issuer); err == nil {
			c.Name = u.Host
		}
	}
	return c
}

// Origin is the scheme, host and port of an issuer URL: what the console's
// Content-Security-Policy allows it to connect to for sign-in.
func Origin(issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("%q is not an absolute http(s) URL", issuer)
	}
	return u.Scheme + "://" + strings.ToLower(u.Host), nil
}

// ConsoleOrigins are the origins of the issuers the console signs in with.
func (o OIDC) ConsoleOrigins() []string {
	var out []string
	for _, is := range o.Issuers {
		if is.Console.ClientID == "" {
			continue
		}
		if origin, err := Origin(is.Issuer); err == nil && !slices.Contains(out, origin) {
			out = append(out, origin)
		}
	}
	return out
}

// AnyTenant in Issuer.Tenants trusts the issuer for every tenant.
const AnyTenant = "*"

// issuerDefaults fill what an item of oidc.issuers leaves out. They are set
// on the raw values, so that an explicit value (even 0s) is kept.
var issuerDefaults = map[string]any{
	"algorithms": []any{"RS256", "ES256"},
	"clock_skew": "30s",
}

// signingAlgorithms are the JWS algorithms an issuer may be configured
// with: asymmetric ones only, so a public key can never be used as an HMAC
// secret, and never "none".
var signingAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// maxClockSkew bounds oidc.issuers[].clock_skew: more would keep expired
// tokens alive.
const maxClockSkew = 5 * time.Minute

// defaults are the built-in values, the lowest layer: Config's and the
// strategies' (isolation.Descriptor.Config).
func defaults(strategies []isolation.Descriptor) map[string]any {
	out := map[string]any{
		"profile":                              profiles.Default,
		"isolation.strategy":                   isolation.RLS,
		"isolation.migrate_parallelism":        4,
		"database.url":                         "",
		"database.migrate_url":                 "",
		"database.pooler":                      PoolerNone,
		"database.max_connections":             10,
		"database.citus":                       CitusAuto,
		"database.statement_timeout":           "30s",
		"database.lock_timeout":                "5s",
		"database.idle_in_transaction_timeout": "60s",
		"http.addr":                            "127.0.0.1:8080",
		"http.shutdown_timeout":                "15s",
		"http.read_header_timeout":             "10s",
		"http.read_timeout":                    "60s",
		"http.write_timeout":                   "60s",
		"http.idle_timeout":                    "60s",
		"http.max_header_bytes":                64 << 10,
		"http.max_connections":                 1024,
		"http.trusted_proxies":                 []any{},
		"limits.concurrency.per_tenant":        8,
		"limits.concurrency.max_share":         0.5,
		"limits.concurrency.queue_per_tenant":  32,
		"limits.concurrency.queue":             1024,
		"limits.concurrency.queue_timeout":     "2s",
		"limits.concurrency.heavy_per_tenant":  2,
		"limits.concurrency.heavy_after":       "5ms",
		"limits.rate.rate":                     100.0,
		"limits.rate.burst":                    200,
		"limits.rate.tracked":                  10000,
		"limits.auth_failures.rate":            1.0,
		"limits.auth_failures.burst":           20,
		"limits.auth_failures.tracked":         10000,
		"limits.tarpit.delay":                  "1s",
		"limits.tarpit.max_held":               1024,
		"limits.tarpit.rate":                   5.0,
		"limits.tarpit.burst":                  20,
		"limits.tarpit.tracked":                10000,
		"limits.stats.flush_interval":          "10s",
		"limits.stats.retention":               "1h",
		"limits.stats.tenants":                 10000,
		"limits.stats.top":                     100,
		"admin.token":                          "",
		"log.format":                           "",
		"log.level":                            "info",
		"tenants.bootstrap":                    "",
		"system.enabled":                       false,
		"import.max_bytes":                     int64(DefaultImportMaxBytes),
		"import.timeout":                       "1h",
		"import.spool_dir":                     "",
		"oidc.issuers":                         []any{},
		"oidc.jwks_refresh_interval":           "1h",
		"oidc.jwks_refetch_interval":           "1m",
		"oidc.jwks_timeout":                    "5s",
	}
	strategyDefaults(strategies, out)
	// Every strategy of the build may be placed in or moved to unless
	// isolation.allowed says otherwise.
	allowed := make([]any, len(strategies))
	for i, d := range strategies {
		allowed[i] = d.Name
	}
	out["isolation.allowed"] = allowed
	return out
}

// DefaultImportMaxBytes is import.max_bytes unless configured: 2 GiB.
const DefaultImportMaxBytes = 2 << 30

// MinAdminTokenLen is the shortest admin token accepted.
const MinAdminTokenLen = 32

// slugRule is what a tenant slug may be: 3 to 63 characters of a-z, 0-9
// and -, starting with a letter. ValidSlug is its one use outside.
var slugRule = regexp.MustCompile(`^[a-z][a-z0-9-]{2,62}$`)

// ValidSlug reports whether s is a valid tenant slug (tenants.bootstrap,
// and every slug the control plane takes): 3 to 63 characters of a-z,
// 0-9 and -, starting with a letter.
func ValidSlug(s string) bool { return slugRule.MatchString(s) }

// Validate reports every problem of c at once as an *Error, or nil.
func (c *Config) Validate() error {
	var e Error
	oneOf := func(key, v string, allowed ...string) {
		if !slices.Contains(allowed, v) {
			e.add(key, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", ")))
		}
	}
	oneOf("profile", c.Profile, profiles.Names()...)
	oneOf("isolation.strategy", c.Isolation.Strategy, c.Isolation.Strategies...)
	c.validateAllowed(&e)
	oneOf("database.pooler", c.Database.Pooler, PoolerNone, PoolerPgBouncer)
	oneOf("database.citus", c.Database.Citus, CitusAuto, CitusOn, CitusOff)
	oneOf("log.format", c.Log.Format, "", "json", "text")
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")

	e.dsn("database.url", c.Database.URL)
	e.dsn("database.migrate_url", c.Database.MigrateURL)
	e.positive("database.max_connections", c.Database.MaxConnections)
	e.positive("isolation.migrate_parallelism", c.Isolation.MigrateParallelism)
	for _, name := range c.Isolation.Strategies {
		if sc := c.Isolation.Settings[name]; sc != nil {
			e.strategy(name, sc.Validate())
		}
	}
	e.positiveDuration("http.shutdown_timeout", c.HTTP.ShutdownTimeout)
	c.validateLimits(&e)
	e.positiveDuration("import.timeout", c.Import.Timeout)
	if c.Import.MaxBytes < 1<<20 {
		e.add("import.max_bytes", fmt.Sprintf("must be at least 1048576 (1 MiB), not %d", c.Import.MaxBytes))
	}

	if host, port, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
		e.add("http.addr", fmt.Sprintf("%q is not host:port", c.HTTP.Addr))
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		e.add("http.addr", fmt.Sprintf("port %q of %q is not a number from 0 to 65535", port, host))
	}
	if c.Admin.Token != "" && len(c.Admin.Token) < MinAdminTokenLen {
		e.add("admin.token", fmt.Sprintf("must be at least %d characters", MinAdminTokenLen))
	}
	if c.Tenants.Bootstrap != "" && !ValidSlug(c.Tenants.Bootstrap) {
		e.add("tenants.bootstrap", fmt.Sprintf("%q is not a slug: 3-63 characters of a-z, 0-9 and -, starting with a letter", c.Tenants.Bootstrap))
	}
	e.positiveDuration("oidc.jwks_refresh_interval", c.OIDC.JWKSRefreshInterval)
	e.positiveDuration("oidc.jwks_refetch_interval", c.OIDC.JWKSRefetchInterval)
	e.positiveDuration("oidc.jwks_timeout", c.OIDC.JWKSTimeout)
	issuers := map[string]bool{}
	for i, is := range c.OIDC.Issuers {
		key := fmt.Sprintf("oidc.issuers[%d]", i)
		if issuers[is.Issuer] {
			e.add(key+".issuer", fmt.Sprintf("%q is listed twice", is.Issuer))
		}
		issuers[is.Issuer] = true
		is.validate(&e, key)
	}
	return e.err()
}

// validateAllowed checks isolation.allowed: strategies of this build
// (Isolation.Strategies, the registry's names), each once, the default
// strategy among them.
func (c *Config) validateAllowed(e *Error) {
	known := strings.Join(c.Isolation.Strategies, ", ")
	if len(c.Isolation.Allowed) == 0 {
		e.add("isolation.allowed", "must list at least one strategy: "+known)
		return
	}
	for i, s := range c.Isolation.Allowed {
		key := fmt.Sprintf("isolation.allowed[%d]", i)
		switch {
		case !slices.Contains(c.Isolation.Strategies, s):
			e.add(key, fmt.Sprintf("%q is not one of %s", s, known))
		case slices.Index(c.Isolation.Allowed, s) != i:
			e.add(key, fmt.Sprintf("%q is listed twice", s))
		}
	}
	if !slices.Contains(c.Isolation.Allowed, c.Isolation.Strategy) {
		e.add("isolation.allowed", fmt.Sprintf("must include isolation.strategy %q (allowed: %s)",
			c.Isolation.Strategy, strings.Join(c.Isolation.Allowed, ", ")))
	}
}

// Allows reports whether a tenant may be placed in or moved to strategy.
// An empty list (a Config not built by Load, which refuses one) allows
// every strategy.
func (c *Config) Allows(strategy string) bool {
	return len(c.Isolation.Allowed) == 0 || slices.Contains(c.Isolation.Allowed, strategy)
}

// validateLimits checks the load walls' keys.
func (c *Config) validateLimits(e *Error) {
	type dur struct {
		key string
		d   time.Duration
	}
	for _, k := range []dur{
		{"database.statement_timeout", c.Database.StatementTimeout},
		{"database.lock_timeout", c.Database.LockTimeout},
		{"database.idle_in_transaction_timeout", c.Database.IdleInTransactionTimeout},
	} {
		if k.d < 0 {
			e.add(k.key, fmt.Sprintf("must be a duration such as 30s, or 0 to leave the server's setting, not %s", k.d))
		}
	}
	for _, k := range []dur{
		{"http.read_header_timeout", c.HTTP.ReadHeaderTimeout},
		{"http.read_timeout", c.HTTP.ReadTimeout},
		{"http.write_timeout", c.HTTP.WriteTimeout},
		{"http.idle_timeout", c.HTTP.IdleTimeout},
		{"limits.concurrency.queue_timeout", c.Limits.Concurrency.QueueTimeout},
		{"limits.concurrency.heavy_after", c.Limits.Concurrency.HeavyAfter},
		{"limits.stats.flush_interval", c.Limits.Stats.FlushInterval},
		{"limits.stats.retention", c.Limits.Stats.Retention},
	} {
		e.positiveDuration(k.key, k.d)
	}
	type num struct {
		key string
		n   int
	}
	for _, k := range []num{
		{"http.max_header_bytes", c.HTTP.MaxHeaderBytes},
		{"http.max_connections", c.HTTP.MaxConnections},
		{"limits.concurrency.per_tenant", c.Limits.Concurrency.PerTenant},
		{"limits.rate.burst", c.Limits.Rate.Burst},
		{"limits.rate.tracked", c.Limits.Rate.Tracked},
		{"limits.auth_failures.burst", c.Limits.AuthFailure.Burst},
		{"limits.auth_failures.tracked", c.Limits.AuthFailure.Tracked},
		{"limits.tarpit.max_held", c.Limits.Tarpit.MaxHeld},
		{"limits.tarpit.burst", c.Limits.Tarpit.Burst},
		{"limits.tarpit.tracked", c.Limits.Tarpit.Tracked},
		{"limits.stats.tenants", c.Limits.Stats.Tenants},
		{"limits.stats.top", c.Limits.Stats.Top},
	} {
		e.positive(k.key, k.n)
	}
	for _, k := range []num{
		{"limits.concurrency.queue_per_tenant", c.Limits.Concurrency.QueuePerTenant},
		{"limits.concurrency.queue", c.Limits.Concurrency.Queue},
		{"limits.concurrency.heavy_per_tenant", c.Limits.Concurrency.HeavyPerTenant},
	} {
		if k.n < 0 {
			e.add(k.key, fmt.Sprintf("must be 0 or more, not %d", k.n))
		}
	}
	for _, k := range []struct {
		key string
		r   float64
	}{
		{"limits.rate.rate", c.Limits.Rate.Rate},
		{"limits.auth_failures.rate", c.Limits.AuthFailure.Rate},
		{"limits.tarpit.rate", c.Limits.Tarpit.Rate},
	} {
		if k.r < 0 || math.IsNaN(k.r) || math.IsInf(k.r, 0) {
			e.add(k.key, fmt.Sprintf("must be a number of requests per second, or 0 for no limit, not %v", k.r))
		}
	}
	switch d := c.Limits.Tarpit.Delay; {
	case d < 0:
		e.add("limits.tarpit.delay", fmt.Sprintf("must be a duration such as 1s, or 0 to hold no refusal, not %s", d))
	case c.HTTP.WriteTimeout > 0 && d >= c.HTTP.WriteTimeout:
		e.add("limits.tarpit.delay", fmt.Sprintf("%s must be shorter than http.write_timeout (%s), or a held refusal is never answered",
			d, c.HTTP.WriteTimeout))
	}
	if s := c.Limits.Concurrency.MaxShare; !(s > 0 && s <= 1) {
		e.add("limits.concurrency.max_share", fmt.Sprintf("must be a share above 0 and at most 1, not %v", s))
	}
	if c.HTTP.WriteTimeout > 0 && c.Database.StatementTimeout >= c.HTTP.WriteTimeout {
		e.add("database.statement_timeout", fmt.Sprintf("%s must be shorter than http.write_timeout (%s), or a statement outlives its answer",
			c.Database.StatementTimeout, c.HTTP.WriteTimeout))
	}
	for i, p := range c.HTTP.TrustedProxies {
		if _, _, err := net.ParseCIDR(p); err != nil {
			e.add(fmt.Sprintf("http.trusted_proxies[%d]", i), fmt.Sprintf("%q is not a network such as 10.0.0.0/8", p))
		}
	}
}

func (is Issuer) validate(e *Error, key string) {
	e.fetchURL(key+".issuer", is.Issuer, true)
	e.fetchURL(key+".jwks_url", is.JWKSURL, false)
	if is.Audience == "" {
		e.add(key+".audience", "required: the aud value tokens for Bulkhead carry")
	}
	if len(is.Algorithms) == 0 {
		e.add(key+".algorithms", "must name at least one of "+strings.Join(signingAlgorithms, ", "))
	}
	for _, a := range is.Algorithms {
		switch {
		case strings.EqualFold(a, "none") || strings.HasPrefix(strings.ToUpper(a), "HS"):
			e.add(key+".algorithms", fmt.Sprintf("%q is never accepted: only asymmetric algorithms (%s)", a, strings.Join(signingAlgorithms, ", ")))
		case !slices.Contains(signingAlgorithms, a):
			e.add(key+".algorithms", fmt.Sprintf("%q is not one of %s", a, strings.Join(signingAlgorithms, ", ")))
		}
	}
	if is.ClockSkew < 0 || is.ClockSkew > maxClockSkew {
		e.add(key+".clock_skew", fmt.Sprintf("must be from 0s to %s, not %s", maxClockSkew, is.ClockSkew))
	}
	if is.TenantClaim == "" {
		e.add(key+".tenant_claim", "required: the claim that names the tenant")
	}
	everyTenant := slices.Contains(is.Tenants, AnyTenant)
	switch {
	case len(is.Tenants) == 0:
		e.add(key+".tenants", `required: the slugs this issuer may name, or ["*"] for every tenant`)
	case everyTenant && len(is.Tenants) > 1:
		e.add(key+".tenants", `"*" stands alone`)
	}
	for _, t := range is.Tenants {
		if t != AnyTenant && !slugRule.MatchString(t) {
			e.add(key+".tenants", fmt.Sprintf("%q is not a slug", t))
		}
	}
	for v, slug := range is.TenantMap {
		switch {
		case !slugRule.MatchString(slug):
			e.add(key+".tenant_map", fmt.Sprintf("%q maps to %q, which is not a slug", v, slug))
		case !everyTenant && !slices.Contains(is.Tenants, slug):
			e.add(key+".tenant_map", fmt.Sprintf("%q maps to %q, which is not in %s.tenants", v, slug, key))
		}
	}
	roles := []string{"viewer", "editor"}
	if (is.GroupsClaim == "") != (len(is.GroupRoles) == 0) {
		e.add(key+".group_roles", "groups_claim and group_roles go together")
	}
	for g, r := range is.GroupRoles {
		if !slices.Contains(roles, r) {
			e.add(key+".group_roles", fmt.Sprintf("group %q maps to %q, not one of viewer, editor", g, r))
		}
	}
	if is.DefaultRole != "" && !slices.Contains(roles, is.DefaultRole) {
		e.add(key+".default_role", fmt.Sprintf("%q is not one of viewer, editor", is.DefaultRole))
	}
	if is.RoleClaim == "" && is.GroupsClaim == "" && is.DefaultRole == "" {
		e.add(key+".role_claim", "one of role_claim, groups_claim or default_role must say where a token's role comes from")
	}
	is.Console.validate(e, key+".console", is.Audience)
}

// consoleText is what a console client id or name may hold: printable,
// no quotes or angle brackets, so that it is plain text wherever shown.
var consoleText = regexp.MustCompile(`^[^\x00-\x1f\x7f"<>\\]{1,128}$`)

// scopeToken is one OAuth scope (RFC 6749 §3.3).
var scopeToken = regexp.MustCompile(`^[\x21\x23-\x5b\x5d-\x7e]+$`)

func (c IssuerConsole) validate(e *Error, key, audience string) {
	if c.ClientID == "" {
		if c.Name != "" || len(c.Scopes) > 0 || c.Token != "" {
			e.add(key+".client_id", "required: the console's client at the issuer (a public client using PKCE), or leave out console")
		}
		return
	}
	if !consoleText.MatchString(c.ClientID) {
		e.add(key+".client_id", fmt.Sprintf("%q must be 1-128 printable characters without quotes, angle brackets or backslashes", c.ClientID))
	}
	if c.Name != "" && !consoleText.MatchString(c.Name) {
		e.add(key+".name", fmt.Sprintf("%q must be 1-128 printable characters without quotes, angle brackets or backslashes", c.Name))
	}
	for _, s := range c.Scopes {
		if !scopeToken.MatchString(s) {
			e.add(key+".scopes", fmt.Sprintf("%q is not a scope (printable characters, no spaces, quotes or backslashes)", s))
		}
	}
	if len(c.Scopes) > 0 && !slices.Contains(c.Scopes, "openid") {
		e.add(key+".scopes", "must include openid: the console checks the ID token's nonce")
	}
	switch c.Token {
	case "", ConsoleAccessToken:
	case ConsoleIDToken:
		if audience != c.ClientID {
			e.add(key+".token", fmt.Sprintf("id_token carries aud %q (the client id), so the issuer's audience must be %q too, not %q", c.ClientID, c.ClientID, audience))
		}
	default:
		e.add(key+".token", fmt.Sprintf("%q is not one of access_token, id_token", c.Token))
	}
}

// fetchURL checks a URL Bulkhead fetches keys from: https, or http to a
// loopback address only (a test's or a sidecar's).
func (e *Error) fetchURL(key, v string, required bool) {
	if v == "" {
		if required {
			e.add(key, "required")
		}
		return
	}
	if msg := CheckFetchURL(v); msg != "" {
		e.add(key, msg)
	}
}

// CheckFetchURL says what is wrong with v as a URL Bulkhead fetches keys or
// documents from (an identity provider's): it must be absolute, and https
// unless it names a loopback address. Empty means nothing is wrong.
func CheckFetchURL(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Sprintf("%q is not an absolute http(s) URL", v)
	}
	if u.Scheme == "http" {
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Sprintf("%q must use https (plain http only to a loopback address)", v)
		}
	}
	return ""
}

// RequireServing reports what serving needs beyond Validate: a database URL.
func (c *Config) RequireServing() error {
	var e Error
	if c.Database.URL == "" {
		e.add("database.url", "required (set BULKHEAD_DATABASE_URL)")
	}
	return e.err()
}

// RequireMigrate reports what migrating and provisioning need: a DSN with
// owner privilege.
func (c *Config) RequireMigrate() error {
	var e Error
	if c.Database.MigrateURL == "" {
		e.add("database.migrate_url", "required (set BULKHEAD_MIGRATE_DATABASE_URL)")
	}
	return e.err()
}

func (e *Error) dsn(key, v string) {
	if v == "" {
		return
	}
	if _, err := pgx.ParseConfig(v); err != nil {
		e.add(key, "not a valid PostgreSQL connection string")
	}
}

// strategy adds the problems of err, what the configuration of strategy
// name returned from Validate, under the keys of its section.
func (e *Error) strategy(name string, err error) {
	if err == nil {
		return
	}
	var list isolation.ConfigErrors
	var one *isolation.ConfigError
	switch {
	case errors.As(err, &list):
	case errors.As(err, &one):
		list = isolation.ConfigErrors{one}
	default:
		e.add("isolation."+name, err.Error())
		return
	}
	for _, ce := range list {
		e.add("isolation."+name+"."+ce.Key, ce.Msg)
	}
}

func (e *Error) positive(key string, n int) {
	if n < 1 {
		e.add(key, fmt.Sprintf("must be at least 1, not %d", n))
	}
}

func (e *Error) positiveDuration(key string, d time.Duration) {
	if d <= 0 {
		e.add(key, fmt.Sprintf("must be a positive duration such as 2s, not %s", d))
	}
}
