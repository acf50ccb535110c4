package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// importBatch is how many rows go into one INSERT.
const importBatch = 5000

// MinTenantVersion is the oldest tenant schema version an export may have
// been made at: version 2, that of format version 1 files.
const MinTenantVersion = 2

// Import restores the export in the file at path into a new tenant called
// slug, on whatever strategy is configured. Before it creates anything it
// verifies every checksum and checks every row as the API checks what it
// is sent (finops.Restore): a row the API would refuse or round is a
// *RowsError naming its line, and nothing is written. The rows go in in one
// transaction bound to the new tenant, as the API would have stored them;
// if anything fails, the new tenant is deleted again, so nothing is left
// half-written.
func (a *Archiver) Import(ctx context.Context, path, slug string) (control.Tenant, Manifest, error) {
	m, err := checkFile(path, time.Now())
	if err != nil {
		return control.Tenant{}, Manifest{}, err
	}
	// Older tenant schemas load too: the migrations since only added
	// nullable columns, which the older rows leave NULL.
	if head := migrations.Tenant.Head(); m.TenantVersion < MinTenantVersion || m.TenantVersion > head {
		return control.Tenant{}, m, fmt.Errorf("import: the export is at tenant schema version %d, this server reads %d to %d", m.TenantVersion, MinTenantVersion, head)
	}
	t, err := a.control.CreateTenant(ctx, slug, m.Tenant.Name)
	if err != nil {
		return control.Tenant{}, m, fmt.Errorf("import: %w", err)
	}
	if err := a.load(ctx, path, t, m, time.Now()); err != nil {
		if _, derr := a.control.DeleteTenant(context.WithoutCancel(ctx), slug); derr != nil {
			err = fmt.Errorf("%w (and removing the half-imported tenant failed: %v)", err, derr)
		}
		return control.Tenant{}, m, fmt.Errorf("import into %s: %w", slug, err)
	}
	if _, err := a.control.Audit(ctx, control.Event{Action: ActionImport, Tenants: []string{slug},
		Detail: map[string]any{"from": m.Tenant.Slug, "source_isolation": m.SourceIsolation, "sha256": m.SHA256}}); err != nil {
		return t, m, err
	}
	return t, m, nil
}

// RowsError lists the rows of an export the API would refuse or round,
// each a *store.ValidationError whose field starts with its line.
type RowsError struct{ Errs []error }

func (e *RowsError) Error() string {
	parts := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		parts[i] = err.Error()
	}
	return "rows the API would refuse: " + strings.Join(parts, "; ")
}

// Unwrap returns the errors, for errors.As.
func (e *RowsError) Unwrap() []error { return e.Errs }

// maxRowErrors bounds the row errors an import reports.
const maxRowErrors = 20

// checkFile reads the export at path once: its checksums (Verify) and every
// row, as finops.Restore checks them. It returns the manifest, a
// *CorruptError or a *RowsError.
func checkFile(path string, now time.Time) (Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return Manifest{}, err
	}
	defer f.Close()
	restore := finops.NewRestore(now)
	var (
		bad  []error
		more int
		m    *Manifest
	)
	note := func(err error) {
		for _, e := range store.Unjoin(err) {
			if len(bad) < maxRowErrors {
				bad = append(bad, e)
			} else {
				more++
			}
		}
	}
	err = scan(f, func(line int, table string, row json.RawMessage) error {
		if _, err := restore.Row(fmt.Sprintf("line %d", line), table, row); err != nil {
			note(err)
		}
		return nil
	}, &m)
	if err != nil {
		return Manifest{}, err
	}
	note(restore.Done())
	if more > 0 {
		bad = append(bad, fmt.Errorf("%d more not listed", more))
	}
	if len(bad) > 0 {
		return *m, &RowsError{bad}
	}
	return *m, nil
}

// load inserts the rows of the file into t, in one transaction. The file is
// verified again as it is read: a file changed since the first pass fails
// the transaction.
func (a *Archiver) load(ctx context.Context, path string, t control.Tenant, m Manifest, now time.Time) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tenantID, err := json.Marshal(t.ID)
	if err != nil {
		return err
	}
	return a.strategy.Run(ctx, t.Isolated(), func(tx pgx.Tx) error {
		// References between tenant tables are deferrable: rows can come in
		// any table order.
		if _, err := tx.Exec(ctx, `SET CONSTRAINTS ALL DEFERRED`); err != nil {
			return err
		}
		tables, err := isolation.TenantTables(ctx, tx)
		if err != nil {
			return err
		}
		for _, te := range m.Tables {
			if te.Rows > 0 && !slices.Contains(tables, te.Name) {
				return fmt.Errorf("table %s of the export does not exist here", te.Name)
			}
		}
		var (
			table string
			batch []json.RawMessage
		)
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			arr, err := json.Marshal(batch)
			if err != nil {
				return err
			}
			ident := pgx.Identifier{table}.Sanitize()
			// RETURNING keeps the statement an INSERT on Citus, where an
			// INSERT … SELECT without it becomes a COPY into the shards,
			// which Row-Level Security refuses (as in finops's ingest).
			rows, err := tx.Query(ctx, `INSERT INTO `+ident+` SELECT * FROM jsonb_populate_recordset(NULL::`+ident+`, $1::jsonb) RETURNING true`, string(arr))
			if err == nil {
				for rows.Next() {
				}
				err = rows.Err()
			}
			batch = batch[:0]
			if err != nil {
				return fmt.Errorf("insert into %s: %w", table, err)
			}
			return nil
		}
		var got *Manifest
		// The rows as the API would have stored them; checkFile refused
		// the file already if any would not be.
		restore := finops.NewRestore(now)
		err = scan(f, func(line int, tbl string, raw json.RawMessage) error {
			row, err := restore.Row(fmt.Sprintf("line %d", line), tbl, raw)
			if err != nil {
				return err
			}
			if tbl != table {
				if err := flush(); err != nil {
					return err
				}
				table = tbl
			}
			// The importing tenant's id, in front of the row's own columns.
			withTenant := make([]byte, 0, len(row)+len(tenantID)+16)
			withTenant = append(withTenant, `{"tenant_id":`...)
			withTenant = append(withTenant, tenantID...)
			if len(row) > 2 {
				withTenant = append(withTenant, ',')
			}
			withTenant = append(withTenant, row[1:]...)
			batch = append(batch, withTenant)
			if len(batch) >= importBatch {
				return flush()
			}
			return nil
		}, &got)
		if err != nil {
			return err
		}
		if got.SHA256 != m.SHA256 {
			return &CorruptError{"the file changed while it was imported"}
		}
		if err := flush(); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`)
		return err
	})
}
