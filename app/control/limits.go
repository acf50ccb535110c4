package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/limits"
	"github.com/bulkheadhq/bulkhead/app/store"
)

// ActionTenantLimits is the audited action of setting a tenant's limits.
const ActionTenantLimits = "tenant.limits"

// Limits are a tenant's overrides of the configured limits; a nil field
// keeps the configured default (limits.concurrency.per_tenant,
// limits.rate.rate, limits.rate.burst).
type Limits struct {
	MaxConcurrent *int     `json:"max_concurrent"`
	Rate          *float64 `json:"rate"`
	Burst         *int     `json:"burst"`
}

// TenantLimits are a tenant's overrides and the limits in force for it.
type TenantLimits struct {
	Tenant    string `json:"tenant"`
	Overrides Limits `json:"overrides"`
	// Effective are the limits the tenant gets: its overrides, or the
	// configured defaults of the process that answers.
	Effective EffectiveLimits `json:"effective"`
}

// EffectiveLimits are the limits a tenant gets.
type EffectiveLimits struct {
	MaxConcurrent int     `json:"max_concurrent"`
	Rate          float64 `json:"rate"`
	Burst         int     `json:"burst"`
}

// Bounds of the overrides, as the table's CHECK constraints have them.
const (
	maxConcurrentLimit = 10000
	maxRateLimit       = 1_000_000
	maxBurstLimit      = 1_000_000
)

func (l Limits) validate() error {
	var errs []error
	if v := l.MaxConcurrent; v != nil && (*v < 1 || *v > maxConcurrentLimit) {
		errs = append(errs, &store.ValidationError{Field: "max_concurrent", Msg: fmt.Sprintf("must be from 1 to %d, or null for the default", maxConcurrentLimit)})
	}
	if v := l.Rate; v != nil && !(*v > 0 && *v <= maxRateLimit) {
		errs = append(errs, &store.ValidationError{Field: "rate", Msg: fmt.Sprintf("must be a number of requests per second above 0 and at most %d, or null for the default", maxRateLimit)})
	}
	if v := l.Burst; v != nil && (*v < 1 || *v > maxBurstLimit) {
		errs = append(errs, &store.ValidationError{Field: "burst", Msg: fmt.Sprintf("must be from 1 to %d, or null for the default", maxBurstLimit)})
	}
	return errors.Join(errs...)
}

func (s *Service) effective(l Limits) EffectiveLimits {
	c := s.cfg.Limits
	e := EffectiveLimits{MaxConcurrent: c.Concurrency.PerTenant, Rate: c.Rate.Rate, Burst: c.Rate.Burst}
	if l.MaxConcurrent != nil {
		e.MaxConcurrent = *l.MaxConcurrent
	}
	if l.Rate != nil {
		e.Rate = *l.Rate
	}
	if l.Burst != nil {
		e.Burst = *l.Burst
	}
	return e
}

// TenantLimits returns the overrides of the tenant called slug, or
// store.ErrNotFound.
func (s *Service) TenantLimits(ctx context.Context, slug string) (TenantLimits, error) {
	db, err := s.reader()
	if err != nil {
		return TenantLimits{}, err
	}
	if !ValidSlug(slug) {
		return TenantLimits{}, store.ErrNotFound
	}
	var l Limits
	err = db.QueryRow(ctx, `
		SELECT l.max_concurrent, l.rate, l.burst
		FROM bulkhead.tenants t LEFT JOIN bulkhead.tenant_limits l ON l.tenant_id = t.id
		WHERE t.slug = $1`, slug).Scan(&l.MaxConcurrent, &l.Rate, &l.Burst)
	if err != nil {
		return TenantLimits{}, fmt.Errorf("limits of %s: %w", slug, store.Translate(err))
	}
	return TenantLimits{Tenant: slug, Overrides: l, Effective: s.effective(l)}, nil
}

