package finops

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Loading a billing export: millions of rows and hundreds of MB, all or
// nothing. The dataset is read as it arrives, in one goroutine, into
// batches of rows; the tenant's transaction takes the batches one by one
// (the accounts they name, the periods they restate, then one INSERT), so
// reading and writing overlap and memory holds two batches whatever the
// size of the file. A bad row stops the writing; the rows after it are
// still read for more problems, up to maxFieldErrors, and the transaction
// rolls back.

// ReplaceBillingPeriod is the restatement mode: the rows of each billing
// account and billing period the dataset has replace, atomically, the rows
// of that account and period already stored.
const ReplaceBillingPeriod = "billing_period"

// Import statuses.
const (
	ImportRunning   = "running"
	ImportSucceeded = "succeeded"
	ImportFailed    = "failed"
)

// Bounds of one import.
const (
	// importBatchRows and importBatchBytes bound a batch: one INSERT.
	importBatchRows  = 4000
	importBatchBytes = 4 << 20
	// maxImportAccounts bounds the distinct accounts, and
	// maxImportPeriods the distinct restated billing periods, of one
	// import: both are remembered while it runs.
	maxImportAccounts = 100_000
	maxImportPeriods  = 100_000
	// errorsReadAhead is how many rows after the first bad one are read
	// for more problems.
	errorsReadAhead = 100_000
	// progressEvery is how often a recorded import writes its progress.
	progressEvery = 2 * time.Second
)

var (
	// ErrBadReplace is returned for a replace mode other than
	// ReplaceBillingPeriod.
	ErrBadReplace = errors.New(`replace: must be "billing_period"`)
	// ErrBadImportID is returned for an import id that is not a UUID.
	ErrBadImportID = errors.New("Import-Id: must be a UUID")
	// errReplayed rolls back an import whose idempotency key turned out,
	// at the end, to have been used for the same request meanwhile.
	errReplayed = errors.New("replayed")
)

// ImportOptions tune ImportCosts. The zero value imports without recording
// progress, appending to what is stored.
type ImportOptions struct {
	// ID names the import; zero picks a new one.
	ID uuid.UUID
	// Replace is "" (append) or ReplaceBillingPeriod.
	Replace string
	// Key, when set, makes the import idempotent (see IngestCosts). Its
	// Fingerprint is completed by Fingerprint once the source is read to
	// its end, since it covers the whole body.
	Key         *IdempotencyKey
	Fingerprint func() [32]byte
	// Record writes the import and its progress to cost_imports, where
	// ImportStatus (any replica) reads them.
	Record bool
	// Progress, when set, is called after each batch is written, from the
	// goroutine running the import.
	Progress func(ImportProgress)
	// BytesRead, when set, tells how many bytes of the body were read.
	BytesRead func() int64
	// Interrupt, when set, is called when the import ends early, to wake a
	// read of the source that may be waiting on a slow client.
	Interrupt func()
}

// ImportProgress is how far an import got.
type ImportProgress struct {
	Rows  int64
	Bytes int64
}

// Imported is the outcome of an import.
type Imported struct {
	ID       uuid.UUID `json:"import_id"`
	Inserted int64     `json:"inserted"`
	// Replaced counts the stored rows a restatement replaced.
	Replaced int64 `json:"replaced"`
	// AccountsCreated counts the accounts the dataset named that were new.
	AccountsCreated int64 `json:"accounts_created"`
	// Replayed is set when an earlier request with the same idempotency
	// key and body did the work; this one wrote nothing.
	Replayed bool `json:"-"`
}

