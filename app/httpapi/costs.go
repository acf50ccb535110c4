package httpapi

import (
	"crypto/sha256"
	"io"
	"mime"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	openapi_types "github.com/oapi-codegen/runtime/types"

	"github.com/bulkheadhq/bulkhead/app/finops"
)

// mimeCSV is the media type of CSV cost uploads.
const mimeCSV = "text/csv"

// headerReplayed marks a response replayed for an Idempotency-Key.
const headerReplayed = "Idempotent-Replayed"

// IngestCosts writes a JSON array or a CSV file of cost items, all or
// nothing, replaying the first response for a repeated Idempotency-Key.
func (h *handlers) IngestCosts(c echo.Context, params IngestCostsParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	if err := requireContentType(c, echo.MIMEApplicationJSON, mimeCSV); err != nil {
		return err
	}
	mediaType, _, _ := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType)) // checked above
	var key *finops.IdempotencyKey
	if params.IdempotencyKey != nil {
		key = &finops.IdempotencyKey{Key: *params.IdempotencyKey}
	}
	// The fingerprint covers the route, the media type and every byte of
	// the body: both readers read to the end or fail.
	fp := sha256.New()
	io.WriteString(fp, "POST /v1/costs\n"+mediaType+"\n")
	body := io.TeeReader(c.Request().Body, fp)
	var items []finops.CostInput
	if mediaType == mimeCSV {
		items, err = finops.ReadCostsCSV(body)
	} else {
		items, err = finops.ReadCostsJSON(body)
	}
	if err != nil {
		return err
	}
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
	return c.JSON(http.StatusCreated, IngestResult{Inserted: res.Inserted})
}

func costJSON(x finops.Cost) CostItem {
	return CostItem{
		Id:        x.ID,
		AccountId: x.AccountID,
		Service:   x.Service,
		UsageDate: openapi_types.Date{Time: x.UsageDate},
		Amount:    finops.FormatAmount(x.Amount),
		Currency:  x.Currency,
		CreatedAt: x.CreatedAt,
	}
}

// costFilter turns the common filter parameters into a finops.CostFilter.
func costFilter(account *AccountFilter, from *From, to *To) finops.CostFilter {
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
	return f
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
	list, next, err := h.finops.Costs(c.Request().Context(), p.Tenant, costFilter(params.AccountId, params.From, params.To), page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, CostPage{Items: convert(list, costJSON), NextCursor: cursorJSON(next)})
}

// SummarizeCosts totals the tenant's costs by service, account or day, per
// currency.
func (h *handlers) SummarizeCosts(c echo.Context, params SummarizeCostsParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	g := finops.ByService
	if params.GroupBy != nil {
		g = finops.GroupBy(*params.GroupBy)
	}
	totals, err := h.finops.Summary(c.Request().Context(), p.Tenant, costFilter(params.AccountId, params.From, params.To), g)
	if err != nil {
		return err
	}
	out := CostSummary{Items: make([]CostTotal, len(totals))}
	for i, t := range totals {
		out.Items[i] = CostTotal{Key: t.Key, Amount: finops.FormatAmount(t.Amount), Currency: t.Currency}
	}
	return c.JSON(http.StatusOK, out)
}