// SetTenantLimits replaces the overrides of the tenant called slug with l
// (all nil: the defaults again) and writes the change to the audit log.
// Servers apply it within a second, this process at once: the overrides
// are read, and cached, with the key (see Authenticate).
func (s *Service) SetTenantLimits(ctx context.Context, slug string, l Limits) (TenantLimits, error) {
	if err := l.validate(); err != nil {
		return TenantLimits{}, err
	}
	db, err := s.writer()
	if err != nil {
		return TenantLimits{}, err
	}
	if !ValidSlug(slug) {
		return TenantLimits{}, store.ErrNotFound
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var id uuid.UUID
		if err := tx.QueryRow(ctx, `SELECT id FROM bulkhead.tenants WHERE slug = $1`, slug).Scan(&id); err != nil {
			return store.Translate(err)
		}
		var err error
		if l == (Limits{}) {
			_, err = tx.Exec(ctx, `DELETE FROM bulkhead.tenant_limits WHERE tenant_id = $1`, id)
		} else {
			_, err = tx.Exec(ctx, `
				INSERT INTO bulkhead.tenant_limits (tenant_id, max_concurrent, rate, burst, updated_at)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (tenant_id) DO UPDATE SET max_concurrent = EXCLUDED.max_concurrent,
					rate = EXCLUDED.rate, burst = EXCLUDED.burst, updated_at = EXCLUDED.updated_at`,
				id, l.MaxConcurrent, l.Rate, l.Burst, time.Now())
		}
		if err != nil {
			return store.Translate(err)
		}
		_, err = appendAudit(ctx, tx, Event{Action: ActionTenantLimits, Tenants: []string{slug},
			Detail: map[string]any{"max_concurrent": l.MaxConcurrent, "rate": l.Rate, "burst": l.Burst}})
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return TenantLimits{}, err
		}
		return TenantLimits{}, fmt.Errorf("set limits of %s: %w", slug, err)
	}
	s.keys.invalidate()
	s.log.Info("tenant limits set", "tenant", slug, "max_concurrent", l.MaxConcurrent, "rate", l.Rate, "burst", l.Burst)
	return TenantLimits{Tenant: slug, Overrides: l, Effective: s.effective(l)}, nil
}

// replica names this process in the usage it records: the host name and a
// random suffix, so that two processes never add to each other's rows.
// Made on first use: only serving processes record usage.
var replica = sync.OnceValue(func() string {
	host, _ := os.Hostname()
	if len(host) > 60 {
		host = host[:60]
	}
	if host == "" {
		host = "bulkhead"
	}
	b := make([]byte, 4)
	rand.Read(b) // never returns an error
	return host + "-" + hex.EncodeToString(b)
})

