-- Live moves of a tenant between strategies or servers (bulkhead tenant move).

-- +goose Up
-- One row per move, kept after it ends. The step is what has been done, so
-- that a mover killed at any point can be resumed (or rolled back) from it:
-- started, provisioned, copied, switched, done; or rolled_back.
CREATE TABLE bulkhead.tenant_moves (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES bulkhead.tenants (id) ON DELETE CASCADE,
    from_isolation  text NOT NULL,
    from_server     text NOT NULL DEFAULT '',
    from_placement  text NOT NULL DEFAULT '',
    to_isolation    text NOT NULL,
    to_server       text NOT NULL DEFAULT '',
    to_placement    text NOT NULL DEFAULT '',
    step            text NOT NULL,
    rows_copied     bigint NOT NULL DEFAULT 0,
    pause_ms        bigint,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    error           text NOT NULL DEFAULT '',
    CHECK (step IN ('started', 'provisioned', 'copied', 'switched', 'done', 'rolled_back'))
);
-- At most one unfinished move per tenant.
CREATE UNIQUE INDEX tenant_moves_open ON bulkhead.tenant_moves (tenant_id) WHERE finished_at IS NULL;

-- +goose Down
DROP TABLE bulkhead.tenant_moves;
