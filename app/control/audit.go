package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Audited actions.
const (
	ActionTenantCreate  = "tenant.create"
	ActionTenantSuspend = "tenant.suspend"
	ActionTenantResume  = "tenant.resume"
	ActionTenantDelete  = "tenant.delete"
	ActionKeyCreate     = "key.create"
	ActionKeyRevoke     = "key.revoke"
	ActionKeyRotate     = "key.rotate"
	ActionKeyGrant      = "key.grant"
	ActionKeyUngrant    = "key.ungrant"
)

// AuditEntry is one row of the audit log.
type AuditEntry struct {
	Seq      int64           `json:"seq"`
	At       time.Time       `json:"at"`
	Actor    string          `json:"actor"`
	Action   string          `json:"action"`
	Reason   string          `json:"reason,omitempty"`
	Tenants  []string        `json:"tenants"`
	Detail   json.RawMessage `json:"detail"`
	PrevHash []byte          `json:"prev_hash"`
	Hash     []byte          `json:"hash"`
}

// canonical is the encoding the hash covers: every field but the hashes,
// in a fixed order, times in UTC to the microsecond PostgreSQL keeps.
func (e AuditEntry) canonical() []byte {
	detail := e.Detail
	if len(detail) == 0 {
		detail = json.RawMessage(`{}`)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, detail); err != nil {
		compact.Reset()
		compact.Write(detail)
	}
	tenants := e.Tenants
	if tenants == nil {
		tenants = []string{}
	}
	b, _ := json.Marshal(struct {
		Seq     int64           `json:"seq"`
		At      string          `json:"at"`
		Actor   string          `json:"actor"`
		Action  string          `json:"action"`
		Reason  string          `json:"reason"`
		Tenants []string        `json:"tenants"`
		Detail  json.RawMessage `json:"detail"`
	}{e.Seq, e.At.UTC().Format("2006-01-02T15:04:05.000000Z"), e.Actor, e.Action, e.Reason, tenants, compact.Bytes()})
	return b
}

func chainHash(prev []byte, e AuditEntry) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(e.canonical())
	return h.Sum(nil)
}

// auditLock serialises appends so that seq is gapless and each row chains
// to the one before it. (LOCK TABLE would need UPDATE, which nobody has.)
const auditLock = `SELECT pg_advisory_xact_lock(hashtext('bulkhead audit log'))`

// Event is what happened, for the audit log.
type Event struct {
	Action  string
	Reason  string
	Tenants []string
	Detail  map[string]any
}

type actorKey struct{}

// WithActor returns ctx naming who acts, for the audit log ("admin-api",
// "cli:alice", …). Without one, the actor is the operating-system user.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

func actorOf(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	if u, err := user.Current(); err == nil {
		return "cli:" + u.Username
	}
	return "cli"
}

// appendAudit writes ev to the audit log within tx, chained to the last row.
// It needs the owner's INSERT; callers commit it with the change it records.
func appendAudit(ctx context.Context, tx pgx.Tx, ev Event) (AuditEntry, error) {
	if _, err := tx.Exec(ctx, auditLock); err != nil {
		return AuditEntry{}, fmt.Errorf("audit: %w", err)
	}
	e := AuditEntry{
		At:      time.Now().UTC().Truncate(time.Microsecond),
		Actor:   actorOf(ctx),
		Action:  ev.Action,
		Reason:  ev.Reason,
		Tenants: ev.Tenants,
	}
	if e.Tenants == nil {
		e.Tenants = []string{}
	}
	detail := ev.Detail
	if detail == nil {
		detail = map[string]any{}
	}
	var err error
	if e.Detail, err = json.Marshal(detail); err != nil {
		return AuditEntry{}, fmt.Errorf("audit: %w", err)
	}
	err = tx.QueryRow(ctx, `SELECT seq, hash FROM bulkhead.audit_log ORDER BY seq DESC LIMIT 1`).Scan(&e.Seq, &e.PrevHash)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		e.Seq, e.PrevHash = 0, make([]byte, sha256.Size)
	case err != nil:
		return AuditEntry{}, fmt.Errorf("audit: %w", err)
	}
	e.Seq++
	// jsonb normalises detail; hash what will be read back.
	if err := tx.QueryRow(ctx, `SELECT $1::jsonb::text`, string(e.Detail)).Scan(&e.Detail); err != nil {
		return AuditEntry{}, fmt.Errorf("audit: %w", err)
	}
	e.Hash = chainHash(e.PrevHash, e)
	if _, err := tx.Exec(ctx, `
		INSERT INTO bulkhead.audit_log (seq, at, actor, action, reason, tenants, detail, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		e.Seq, e.At, e.Actor, e.Action, e.Reason, e.Tenants, string(e.Detail), e.PrevHash, e.Hash); err != nil {
		return AuditEntry{}, fmt.Errorf("audit: %w", store.Translate(err))
	}
	return e, nil
}

// Audit commits ev to the audit log on its own, before the work it records
// runs: if the write fails, the caller must not run the work.
func (s *Service) Audit(ctx context.Context, ev Event) (AuditEntry, error) {
	db, err := s.writer()
	if err != nil {
		return AuditEntry{}, err
	}
	var e AuditEntry
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) (err error) {
		e, err = appendAudit(ctx, tx, ev)
		return err
	})
	return e, err
}

// AuditLog returns the audit log from seq after, oldest first, at most
// limit rows (0: all).
func (s *Service) AuditLog(ctx context.Context, after int64, limit int) ([]AuditEntry, error) {
	db, err := s.reader()
	if err != nil {
		return nil, err
	}
	q := `SELECT seq, at, actor, action, reason, tenants, detail::text, prev_hash, hash
	      FROM bulkhead.audit_log WHERE seq > $1 ORDER BY seq`
	args := []any{after}
	if limit > 0 {
		q += ` LIMIT $2`
		args = append(args, limit)
	}
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", store.Translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		var detail string
		err := r.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Reason, &e.Tenants, &detail, &e.PrevHash, &e.Hash)
		e.Detail = json.RawMessage(detail)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}

// AuditBreak is where the audit chain is broken.
type AuditBreak struct {
	Seq    int64  `json:"seq"`
	Reason string `json:"reason"`
}

func (b *AuditBreak) Error() string {
	return fmt.Sprintf("audit log broken at row %d: %s", b.Seq, b.Reason)
}

// VerifyAudit walks the whole audit log and returns the number of rows that
// chain correctly, and an *AuditBreak naming the first row that does not:
// a gap in seq, a prev_hash that is not the previous row's hash, or a hash
// that does not match the row's content.
func (s *Service) VerifyAudit(ctx context.Context) (int64, error) {
	const page = 1000
	prev := make([]byte, sha256.Size)
	var n, last int64
	for {
		rows, err := s.AuditLog(ctx, last, page)
		if err != nil {
			return n, err
		}
		for _, e := range rows {
			switch {
			case e.Seq != last+1:
				return n, &AuditBreak{Seq: last + 1, Reason: fmt.Sprintf("row missing: the next row is %d", e.Seq)}
			case !bytes.Equal(e.PrevHash, prev):
				return n, &AuditBreak{Seq: e.Seq, Reason: "prev_hash is not the previous row's hash"}
			case !bytes.Equal(chainHash(prev, e), e.Hash):
				return n, &AuditBreak{Seq: e.Seq, Reason: "the row's content does not match its hash"}
			}
			prev, last = e.Hash, e.Seq
			n++
		}
		if len(rows) < page {
			return n, nil
		}
	}
}

// tenantSlugs names tenants for the audit log.
func tenantSlugs(ts ...isolation.Tenant) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Slug
	}
	return out
}