// RecordUsage adds usage to this process's row of each tenant for minute,
// and drops rows past limits.stats.retention. It writes through
// bulkhead.record_tenant_usage, the one write the serving role may make to
// the control plane; it implements limits.Sink.
func (s *Service) RecordUsage(ctx context.Context, minute time.Time, usage map[uuid.UUID]limits.Counters) error {
	db := s.app
	if db == nil {
		db = s.owner
	}
	if db == nil {
		return errors.New("record usage: no database configured")
	}
	n := len(usage)
	ids := make([]uuid.UUID, 0, n)
	for id := range usage {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	req, rej, waits, waitUS, dbUS := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, id := range ids {
		c := usage[id]
		req[i], rej[i], waits[i] = c.Requests, c.Rejections, c.Waits
		waitUS[i], dbUS[i] = c.WaitTime.Microseconds(), c.DBTime.Microseconds()
	}
	_, err := db.Exec(ctx, `SELECT bulkhead.record_tenant_usage($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		minute, replica(), s.cfg.Limits.Stats.Retention, ids, req, rej, waits, waitUS, dbUS)
	if err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	return nil
}

// Orders of TenantStats.
var statsOrders = map[string]string{
	"requests":   "requests",
	"db_time":    "db_us",
	"waits":      "waits",
	"rejections": "rejections",
}

// StatsOrders lists the orders TenantStats accepts.
func StatsOrders() []string { return []string{"requests", "db_time", "waits", "rejections"} }

// Bounds of a TenantStats query.
const (
	MaxStatsLimit = 100
)

// TenantStat is one tenant's use of the servers over a window.
type TenantStat struct {
	TenantID uuid.UUID `json:"tenant_id"`
	// Tenant is the slug; "(others)" adds up the tenants no server
	// counted one by one; empty for a tenant deleted since.
	Tenant      string  `json:"tenant"`
	Requests    int64   `json:"requests"`
	DBSeconds   float64 `json:"db_seconds"`
	Waits       int64   `json:"waits"`
	WaitSeconds float64 `json:"wait_seconds"`
	Rejections  int64   `json:"rejections"`
}

// TenantStats is the top tenants over the last minutes.
type TenantStats struct {
	Minutes int          `json:"minutes"`
	Since   time.Time    `json:"since"`
	By      string       `json:"by"`
	Items   []TenantStat `json:"items"`
}

// OthersSlug is how TenantStats names the tenants added up together.
const OthersSlug = "(others)"

// TenantStats returns the limit tenants with the most of by (one of
// StatsOrders) over the last minutes, as every server process recorded
// them, added up over processes. A bad argument is a
// *store.ValidationError.
func (s *Service) TenantStats(ctx context.Context, minutes int, by string, limit int) (TenantStats, error) {
	col, ok := statsOrders[by]
	retention := int(s.cfg.Limits.Stats.Retention / time.Minute)
	switch {
	case !ok:
		return TenantStats{}, &store.ValidationError{Field: "by", Msg: fmt.Sprintf("must be one of %v", StatsOrders())}
	case minutes < 1 || minutes > max(retention, 1):
		return TenantStats{}, &store.ValidationError{Field: "minutes", Msg: fmt.Sprintf("must be from 1 to %d (limits.stats.retention)", max(retention, 1))}
	case limit < 1 || limit > MaxStatsLimit:
		return TenantStats{}, &store.ValidationError{Field: "limit", Msg: fmt.Sprintf("must be from 1 to %d", MaxStatsLimit)}
	}
	db, err := s.reader()
	if err != nil {
		return TenantStats{}, err
	}
	// The current minute counts from its start: the window is the last
	// minutes whole minutes.
	since := time.Now().UTC().Truncate(time.Minute).Add(-time.Duration(minutes-1) * time.Minute)
	rows, err := db.Query(ctx, `
		SELECT u.tenant_id, COALESCE(t.slug, ''), sum(u.requests)::bigint, sum(u.db_us)::bigint,
		       sum(u.waits)::bigint, sum(u.wait_us)::bigint, sum(u.rejections)::bigint
		FROM bulkhead.tenant_usage u LEFT JOIN bulkhead.tenants t ON t.id = u.tenant_id
		WHERE u.minute >= $1
		GROUP BY u.tenant_id, t.slug
		ORDER BY sum(u.`+col+`) DESC, u.tenant_id
		LIMIT $2`, since, limit)
	if err != nil {
		return TenantStats{}, fmt.Errorf("tenant stats: %w", store.Translate(err))
	}
	out := TenantStats{Minutes: minutes, Since: since, By: by, Items: []TenantStat{}}
	var (
		st          TenantStat
		dbUS, waitU int64
	)
	_, err = pgx.ForEachRow(rows, []any{&st.TenantID, &st.Tenant, &st.Requests, &dbUS, &st.Waits, &waitU, &st.Rejections}, func() error {
		st.DBSeconds, st.WaitSeconds = float64(dbUS)/1e6, float64(waitU)/1e6
		if st.TenantID == limits.Others {
			st.Tenant = OthersSlug
		}
		out.Items = append(out.Items, st)
		return nil
	})
	if err != nil {
		return TenantStats{}, fmt.Errorf("tenant stats: %w", store.Translate(err))
	}
	return out, nil
}