// ImportCosts loads the FOCUS dataset src into t's cost items, all or
// nothing, in one transaction: every row is checked (a bad one is a
// *store.ValidationError naming its row and column, "row 5.BilledCost",
// with up to maxFieldErrors of them), the accounts the rows name are found
// or created (SubAccountId, else BillingAccountId, of NormalizeProvider's
// provider), and with Replace the billing periods the dataset restates are
// replaced. A malformed body is a *FormatError; errors reading the source
// are returned as they are. src is read to its end unless the import
// fails; it is never read after ImportCosts returns.
func (s *Service) ImportCosts(ctx context.Context, t isolation.Tenant, src FOCUSSource, opt ImportOptions) (Imported, error) {
	if opt.Replace != "" && opt.Replace != ReplaceBillingPeriod {
		return Imported{}, ErrBadReplace
	}
	if err := opt.Key.validate(); err != nil {
		return Imported{}, err
	}
	layout, err := newFOCUSLayout(src.columns(), opt.Replace == ReplaceBillingPeriod)
	if err != nil {
		return Imported{}, err
	}
	out := Imported{ID: opt.ID}
	if out.ID == uuid.Nil {
		if out.ID, err = uuid.NewV7(); err != nil {
			return Imported{}, err
		}
	}
	started := time.Now()
	if opt.Record {
		if err := s.recordImport(ctx, t, out.ID, src.format(), opt.Replace, started); err != nil {
			return Imported{}, err
		}
	}
	out, err = s.importCosts(ctx, t, src, layout, opt, out, started)
	if opt.Record && err != nil {
		s.failImport(ctx, t, out.ID, err)
	}
	if err != nil {
		return Imported{}, err
	}
	return out, nil
}

func (s *Service) importCosts(ctx context.Context, t isolation.Tenant, src FOCUSSource, layout *focusLayout,
	opt ImportOptions, out Imported, started time.Time) (Imported, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	id := out.ID // a replay's outcome names the import that did the work
	batches := make(chan *costBatch, 1)
	var (
		parseErr error
		wg       sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(batches)
		defer func() {
			// A dataset the readers choke on fails its import, not the
			// process.
			if r := recover(); r != nil {
				parseErr = fmt.Errorf("read dataset: panic: %v", r)
			}
		}()
		parseErr = readBatches(ctx, src, layout, batches)
	}()
	w := &costWriter{t: t, createdAt: started, accounts: map[accountKey]uuid.UUID{}, periods: map[periodKey]bool{},
		replace: opt.Replace == ReplaceBillingPeriod}
	var progress ImportProgress
	lastRecord := time.Now()
	// Once: the batches are a stream, read as they come.
	err := s.runOnce(ctx, t, func(tx pgx.Tx) error {
		for b := range batches {
			if err := w.write(ctx, tx, b); err != nil {
				return err
			}
			progress.Rows += int64(len(b.ids))
			if opt.BytesRead != nil {
				progress.Bytes = opt.BytesRead()
			}
			if opt.Progress != nil {
				opt.Progress(progress)
			}
			if opt.Record && time.Since(lastRecord) >= progressEvery {
				s.recordProgress(ctx, t, id, progress)
				lastRecord = time.Now()
			}
		}
		// The channel is closed: parseErr is set.
		if parseErr != nil {
			return parseErr
		}
		out.Inserted, out.Replaced, out.AccountsCreated = w.inserted, w.replaced, w.created
		if opt.Key != nil {
			if opt.Fingerprint != nil {
				opt.Key.Fingerprint = opt.Fingerprint()
			}
			replayed, err := claimKey(ctx, tx, t, opt.Key, opIngestCosts, &out)
			if err != nil {
				return err
			}
			if replayed {
				out.Replayed = true
				return errReplayed
			}
		}
		if opt.Record {
			if opt.BytesRead != nil {
				progress.Bytes = opt.BytesRead()
			}
			return finishImport(ctx, tx, t, out, progress)
		}
		return nil
	})
	if err != nil {
		cancel()
		if opt.Interrupt != nil {
			opt.Interrupt()
		}
	}
	for range batches { // let the reader see the cancel and stop
	}
	wg.Wait()
	switch {
	case errors.Is(err, errReplayed):
		if opt.Record {
			s.recordReplay(ctx, t, id, out)
		}
		return out, nil
	case err != nil:
		return out, fmt.Errorf("import costs: %w", err)
	}
	return out, nil
}

// costBatch is the rows of one INSERT, column by column, as the statement
// takes them.
type costBatch struct {
	keys  []accountKey
	names map[accountKey]string
	// periods are the (billing account, billing period) pairs of the rows.
	periods map[periodKey]bool

	ids                            []uuid.UUID
	service, amount, currency      []string
	usageDate                      []time.Time
	billingAccount                 []pgtype.Text
	bpStart, bpEnd, cpStart, cpEnd []pgtype.Timestamptz
	chargeCategory, serviceCat     []pgtype.Text
	region, effective, list, contr []pgtype.Text
	tags, focus                    []pgtype.Text
	size                           int
	random                         io.Reader
}

