package finops

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// IdempotencyTTL is how long a tenant's idempotency key is remembered; after
// it, the key may be used for a new request.
const IdempotencyTTL = 24 * time.Hour

// Operations an idempotency key can guard; a key used for one cannot be
// replayed for another.
const opIngestCosts = "ingest-costs"

var (
	// ErrIdempotencyConflict is returned when an idempotency key comes back
	// with a request other than the one it was first used with.
	ErrIdempotencyConflict = errors.New("this Idempotency-Key was already used with a different request")
	// ErrIdempotencyInProgress is returned when an idempotency key is held
	// by a request still running: the client should retry once it ended.
	ErrIdempotencyInProgress = errors.New("a request with this Idempotency-Key is in progress; retry once it has finished")
	// ErrBadIdempotencyKey is returned for a key that is not 1-255
	// printable ASCII characters.
	ErrBadIdempotencyKey = errors.New("Idempotency-Key: must be 1-255 printable ASCII characters")
)

// IdempotencyKey is a client's idempotency key and the fingerprint of the
// request that carried it (a SHA-256 of whatever makes two requests the
// same, such as method, path, media type and body).
type IdempotencyKey struct {
	Key         string
	Fingerprint [32]byte
}

// validate accepts a nil key (none given).
func (k *IdempotencyKey) validate() error {
	if k == nil {
		return nil
	}
	if len(k.Key) < 1 || len(k.Key) > 255 {
		return ErrBadIdempotencyKey
	}
	for i := 0; i < len(k.Key); i++ {
		if c := k.Key[i]; c < 0x20 || c > 0x7e {
			return ErrBadIdempotencyKey
		}
	}
	return nil
}

// claimKey records key for op with result, in tx, unless t already holds it.
// When t holds it for the same op and fingerprint, it decodes the stored
// result into result and reports a replay; otherwise it returns
// ErrIdempotencyConflict. A key that a transaction still running holds is
// ErrIdempotencyInProgress at once: waiting for it would hold a pooled
// connection for as long as the other request runs, and a client repeating
// a long request would so tie up the tenant's connections. Expired keys
// are reclaimed, and swept.
func claimKey(ctx context.Context, tx pgx.Tx, t isolation.Tenant, key *IdempotencyKey, op string, result any) (replayed bool, err error) {
	stored, err := json.Marshal(result)
	if err != nil {
		return false, fmt.Errorf("encode result for idempotency key: %w", err)
	}
	// Whoever claims a key first takes a transaction-level advisory lock
	// on it, so a second claim learns at once, without waiting, that the
	// key is taken by work still running; once that work commits or rolls
	// back, the lock is free and its row (or its absence) is visible. The
	// lock id is derived here, from the tenant and the key: nothing is
	// computed by the database in the statement.
	var locked bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, keyLock(t, key.Key)).Scan(&locked); err != nil {
		return false, err
	}
	if !locked {
		return false, ErrIdempotencyInProgress
	}
	// Times are parameters, not now(): a distributed engine (Citus)
	// refuses non-immutable functions in ON CONFLICT … DO UPDATE.
	now := time.Now().UTC()
	expired := now.Add(-IdempotencyTTL)
	var claimed bool
	err = tx.QueryRow(ctx, `
		INSERT INTO idempotency_keys (tenant_id, key, operation, fingerprint, result, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (tenant_id, key) DO UPDATE
			SET operation = EXCLUDED.operation, fingerprint = EXCLUDED.fingerprint,
			    result = EXCLUDED.result, created_at = EXCLUDED.created_at
			WHERE idempotency_keys.created_at < $7
		RETURNING true`,
		t.ID, key.Key, op, key.Fingerprint[:], stored, now, expired).Scan(&claimed)
	switch {
	case err == nil:
		_, err = tx.Exec(ctx, `DELETE FROM idempotency_keys WHERE tenant_id = $1 AND created_at < $2`, t.ID, expired)
		return false, err
	case !errors.Is(err, pgx.ErrNoRows):
		return false, err
	}
	// A live key of this tenant: the same request again, or a conflict.
	var (
		prevOp string
		prevFP []byte
		prev   []byte
	)
	if err := tx.QueryRow(ctx, `
		SELECT operation, fingerprint, result FROM idempotency_keys
		WHERE tenant_id = $1 AND key = $2`, t.ID, key.Key).Scan(&prevOp, &prevFP, &prev); err != nil {
		return false, err
	}
	if prevOp != op || !bytes.Equal(prevFP, key.Fingerprint[:]) {
		return false, ErrIdempotencyConflict
	}
	if err := json.Unmarshal(prev, result); err != nil {
		return false, fmt.Errorf("decode stored result of idempotency key: %w", err)
	}
	return true, nil
}

// keyLock is the advisory lock id of tenant t's idempotency key: 64 bits
// of SHA-256 over a namespace, the tenant and the key. Tenants share a
// database's advisory locks under rls and schema; a collision between two
// tenants' keys (odds 2^-64 per pair held at once) would only make one
// request answer 409 and be retried.
func keyLock(t isolation.Tenant, key string) int64 {
	h := sha256.New()
	h.Write([]byte("bulkhead idempotency key\x00"))
	h.Write(t.ID[:])
	h.Write([]byte(key))
	return int64(binary.BigEndian.Uint64(h.Sum(nil)))
}
