package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	openapi_types "github.com/oapi-codegen/runtime/types"
	"github.com/shopspring/decimal"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/finops"
)

// Media types of cost uploads.
const (
	mimeCSV      = "text/csv"
	mimeParquet  = "application/vnd.apache.parquet"
	mimeXParquet = "application/x-parquet"
)

// headerReplayed marks a response replayed for an Idempotency-Key.
const headerReplayed = "Idempotent-Replayed"

// isImportRoute reports whether c is POST /v1/costs, whose body may be a
// billing export far over MaxBodyBytes: it applies its own limits (the
// API's for JSON and the five-column CSV, import.max_bytes for FOCUS).
func isImportRoute(c echo.Context) bool {
	return c.Request().Method == http.MethodPost && c.Path() == "/v1/costs"
}

// apiLimitReader fails like echo's body limit past MaxBodyBytes.
type apiLimitReader struct {
	r    io.Reader
	left int64
}

func (l *apiLimitReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, echo.ErrStatusRequestEntityTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n + int(l.left), echo.ErrStatusRequestEntityTooLarge
	}
	return n, err
}

// IngestCosts writes a JSON array or a CSV file of cost items, or loads a
// FOCUS dataset (CSV or Parquet, gzip or not), all or nothing, replaying
// the first response for a repeated Idempotency-Key.
func (h *handlers) IngestCosts(c echo.Context, params IngestCostsParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	if err := requireContentType(c, echo.MIMEApplicationJSON, mimeCSV, mimeParquet, mimeXParquet); err != nil {
		return err
	}
	req := c.Request()
	mediaType, _, _ := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType)) // checked above
	encoding := strings.ToLower(strings.TrimSpace(req.Header.Get(echo.HeaderContentEncoding)))
	switch encoding {
	case "", "identity":
		encoding = ""
	case "gzip", "x-gzip":
		encoding = "gzip"
	default:
		return newProblem(http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %s is not supported here; send gzip or none", encoding))
	}
	maxBytes := h.cfg.Import.MaxBytes
	if req.ContentLength > maxBytes {
		return &finops.TooLargeError{Limit: maxBytes}
	}
	if mediaType == echo.MIMEApplicationJSON && encoding == "" && req.ContentLength > MaxBodyBytes {
		return echo.ErrStatusRequestEntityTooLarge
	}
	replace := ""
	if params.Replace != nil {
		replace = string(*params.Replace)
	}
	// The fingerprint covers the route, the media type, the encoding, the
	// replace mode and every byte of the body as sent: the readers read
	// it to the end or fail.
	fp := sha256.New()
	io.WriteString(fp, "POST /v1/costs\n"+mediaType+"\n"+encoding+"\n"+replace+"\n")
	raw := io.TeeReader(req.Body, fp)
	body := finops.LimitReader(raw, maxBytes)
	if encoding == "gzip" {
		if body, err = finops.Gunzip(body, maxBytes); err != nil {
			return err
		}
	}
	counted := &finops.CountingReader{R: body}
	var key *finops.IdempotencyKey
	if params.IdempotencyKey != nil {
		key = &finops.IdempotencyKey{Key: *params.IdempotencyKey}
	}
	imp := &focusImport{h: h, c: c, p: p, params: params, replace: replace, key: key, fp: fp, raw: raw, counted: counted}
	switch mediaType {
	case mimeParquet, mimeXParquet:
		return imp.parquet()
	case mimeCSV:
		header, rest, err := finops.ReadHeader(counted)
		if err != nil {
			return err
		}
		if finops.IsFOCUSHeader(header) {
			return imp.csv(rest)
		}
		if replace != "" {
			return badRequest("replace: only a FOCUS dataset restates billing periods")
		}
		items, err := finops.ReadCostsCSV(&apiLimitReader{r: rest, left: MaxBodyBytes})
		if err != nil {
			return err
		}
		return h.ingestItems(c, p, items, key, fp)
	}
	if replace != "" {
		return badRequest("replace: only a FOCUS dataset restates billing periods")
	}
	items, err := finops.ReadCostsJSON(&apiLimitReader{r: counted, left: MaxBodyBytes})
	if err != nil {
		return err
	}
	return h.ingestItems(c, p, items, key, fp)
}

// ingestItems writes items of the five-column format.
func (h *handlers) ingestItems(c echo.Context, p auth.Principal, items []finops.CostInput, key *finops.IdempotencyKey, fp hash.Hash) error {
	if key != nil {
		fp.Sum(key.Fingerprint[:0])
	}
	res, err := h.finops.IngestCosts(c.Request().Context(), p.Tenant, items, key)
	if err != nil {
		return err
	}
	if res.Replayed {
		c.Response().Header().Set(headerReplayed, "true")
	}
	// Line items are no one resource: they joined the collection.
	c.Response().Header().Set(echo.HeaderLocation, "/v1/costs")
	return c.JSON(http.StatusCreated, IngestResult{Inserted: int64(res.Inserted)})
}

// focusImport is one FOCUS load through the API.
type focusImport struct {
	h       *handlers
	c       echo.Context
	p       auth.Principal
	params  IngestCostsParams
	replace string
	key     *finops.IdempotencyKey
	fp      hash.Hash
	raw     io.Reader // the body as sent, through the fingerprint
	counted *finops.CountingReader
}