// periodKey is a billing period of a billing account. A billing account id
// is its provider's: the same id at another provider is another account.
type periodKey struct {
	provider       string
	billingAccount string
	start          time.Time
}

func newBatch() *costBatch {
	return &costBatch{names: map[accountKey]string{}, periods: map[periodKey]bool{}, random: idRandom()}
}

// idRandom is the randomness of a batch's ids: crypto/rand, read 4 KiB at
// a time rather than a system call per id (millions of them per load).
func idRandom() io.Reader { return bufio.NewReaderSize(rand.Reader, 4096) }

func nullText(s string) pgtype.Text { return pgtype.Text{String: s, Valid: s != ""} }

func nullTime(t time.Time) pgtype.Timestamptz { return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()} }

// add appends r; account is its account's key (zero when r.AccountID is
// already known).
func (b *costBatch) add(r CostRow, account accountKey, name string) error {
	id, err := uuid.NewV7FromReader(b.random)
	if err != nil {
		return err
	}
	b.ids = append(b.ids, id)
	b.keys = append(b.keys, account)
	if _, ok := b.names[account]; !ok && account.externalID != "" {
		b.names[account] = name
	}
	if r.BillingAccountID != "" && !r.BillingPeriodStart.IsZero() {
		b.periods[periodKey{account.provider, r.BillingAccountID, r.BillingPeriodStart}] = true
	}
	b.service = append(b.service, r.Service)
	b.usageDate = append(b.usageDate, r.UsageDate)
	b.amount = append(b.amount, r.Amount)
	b.currency = append(b.currency, r.Currency)
	b.billingAccount = append(b.billingAccount, nullText(r.BillingAccountID))
	b.bpStart = append(b.bpStart, nullTime(r.BillingPeriodStart))
	b.bpEnd = append(b.bpEnd, nullTime(r.BillingPeriodEnd))
	b.cpStart = append(b.cpStart, nullTime(r.ChargePeriodStart))
	b.cpEnd = append(b.cpEnd, nullTime(r.ChargePeriodEnd))
	b.chargeCategory = append(b.chargeCategory, nullText(r.ChargeCategory))
	b.serviceCat = append(b.serviceCat, nullText(r.ServiceCategory))
	b.region = append(b.region, nullText(r.RegionID))
	b.effective = append(b.effective, nullText(r.EffectiveCost))
	b.list = append(b.list, nullText(r.ListCost))
	b.contr = append(b.contr, nullText(r.ContractedCost))
	b.tags = append(b.tags, nullText(r.Tags))
	b.focus = append(b.focus, nullText(r.Focus))
	b.size += 200 + len(r.Service) + len(r.Tags) + len(r.Focus)
	return nil
}

func (b *costBatch) full() bool { return len(b.ids) >= importBatchRows || b.size >= importBatchBytes }

