// Package config builds Bulkhead's typed configuration from its layers —
// built-in defaults < profile < YAML file < environment < flags — with koanf,
// records where every value came from, and validates the result as a whole.
//
// Every problem is reported at once, in one *Error whose message is a single
// line naming each bad key; the command line turns it into exit status 2.
package config

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/profiles"
)

// Strategy names, as configured in isolation.strategy.
const (
	StrategyRLS      = "rls"
	StrategySchema   = "schema"
	StrategyDatabase = "database"
)

// Pooler names, as configured in database.pooler.
const (
	PoolerNone      = "none"
	PoolerPgBouncer = "pgbouncer"
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

// Isolation selects and tunes the isolation strategy new tenants are
// provisioned with.
type Isolation struct {
	Strategy string `koanf:"strategy"`
	// MigrateParallelism bounds how many tenants migrate at once.
	MigrateParallelism int               `koanf:"migrate_parallelism"`
	Database           DatabaseIsolation `koanf:"database"`
}

// DatabaseIsolation tunes the database-per-tenant strategy.
type DatabaseIsolation struct {
	// MaxConnections caps all tenant pools of one process together.
	MaxConnections int `koanf:"max_connections"`
	// AcquireTimeout is how long a request waits for a tenant connection
	// before it is answered 503 with Retry-After.
	AcquireTimeout time.Duration `koanf:"acquire_timeout"`
	// IdleTimeout closes a tenant pool nobody used for this long.
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	// Servers lists where tenant databases live; empty means the server of
	// database.url.
	Servers []Server `koanf:"servers"`
}

// Server is one PostgreSQL server tenant databases can be placed on.
type Server struct {
	Name       string `koanf:"name"`
	URL        string `koanf:"url"`
	MigrateURL string `koanf:"migrate_url"`
}

// Database holds the connection settings of the control-plane database.
type Database struct {
	URL        string `koanf:"url"`
	MigrateURL string `koanf:"migrate_url"`
	Pooler     string `koanf:"pooler"`
	// MaxConnections sizes the serving pool.
	MaxConnections int `koanf:"max_connections"`
}

// HTTP configures the listener.
type HTTP struct {
	Addr            string        `koanf:"addr"`
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
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

// System configures the audited cross-tenant system role.
type System struct {
	Enabled bool `koanf:"enabled"`
}

// defaults are the built-in values, the lowest layer.
func defaults() map[string]any {
	return map[string]any{
		"profile":                            profiles.Default,
		"isolation.strategy":                 StrategyRLS,
		"isolation.migrate_parallelism":      4,
		"isolation.database.max_connections": 50,
		"isolation.database.acquire_timeout": "2s",
		"isolation.database.idle_timeout":    "5m",
		"isolation.database.servers":         []any{},
		"database.url":                       "",
		"database.migrate_url":               "",
		"database.pooler":                    PoolerNone,
		"database.max_connections":           10,
		"http.addr":                          "127.0.0.1:8080",
		"http.shutdown_timeout":              "15s",
		"admin.token":                        "",
		"log.format":                         "",
		"log.level":                          "info",
		"tenants.bootstrap":                  "",
		"system.enabled":                     false,
		"import.max_bytes":                   int64(DefaultImportMaxBytes),
		"import.timeout":                     "1h",
		"import.spool_dir":                   "",
	}
}

// DefaultImportMaxBytes is import.max_bytes unless configured: 2 GiB.
const DefaultImportMaxBytes = 2 << 30

// MinAdminTokenLen is the shortest admin token accepted.
const MinAdminTokenLen = 32

var (
	serverName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	slugRule   = regexp.MustCompile(`^[a-z][a-z0-9-]{2,62}$`)
)

// Validate reports every problem of c at once as an *Error, or nil.
func (c *Config) Validate() error {
	var e Error
	oneOf := func(key, v string, allowed ...string) {
		if !slices.Contains(allowed, v) {
			e.add(key, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", ")))
		}
	}
	oneOf("profile", c.Profile, profiles.Names()...)
	oneOf("isolation.strategy", c.Isolation.Strategy, StrategyRLS, StrategySchema, StrategyDatabase)
	oneOf("database.pooler", c.Database.Pooler, PoolerNone, PoolerPgBouncer)
	oneOf("log.format", c.Log.Format, "", "json", "text")
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")

	e.dsn("database.url", c.Database.URL)
	e.dsn("database.migrate_url", c.Database.MigrateURL)
	e.positive("database.max_connections", c.Database.MaxConnections)
	e.positive("isolation.migrate_parallelism", c.Isolation.MigrateParallelism)
	e.positive("isolation.database.max_connections", c.Isolation.Database.MaxConnections)
	e.positiveDuration("isolation.database.acquire_timeout", c.Isolation.Database.AcquireTimeout)
	e.positiveDuration("isolation.database.idle_timeout", c.Isolation.Database.IdleTimeout)
	e.positiveDuration("http.shutdown_timeout", c.HTTP.ShutdownTimeout)
	e.positiveDuration("import.timeout", c.Import.Timeout)
	if c.Import.MaxBytes < 1<<20 {
		e.add("import.max_bytes", fmt.Sprintf("must be at least 1048576 (1 MiB), not %d", c.Import.MaxBytes))
	}

	seen := map[string]bool{}
	for i, s := range c.Isolation.Database.Servers {
		key := fmt.Sprintf("isolation.database.servers[%d]", i)
		switch {
		case !serverName.MatchString(s.Name):
			e.add(key+".name", fmt.Sprintf("%q must be 1-63 characters of a-z, 0-9 and -, starting with a letter", s.Name))
		case seen[s.Name]:
			e.add(key+".name", fmt.Sprintf("%q is listed twice", s.Name))
		}
		seen[s.Name] = true
		if s.URL == "" {
			e.add(key+".url", "required")
		}
		e.dsn(key+".url", s.URL)
		e.dsn(key+".migrate_url", s.MigrateURL)
	}

	if host, port, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
		e.add("http.addr", fmt.Sprintf("%q is not host:port", c.HTTP.Addr))
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		e.add("http.addr", fmt.Sprintf("port %q of %q is not a number from 0 to 65535", port, host))
	}
	if c.Admin.Token != "" && len(c.Admin.Token) < MinAdminTokenLen {
		e.add("admin.token", fmt.Sprintf("must be at least %d characters", MinAdminTokenLen))
	}
	if c.Tenants.Bootstrap != "" && !slugRule.MatchString(c.Tenants.Bootstrap) {
		e.add("tenants.bootstrap", fmt.Sprintf("%q is not a slug: 3-63 characters of a-z, 0-9 and -, starting with a letter", c.Tenants.Bootstrap))
	}
	return e.err()
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
