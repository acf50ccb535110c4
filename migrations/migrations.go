// Package migrations embeds Bulkhead's goose SQL migrations: the control
// plane (tenants, keys, audit log) and the tenant tables, which are written
// once and applied by every isolation strategy in its own place.
//
// Migrations run only through goose's Provider API; nothing here touches
// goose's package-level state.
package migrations

import (
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
	opts := []goose.ProviderOption{
		goose.WithTableName(s.Table),
		goose.WithDisableGlobalRegistry(true),
	}
	if lockID != 0 {
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID))
		if err != nil {
			return nil, fmt.Errorf("%s migrations: %w", s.Name, err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, s.fsys, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s migrations: %w", s.Name, err)
	}
	return p, nil
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