// readBatches reads src to its end into batches on out. It stops sending
// at the first bad row and reads on for more problems (errorsReadAhead
// rows, maxFieldErrors problems), then returns them; it stops when ctx is
// done.
func readBatches(ctx context.Context, src FOCUSSource, layout *focusLayout, out chan<- *costBatch) error {
	var errs fieldErrors
	b := newBatch()
	scratch := make([]byte, 0, 4096)
	send := func() error {
		select {
		case out <- b:
			b = newBatch()
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var readAhead int
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		cells, name, err := src.next()
		if errors.Is(err, io.EOF) {
			break
		}
		var ve *store.ValidationError
		if errors.As(err, &ve) {
			errs.addAll(err)
		} else if err != nil {
			return err
		}
		if errs.count() > 0 {
			if readAhead++; readAhead > errorsReadAhead || errs.count() >= maxFieldErrors {
				break
			}
			if err != nil {
				continue
			}
		}
		r, ok := layout.row(cells, name, &errs, &scratch)
		if !ok || errs.count() > 0 {
			continue
		}
		if err := b.add(r.CostRow, r.account, r.accountName); err != nil {
			return err
		}
		if b.full() {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if err := errs.err(); err != nil {
		return err
	}
	if len(b.ids) > 0 {
		return send()
	}
	return nil
}

// costWriter writes batches of one import in its transaction: it resolves
// the accounts they name, restates their billing periods, inserts them,
// and counts.
type costWriter struct {
	t         isolation.Tenant
	createdAt time.Time
	// accounts are the accounts found or created so far; periods the
	// billing periods restated so far (each once, before the first of
	// its rows is inserted, so the import's own rows stay).
	accounts                    map[accountKey]uuid.UUID
	periods                     map[periodKey]bool
	replace                     bool
	inserted, replaced, created int64
}

// write writes one batch.
func (w *costWriter) write(ctx context.Context, tx pgx.Tx, b *costBatch) error {
	if err := w.resolveAccounts(ctx, tx, b); err != nil {
		return err
	}
	accounts := make([]uuid.UUID, len(b.keys))
	for i, k := range b.keys {
		accounts[i] = w.accounts[k]
	}
	if err := w.restate(ctx, tx, b); err != nil {
		return err
	}
	n, err := insertBatch(ctx, tx, w.t, b, accounts, w.createdAt)
	if err != nil {
		return err
	}
	w.inserted += n
	return nil
}

// resolveAccounts finds the accounts of b's rows not seen yet, and creates
// those that do not exist. Found accounts are locked against deletion
// (FOR KEY SHARE, as the foreign key would) until the transaction ends;
// concurrent imports do not wait for each other unless both create the
// same new account.
func (w *costWriter) resolveAccounts(ctx context.Context, tx pgx.Tx, b *costBatch) error {
	var providers, externals []string
	for k := range b.names {
		if _, ok := w.accounts[k]; !ok {
			providers, externals = append(providers, k.provider), append(externals, k.externalID)
		}
	}
	if len(providers) == 0 {
		return nil
	}
	if len(w.accounts)+len(providers) > maxImportAccounts {
		return errorsOf("body", fmt.Sprintf("the dataset names more than %d accounts", maxImportAccounts))
	}
	find := func() error {
		rows, err := tx.Query(ctx, `
			SELECT id, provider, external_id FROM accounts
			WHERE tenant_id = $1 AND (provider, external_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))
			ORDER BY id FOR KEY SHARE`, w.t.ID, providers, externals)
		if err != nil {
			return err
		}
		return w.collect(rows, false)
	}
	if err := find(); err != nil {
		return err
	}
	var ids []uuid.UUID
	var ps, es, names []string
	for k, name := range b.names {
		if _, ok := w.accounts[k]; ok {
			continue
		}
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		ids, ps, es, names = append(ids, id), append(ps, k.provider), append(es, k.externalID), append(names, name)
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `
		INSERT INTO accounts (tenant_id, id, provider, external_id, name, created_at, updated_at)
		SELECT $1, r.id, r.provider, r.external_id, r.name, $6, $6
		FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[]) AS r (id, provider, external_id, name)
		ON CONFLICT (tenant_id, provider, external_id) DO NOTHING
		RETURNING id, provider, external_id`, w.t.ID, ids, ps, es, names, w.createdAt)
	if err != nil {
		return err
	}
	if err := w.collect(rows, true); err != nil {
		return err
	}
	// Created meanwhile by a transaction that committed since: find them.
	for _, k := range b.keys {
		if _, ok := w.accounts[k]; !ok {
			if err := find(); err != nil {
				return err
			}
			break
		}
	}
	for _, k := range b.keys {
		if _, ok := w.accounts[k]; !ok {
			return fmt.Errorf("account %s/%s neither found nor created", k.provider, k.externalID)
		}
	}
	return nil
}

func (w *costWriter) collect(rows pgx.Rows, created bool) error {
	var (
		id   uuid.UUID
		k    accountKey
		seen int64
	)
	_, err := pgx.ForEachRow(rows, []any{&id, &k.provider, &k.externalID}, func() error {
		w.accounts[k] = id
		seen++
		return nil
	})
	if created {
		w.created += seen
	}
	return err
}

// restate deletes the stored rows of the billing periods b restates that
// this import has not restated yet.
func (w *costWriter) restate(ctx context.Context, tx pgx.Tx, b *costBatch) error {
	if !w.replace {
		return nil
	}
	var providers, accounts []string
	var starts []time.Time
	for p := range b.periods {
		if !w.periods[p] {
			w.periods[p] = true
			providers, accounts, starts = append(providers, p.provider), append(accounts, p.billingAccount), append(starts, p.start)
		}
	}
	if len(accounts) == 0 {
		return nil
	}
	if len(w.periods) > maxImportPeriods {
		return errorsOf("body", fmt.Sprintf("the dataset restates more than %d billing periods", maxImportPeriods))
	}
	// Two restatements of one period at once must not both survive: under
	// READ COMMITTED the second one's DELETE would wait on the rows the
	// first deleted, skip them, and not see the rows the first inserted,
	// leaving both files' rows. A transaction lock per period serialises
	// them: the second DELETE starts after the first commits and sees its
	// rows. Locks are taken in one order within a batch; imports taking
	// them in other orders across batches are ended by PostgreSQL's
	// deadlock detection (a 503 the client retries), never both kept.
	locks := make([]string, len(accounts))
	for i := range accounts {
		locks[i] = fmt.Sprintf("bulkhead restate %s %q %q %s", w.t.ID, providers[i], accounts[i], starts[i].UTC().Format(time.RFC3339Nano))
	}
	slices.Sort(locks)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k`, locks); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `
		DELETE FROM cost_items c USING accounts a
		WHERE c.tenant_id = $1 AND a.tenant_id = $1 AND a.id = c.account_id
			AND (a.provider, c.billing_account_id, c.billing_period_start) IN
				(SELECT * FROM unnest($2::text[], $3::text[], $4::timestamptz[]))`,
		w.t.ID, providers, accounts, starts)
	if err != nil {
		return err
	}
	w.replaced += tag.RowsAffected()
	return nil
}

// insertBatch inserts b in one statement: the columns travel as arrays
// and unnest turns them back into rows on the server. (COPY FROM is refused
// on tables under Row-Level Security.) RETURNING keeps the statement an
// INSERT on Citus, where an INSERT … SELECT without it becomes a COPY that
// RLS refuses; it also counts what was written.
func insertBatch(ctx context.Context, tx pgx.Tx, t isolation.Tenant, b *costBatch, accounts []uuid.UUID, createdAt time.Time) (int64, error) {
	rows, err := tx.Query(ctx, `
		INSERT INTO cost_items (tenant_id, id, account_id, service, usage_date, amount, currency, created_at,
			billing_account_id, billing_period_start, billing_period_end, charge_period_start, charge_period_end,
			charge_category, service_category, region_id, effective_cost, list_cost, contracted_cost, tags, focus)
		SELECT $1, r.id, r.account_id, r.service, r.usage_date, r.amount::numeric, r.currency, $2,
			r.billing_account_id, r.bp_start, r.bp_end, r.cp_start, r.cp_end,
			r.charge_category, r.service_category, r.region_id, r.effective::numeric, r.list::numeric, r.contracted::numeric,
			r.tags::jsonb, r.focus::jsonb
		FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::date[], $7::text[], $8::text[],
			$9::text[], $10::timestamptz[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[],
			$14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[])
			AS r (id, account_id, service, usage_date, amount, currency,
				billing_account_id, bp_start, bp_end, cp_start, cp_end,
				charge_category, service_category, region_id, effective, list, contracted, tags, focus)
		RETURNING id`,
		t.ID, createdAt, b.ids, accounts, b.service, b.usageDate, b.amount, b.currency,
		b.billingAccount, b.bpStart, b.bpEnd, b.cpStart, b.cpEnd,
		b.chargeCategory, b.serviceCat, b.region, b.effective, b.list, b.contr, b.tags, b.focus)
	if err != nil {
		return 0, err
	}
	var n int64
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if n != int64(len(b.ids)) {
		return 0, fmt.Errorf("inserted %d cost items of %d", n, len(b.ids))
	}
	return n, nil
}

// ImportStatus is a recorded import, as ImportCosts left it.
type ImportStatus struct {
	ID              uuid.UUID
	Status          string
	Format          string
	Replace         *string
	RowsDone        int64
	BytesDone       int64
	Inserted        *int64
	Replaced        *int64
	AccountsCreated *int64
	Error           *string
	StartedAt       time.Time
	UpdatedAt       time.Time
	FinishedAt      *time.Time
}

const importColumns = `id, status, format, replace, rows_done, bytes_done, inserted, replaced, accounts_created,
	error, started_at, updated_at, finished_at`

func scanImport(row pgx.Row) (ImportStatus, error) {
	var i ImportStatus
	err := row.Scan(&i.ID, &i.Status, &i.Format, &i.Replace, &i.RowsDone, &i.BytesDone, &i.Inserted, &i.Replaced,
		&i.AccountsCreated, &i.Error, &i.StartedAt, &i.UpdatedAt, &i.FinishedAt)
	return i, err
}

// Import returns t's import id, or store.ErrNotFound.
func (s *Service) Import(ctx context.Context, t isolation.Tenant, id uuid.UUID) (ImportStatus, error) {
	var out ImportStatus
	err := s.run(ctx, t, func(tx pgx.Tx) (err error) {
		out, err = scanImport(tx.QueryRow(ctx, `SELECT `+importColumns+` FROM cost_imports WHERE tenant_id = $1 AND id = $2`, t.ID, id))
		return err
	})
	return out, err
}

// Imports returns a page of t's recorded imports, the latest first, and
// the cursor of the next page ("" on the last).
func (s *Service) Imports(ctx context.Context, t isolation.Tenant, p Page) ([]ImportStatus, string, error) {
	after := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	afterID := uuid.Max
	if p.Cursor != "" {
		key, err := decodeCursor(p.Cursor, 2)
		if err != nil {
			return nil, "", err
		}
		if after, err = time.Parse(time.RFC3339Nano, key[0]); err != nil {
			return nil, "", ErrBadCursor
		}
		if afterID, err = uuid.Parse(key[1]); err != nil {
			return nil, "", ErrBadCursor
		}
	}
	limit := p.limit()
	var out []ImportStatus
	err := s.run(ctx, t, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+importColumns+` FROM cost_imports
			WHERE tenant_id = $1 AND (started_at, id) < ($2, $3)
			ORDER BY started_at DESC, id DESC LIMIT $4`, t.ID, after, afterID, limit+1)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ImportStatus, error) { return scanImport(r) })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list imports: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeCursor(last.StartedAt.UTC().Format(time.RFC3339Nano), last.ID.String())
	}
	return out, next, nil
}

// importConstraints is what recording an import can break: its id, the
// client's Import-Id.
var importConstraints = store.Constraints{store.UniqueViolation: "cost_imports_pkey"}

// recordImport writes a new running import; an id t already used is a
// *store.ConflictError.
func (s *Service) recordImport(ctx context.Context, t isolation.Tenant, id uuid.UUID, format, replace string, at time.Time) error {
	return s.run(ctx, t, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO cost_imports (tenant_id, id, status, format, replace, started_at, updated_at)
			VALUES ($1, $2, 'running', $3, $4, $5, $5)`, t.ID, id, format, nullText(replace), at)
		return importConstraints.Name(err)
	})
}

