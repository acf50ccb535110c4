// Package migrations embeds Bulkhead's goose SQL migrations: the control
// plane (tenants, keys, audit log) and the tenant tables, which are written
// once and applied by every isolation strategy in its own place.
//
// Migrations run only through goose's Provider API; nothing here touches
// goose's package-level state.
package migrations

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

//go:embed control/*.sql tenant/*.sql
var files embed.FS

// Set is one sequence of migrations and the table goose records it in.
type Set struct {
	// Name is "control" or "tenant".
	Name string
	// Table is the goose version table. The tenant set's is unqualified, so
	// it lives in whichever schema the migrator's search_path names first.
	Table string
	fsys  fs.FS
}

var (
	// Control migrates the control plane, in the bulkhead schema.
	Control = newSet("control", "bulkhead.goose_control")
	// Tenant migrates the tenant tables.
	Tenant = newSet("tenant", "goose_tenant")
)

// ControlSchema is the schema of the control plane.
const ControlSchema = "bulkhead"

func newSet(name, table string) Set {
	sub, err := fs.Sub(files, name)
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	return Set{Name: name, Table: table, fsys: sub}
}

// FS returns the set's SQL files.
func (s Set) FS() fs.FS { return s.fsys }

// Provider returns a goose provider applying s over db. lockID, when not 0,
// serialises concurrent migrators of the same target with a PostgreSQL
// session advisory lock; different targets must use different ids.
func (s Set) Provider(db *sql.DB, lockID int64) (*goose.Provider, error) {
	store, err := database.NewStore(database.DialectPostgres, s.Table)
	if err != nil {
		return nil, fmt.Errorf("%s migrations: %w", s.Name, err)
	}
	opts := []goose.ProviderOption{
		goose.WithStore(versionStore{store}),
		goose.WithDisableGlobalRegistry(true),
	}
	if lockID != 0 {
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID))
		if err != nil {
			return nil, fmt.Errorf("%s migrations: %w", s.Name, err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(goose.DialectCustom, db, s.fsys, opts...) // PostgreSQL's store: versionStore
	if err != nil {
		return nil, fmt.Errorf("%s migrations: %w", s.Name, err)
	}
	return p, nil
}

// versionStore is goose's PostgreSQL store but for how it checks that the
// version table exists. goose asks pg_tables for the table's name in the
// current schema, which reads every relation of that name in the database
// (pg_class is indexed by name, then namespace): with one goose_tenant per
// tenant schema, 25 ms at 7,000 tenants, paid by every tenant's migration —
// quadratic over a `bulkhead migrate` of all of them. to_regclass resolves
// the one qualified name through the index. An unqualified table is looked
// for in the current schema, as goose does (where it would create it), not
// along the whole search_path; a schema-qualified one where it says.
type versionStore struct{ database.Store }

func (s versionStore) TableExists(ctx context.Context, db database.DBTxConn) (bool, error) {
	var exists bool
	q := `SELECT to_regclass(format('%I.%I', current_schema(), $1::text)) IS NOT NULL`
	if strings.Contains(s.Tablename(), ".") {
		q = `SELECT to_regclass($1) IS NOT NULL`
	}
	if err := db.QueryRowContext(ctx, q, s.Tablename()).Scan(&exists); err != nil {
		return false, fmt.Errorf("look for the version table %s: %w", s.Tablename(), err)
	}
	return exists, nil
}

// Head is the highest version in s.
func (s Set) Head() int64 {
	var head int64
	for _, name := range s.names() {
		v, _, _ := strings.Cut(name, "_")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("migration %s: version is not a number", name))
		}
		head = max(head, n)
	}
	return head
}

// Hash identifies the content of s: it changes whenever a migration is added
// or edited, so anything built from s (a template database) can be keyed by it.
func (s Set) Hash() string {
	h := sha256.New()
	for _, name := range s.names() {
		b, err := fs.ReadFile(s.fsys, name)
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Relations lists the tables and views the set's migrations create in
// schema, written schema.name in them, sorted: what may exist there (one
// dropped by a later migration is listed too).
func (s Set) Relations(schema string) []string {
	create := regexp.MustCompile(`(?i)\bCREATE\s+(?:UNLOGGED\s+)?(?:TABLE|(?:MATERIALIZED\s+)?VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?` +
		regexp.QuoteMeta(schema) + `\.("?)(\w+)"?`)
	var out []string
	for _, name := range s.names() {
		b, err := fs.ReadFile(s.fsys, name)
		if err != nil {
			panic(err) // embedded: cannot fail
		}
		for _, m := range create.FindAllStringSubmatch(string(b), -1) {
			if !slices.Contains(out, m[2]) {
				out = append(out, m[2])
			}
		}
	}
	slices.Sort(out)
	return out
}

func (s Set) names() []string {
	var names []string
	err := fs.WalkDir(s.fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && path.Ext(p) == ".sql" {
			names = append(names, p)
		}
		return err
	})
	if err != nil {
		panic(err)
	}
	slices.Sort(names)
	return names
}
