package finops

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// ErrBadCursor is returned for a cursor the list did not produce.
var ErrBadCursor = errors.New("cursor: not a cursor this list returned")

// cursor is a keyset position: the sort key of the last item of a page,
// opaque to clients (base64url of a JSON array).
func encodeCursor(key ...string) string {
	b, _ := json.Marshal(key) // strings always marshal
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor returns the n-part key of c, or ErrBadCursor.
func decodeCursor(c string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	var key []string
	if err == nil {
		err = json.Unmarshal(b, &key)
	}
	if err != nil || len(key) != n {
		return nil, ErrBadCursor
	}
	return key, nil
}

// idPage returns one page of t's rows in id order, as query selects them
// given the tenant ($1), the id to start after ($2) and a limit ($3), and
// the cursor of the next page ("" on the last). It reads one row more than
// the page to know whether another page follows.
func idPage[T any](ctx context.Context, s *Service, t isolation.Tenant, p Page, query string,
	scan func(pgx.Row) (T, error), id func(T) uuid.UUID) ([]T, string, error) {
	after := uuid.Nil
	if p.Cursor != "" {
		key, err := decodeCursor(p.Cursor, 1)
		if err != nil {
			return nil, "", err
		}
		if after, err = uuid.Parse(key[0]); err != nil {
			return nil, "", ErrBadCursor
		}
	}
	limit := p.limit()
	var out []T
	err := s.read1(ctx, t, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, query, t.ID, after, limit+1)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = encodeCursor(id(out[limit-1]).String())
	}
	return out, next, nil
}