// recordProgress writes how far a running import got, in a short
// transaction of its own: best effort, it never holds the import up for
// long nor fails it.
func (s *Service) recordProgress(ctx context.Context, t isolation.Tenant, id uuid.UUID, p ImportProgress) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_ = s.run(ctx, t, func(tx pgx.Tx) error { // best effort: progress only
		_, err := tx.Exec(ctx, `
			UPDATE cost_imports SET rows_done = $3, bytes_done = $4, updated_at = $5
			WHERE tenant_id = $1 AND id = $2 AND status = 'running'`, t.ID, id, p.Rows, p.Bytes, time.Now())
		return err
	})
}

// finishImport records success inside the import's own transaction: it is
// recorded exactly when the rows are.
func finishImport(ctx context.Context, tx pgx.Tx, t isolation.Tenant, out Imported, p ImportProgress) error {
	_, err := tx.Exec(ctx, `
		UPDATE cost_imports SET status = 'succeeded', rows_done = $3, bytes_done = $4, inserted = $5, replaced = $6,
			accounts_created = $7, updated_at = $8, finished_at = $8
		WHERE tenant_id = $1 AND id = $2`, t.ID, out.ID, p.Rows, p.Bytes, out.Inserted, out.Replaced, out.AccountsCreated, time.Now())
	return err
}

