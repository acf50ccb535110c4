package postgres

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Pooling is what DetectPooler saw.
type Pooling struct {
	// Pooled is true when one client connection's statements ran on more
	// than one server session, or two client connections shared one:
	// transaction (or statement) pooling, as PgBouncer's pool_mode =
	// transaction does. A direct connection, or a session-mode pooler,
	// never does either.
	Pooled bool
	// Evidence says what was seen, for logs and errors.
	Evidence string
}

// probeRounds bounds the probe. With PgBouncer's default LIFO reuse the
// first round already tells; more rounds cover server_round_robin.
const probeRounds = 8

// DetectPooler finds out whether cfg reaches PostgreSQL through a
// transaction-mode pooler. It opens two connections of its own, outside any
// pool, and alternates autocommit statements reading pg_backend_pid() on
// them: without a pooler each connection is one server session for its
// life, so a connection whose backend changes, or two connections that
// share one, can only mean a pooler hands out server sessions per
// transaction. This is positive evidence only — nothing in the wire
// protocol or in `SHOW` through a pooler names it — so Pooled false means
// "behaves like a direct connection". The probe uses the simple protocol,
// so that it works whatever the exec mode, and leaves no state behind. It
// takes a few round trips; errors are those of connecting or querying.
func DetectPooler(ctx context.Context, cfg *pgx.ConnConfig) (Pooling, error) {
	cfg = cfg.Copy()
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	var conns [2]*pgx.Conn
	for i := range conns {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return Pooling{}, fmt.Errorf("probe for a pooler: %w", err)
		}
		defer c.Close(context.Background())
		conns[i] = c
	}
	var seen [2][]uint32
	for round := range probeRounds {
		for i, c := range conns {
			var pid uint32
			if err := c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				return Pooling{}, fmt.Errorf("probe for a pooler: %w", err)
			}
			if !slices.Contains(seen[i], pid) {
				seen[i] = append(seen[i], pid)
			}
			switch other := seen[1-i]; {
			case len(seen[i]) > 1:
				return Pooling{true, fmt.Sprintf("one client connection ran on server sessions %v within %d statements", seen[i], 2*round+i+1)}, nil
			case slices.Contains(other, pid):
				return Pooling{true, fmt.Sprintf("two client connections ran on the same server session %d", pid)}, nil
			}
		}
	}
	return Pooling{false, fmt.Sprintf("each client connection kept its server session (%d, %d) for %d statements", seen[0][0], seen[1][0], probeRounds)}, nil
}