func (f *focusImport) csv(rest io.Reader) error {
	return f.run(func() (finops.FOCUSSource, func(), error) {
		src, err := finops.NewCSVSource(rest)
		return src, func() {}, err
	})
}

func (f *focusImport) parquet() error {
	return f.run(func() (finops.FOCUSSource, func(), error) {
		return finops.SpoolParquet(f.counted, f.h.cfg.Import.SpoolDir, f.h.cfg.Import.MaxBytes)
	})
}

// run loads the dataset open returns. The route's allowance: a load may
// take import.timeout, so the request's read and write deadlines (and its
// context's) are moved to that.
func (f *focusImport) run(open func() (finops.FOCUSSource, func(), error)) error {
	deadline := time.Now().Add(f.h.cfg.Import.Timeout)
	rc := http.NewResponseController(f.c.Response())
	_ = rc.SetReadDeadline(deadline)  // not every ResponseWriter has deadlines (tests)
	_ = rc.SetWriteDeadline(deadline) // idem
	interrupted := false
	defer func() {
		if !interrupted { // the connection may serve the next request
			_ = rc.SetReadDeadline(time.Time{})
			_ = rc.SetWriteDeadline(time.Time{})
		}
	}()
	ctx, cancel := context.WithDeadline(f.c.Request().Context(), deadline)
	defer cancel()
	t := f.p.Tenant
	if f.key != nil {
		// The key was used already: this is a replay or a conflict, which
		// only the whole body tells. Read it, load nothing.
		held, err := f.h.finops.HasIdempotencyKey(ctx, t, f.key.Key)
		if err != nil {
			return err
		}
		if held {
			if _, err := io.Copy(io.Discard, f.counted); err != nil {
				return err
			}
			f.fingerprint()
			res, replayed, err := f.h.finops.ReplayIngest(ctx, t, f.key)
			if err != nil {
				return err
			}
			if replayed {
				return f.respond(res)
			}
			// Expired meanwhile: load it after all, from a body already
			// read. Rare enough to ask the client to send it again.
			return newProblem(http.StatusConflict, "the Idempotency-Key expired while this request was read; send it again")
		}
	}
	src, done, err := open()
	if err != nil {
		return err
	}
	defer done()
	opts := finops.ImportOptions{
		Replace:   f.replace,
		Key:       f.key,
		Record:    true,
		BytesRead: f.counted.N,
		Fingerprint: func() [32]byte {
			// Whatever follows the dataset belongs to the body too.
			_, _ = io.Copy(io.Discard, f.raw) // best effort: a read error fails the import anyway
			return f.fingerprint()
		},
		Interrupt: func() {
			// Wakes a read waiting on the client; the rest of the body is
			// not read, so the connection cannot serve another request.
			interrupted = true
			f.c.Response().Header().Set("Connection", "close")
			_ = rc.SetReadDeadline(time.Now())
		},
	}
	if f.params.ImportId != nil {
		if opts.ID = uuid.UUID(*f.params.ImportId); opts.ID == uuid.Nil {
			return finops.ErrBadImportID
		}
	}
	res, err := f.h.finops.ImportCosts(ctx, t, src, opts)
	if err != nil {
		return err
	}
	return f.respond(res)
}

func (f *focusImport) fingerprint() [32]byte {
	var sum [32]byte
	f.fp.Sum(sum[:0])
	if f.key != nil {
		f.key.Fingerprint = sum
	}
	return sum
}

func (f *focusImport) respond(res finops.Imported) error {
	if res.Replayed {
		f.c.Response().Header().Set(headerReplayed, "true")
	}
	out := IngestResult{Inserted: res.Inserted}
	location := "/v1/costs"
	if res.ID != uuid.Nil {
		id := openapi_types.UUID(res.ID)
		out.ImportId, out.Replaced, out.AccountsCreated = &id, &res.Replaced, &res.AccountsCreated
		location = "/v1/costs/imports/" + res.ID.String() // the load's record
	}
	f.c.Response().Header().Set(echo.HeaderLocation, location)
	return f.c.JSON(http.StatusCreated, out)
}