// recordReplay records an import that found its work done by an earlier
// request with the same idempotency key.
func (s *Service) recordReplay(ctx context.Context, t isolation.Tenant, id uuid.UUID, out Imported) {
	s.endImport(ctx, t, id, ImportSucceeded, fmt.Sprintf("replayed: an earlier request with the same Idempotency-Key did the work (import %s)", out.ID), &out)
}

// failImport records why an import failed, in a transaction of its own
// (the import's rolled back). Only what the client was told is kept.
func (s *Service) failImport(ctx context.Context, t isolation.Tenant, id uuid.UUID, cause error) {
	s.endImport(ctx, t, id, ImportFailed, clientText(cause), nil)
}

func (s *Service) endImport(ctx context.Context, t isolation.Tenant, id uuid.UUID, status, msg string, out *Imported) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var inserted *int64
	if out != nil {
		inserted = &out.Inserted
	}
	_ = s.run(ctx, t, func(tx pgx.Tx) error { // best effort: the request has its answer
		_, err := tx.Exec(ctx, `
			UPDATE cost_imports SET status = $3, error = $4, inserted = $5, updated_at = $6, finished_at = $6
			WHERE tenant_id = $1 AND id = $2 AND status = 'running'`, t.ID, id, status, clip(msg, 4000), inserted, time.Now())
		return err
	})
}

