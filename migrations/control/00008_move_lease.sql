-- The lease of a move's runner: exactly one process runs an open move.

-- +goose Up
-- A move can be run from the admin API of any server replica and from the
-- CLI (resume, --abort). The runner takes the lease before it does
-- anything (atomically with starting the move, or on its own before a
-- resume or an abort), renews it well within its expiry while it works, and
-- releases it at the end. Every step it records is conditional on still
-- holding it (the same UPDATE), so a runner that lost its lease cannot
-- record a step, switch the placement or finish the move. A crashed
-- runner's lease runs out, and the move can be resumed after it. A lease in
-- the table, not an advisory lock: it works through a transaction-mode
-- pooler, whose server connections no session can keep.
ALTER TABLE bulkhead.tenant_moves
    ADD COLUMN runner uuid,
    ADD COLUMN lease_until timestamptz,
    ADD CONSTRAINT tenant_moves_lease_check CHECK ((runner IS NULL) = (lease_until IS NULL));

-- +goose Down
ALTER TABLE bulkhead.tenant_moves
    DROP CONSTRAINT tenant_moves_lease_check,
    DROP COLUMN lease_until,
    DROP COLUMN runner;