func costJSON(x finops.Cost) CostItem {
	out := CostItem{
		Id:                 x.ID,
		AccountId:          x.AccountID,
		Service:            x.Service,
		UsageDate:          openapi_types.Date{Time: x.UsageDate},
		Amount:             finops.FormatAmount(x.Amount),
		Currency:           x.Currency,
		CreatedAt:          x.CreatedAt,
		BillingAccountId:   x.BillingAccountID,
		BillingPeriodStart: utc(x.BillingPeriodStart),
		BillingPeriodEnd:   utc(x.BillingPeriodEnd),
		ChargePeriodStart:  utc(x.ChargePeriodStart),
		ChargePeriodEnd:    utc(x.ChargePeriodEnd),
		ChargeCategory:     x.ChargeCategory,
		ServiceCategory:    x.ServiceCategory,
		RegionId:           x.RegionID,
		EffectiveCost:      money(x.EffectiveCost),
		ListCost:           money(x.ListCost),
		ContractedCost:     money(x.ContractedCost),
	}
	if x.Tags != nil {
		tags := json.RawMessage(x.Tags)
		out.Tags = &tags
	}
	if x.Focus != nil {
		b, err := json.Marshal(x.Focus) // keys sorted; values JSON already
		if err == nil {
			focus := json.RawMessage(b)
			out.Focus = &focus
		}
	}
	return out
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func money(d *decimal.Decimal) *Money {
	if d == nil {
		return nil
	}
	s := finops.FormatAmount(*d)
	return &s
}

// costFilter turns the filter parameters every cost route shares into a
// finops.CostFilter.
func costFilter(account *AccountFilter, from *From, to *To, service, serviceCategory, provider, billingAccount,
	region, chargeCategory *string, tags *TagFilter) (finops.CostFilter, error) {
	var f finops.CostFilter
	if account != nil {
		f.AccountID = uuid.UUID(*account)
	}
	if from != nil {
		f.From = from.Time
	}
	if to != nil {
		f.To = to.Time
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	f.Service, f.ServiceCategory, f.BillingAccount = str(service), str(serviceCategory), str(billingAccount)
	f.Region, f.ChargeCategory = str(region), str(chargeCategory)
	if provider != nil {
		f.Provider = finops.NormalizeProvider(*provider)
	}
	if tags != nil {
		for _, s := range *tags {
			tf, err := finops.ParseTagFilter(s)
			if err != nil {
				return f, err
			}
			f.Tags = append(f.Tags, tf)
		}
	}
	return f, nil
}

// ListCosts lists the tenant's cost items by usage date, a page at a time.
func (h *handlers) ListCosts(c echo.Context, params ListCostsParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	page, err := pageOf(params.Limit, params.Cursor)
	if err != nil {
		return err
	}
	f, err := costFilter(params.AccountId, params.From, params.To, params.Service, params.ServiceCategory, params.Provider,
		params.BillingAccount, params.Region, params.ChargeCategory, params.Tag)
	if err != nil {
		return err
	}
	list, next, err := h.finops.Costs(c.Request().Context(), p.Tenant, f, page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, CostPage{Items: convert(list, costJSON), NextCursor: cursorJSON(next)})
}

// summaryQuery builds a summary's query from its parameters.
func summaryQuery(f finops.CostFilter, group *GroupBy, metric *string) finops.SummaryQuery {
	q := finops.SummaryQuery{Filter: f, GroupBy: finops.ByService, Metric: finops.BilledCost}
	if group != nil && *group != "" {
		q.GroupBy = finops.GroupBy(*group)
	}
	if metric != nil && *metric != "" {
		q.Metric = finops.Metric(*metric)
	}
	return q
}

// SummarizeCosts totals the tenant's costs by one dimension, per currency.
func (h *handlers) SummarizeCosts(c echo.Context, params SummarizeCostsParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	f, err := costFilter(params.AccountId, params.From, params.To, params.Service, params.ServiceCategory, params.Provider,
		params.BillingAccount, params.Region, params.ChargeCategory, params.Tag)
	if err != nil {
		return err
	}
	q := summaryQuery(f, params.GroupBy, (*string)(params.Metric))
	totals, err := h.finops.Summary(c.Request().Context(), p.Tenant, q)
	if err != nil {
		return err
	}
	group, metric := string(q.GroupBy), string(q.Metric)
	out := CostSummary{Items: make([]CostTotal, len(totals)), GroupBy: &group, Metric: &metric}
	for i, t := range totals {
		out.Items[i] = CostTotal{Key: t.Key, Amount: finops.FormatAmount(t.Amount), Currency: t.Currency}
	}
	return c.JSON(http.StatusOK, out)
}

func importJSON(i finops.ImportStatus) Import {
	out := Import{
		Id: i.ID, Status: ImportStatus(i.Status), Format: ImportFormat(i.Format),
		RowsDone: i.RowsDone, BytesDone: i.BytesDone,
		Inserted: i.Inserted, Replaced: i.Replaced, AccountsCreated: i.AccountsCreated, Error: i.Error,
		StartedAt: i.StartedAt.UTC(), UpdatedAt: i.UpdatedAt.UTC(), FinishedAt: utc(i.FinishedAt),
	}
	if i.Replace != nil {
		r := ImportReplace(*i.Replace)
		out.Replace = &r
	}
	return out
}

// ListImports lists the tenant's FOCUS loads, the latest first.
func (h *handlers) ListImports(c echo.Context, params ListImportsParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	page, err := pageOf(params.Limit, params.Cursor)
	if err != nil {
		return err
	}
	list, next, err := h.finops.Imports(c.Request().Context(), p.Tenant, page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ImportPage{Items: convert(list, importJSON), NextCursor: cursorJSON(next)})
}

// GetImport returns one FOCUS load of the tenant: its progress while it
// runs, its outcome after. Another tenant's is not found.
func (h *handlers) GetImport(c echo.Context, id ID) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	i, err := h.finops.Import(c.Request().Context(), p.Tenant, uuid.UUID(id))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, importJSON(i))
}