// clientText is what a failed import's record says: the problems of the
// client's data, or that the server failed (the log has the rest).
func clientText(err error) string {
	var (
		ve *store.ValidationError
		fe *FormatError
		tl *TooLargeError
	)
	switch {
	case errors.As(err, &ve):
		var parts []string
		for _, e := range flattenErrors(err) {
			if errors.As(e, &ve) {
				parts = append(parts, ve.Field+": "+ve.Msg)
			}
		}
		return strings.Join(parts, "; ")
	case errors.As(err, &fe):
		return fe.Msg
	case errors.As(err, &tl):
		return tl.Error()
	case errors.Is(err, ErrIdempotencyConflict):
		return ErrIdempotencyConflict.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "cancelled: the request ended before the import did"
	}
	return "internal error"
}

func flattenErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	if u := errors.Unwrap(err); u != nil {
		return flattenErrors(u)
	}
	return []error{err}
}

// HasIdempotencyKey reports whether t holds key, unexpired: a load under
// it is then a replay or a conflict, told apart by the whole body's
// fingerprint (ReplayIngest) without loading anything.
func (s *Service) HasIdempotencyKey(ctx context.Context, t isolation.Tenant, key string) (bool, error) {
	var found bool
	err := s.run(ctx, t, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
			SELECT EXISTS (SELECT FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND created_at >= $3)`,
			t.ID, key, time.Now().Add(-IdempotencyTTL)).Scan(&found)
	})
	return found, err
}

// ReplayIngest returns the stored outcome of the ingest t made under key
// when key's fingerprint is the stored one (replayed is true), or
// ErrIdempotencyConflict when it is not; replayed is false when t holds no
// such key (any more).
func (s *Service) ReplayIngest(ctx context.Context, t isolation.Tenant, key *IdempotencyKey) (out Imported, replayed bool, err error) {
	if err := key.validate(); err != nil {
		return Imported{}, false, err
	}
	var (
		op     string
		fp     []byte
		result []byte
	)
	err = s.run(ctx, t, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
			SELECT operation, fingerprint, result FROM idempotency_keys
			WHERE tenant_id = $1 AND key = $2 AND created_at >= $3`, t.ID, key.Key, time.Now().Add(-IdempotencyTTL)).Scan(&op, &fp, &result)
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Imported{}, false, nil
	case err != nil:
		return Imported{}, false, err
	case op != opIngestCosts || string(fp) != string(key.Fingerprint[:]):
		return Imported{}, false, ErrIdempotencyConflict
	}
	if err := json.Unmarshal(result, &out); err != nil {
		return Imported{}, false, fmt.Errorf("decode stored result of idempotency key: %w", err)
	}
	out.Replayed = true
	return out, true, nil
}
