-- FOCUS billing data and exact money. The rules of 00001_accounts.sql hold:
-- tenant_id leads every key and index; RLS enabled, forced, NULLIF policy;
-- no grants here.
--
-- Safe on a live deployment and across 1,000 tenant schemas or databases:
--   * money becomes unconstrained numeric: numeric(20,6) -> numeric is
--     binary-coercible, so PostgreSQL rewrites no table and no index, and
--     every stored amount keeps its value and its six decimals;
--   * the FOCUS columns are nullable and without defaults: adding them
--     rewrites nothing, existing rows read them as NULL;
--   * each step that locks a table is its own short transaction with a
--     lock timeout, so a migration waiting behind a long import fails (and
--     is retried by the next `bulkhead migrate`) instead of queueing every
--     request behind it;
--   * indexes are built CONCURRENTLY, so the shared tables of the rls
--     strategy keep taking writes while they are built;
--   * every statement can run again after a failure half-way (goose records
--     the version only at the end): IF NOT EXISTS, and an index left
--     invalid by an interrupted concurrent build is dropped first.

-- +goose NO TRANSACTION
-- +goose Up

-- +goose StatementBegin
DO $$
BEGIN
    SET LOCAL lock_timeout = '10s';
    ALTER TABLE cost_items
        ALTER COLUMN amount TYPE numeric,
        -- The FOCUS columns summaries group and filter by, typed; every
        -- other column of the export (FOCUS, x_ custom, unknown) is kept
        -- in focus, under its own name.
        ADD COLUMN IF NOT EXISTS billing_account_id   text,
        ADD COLUMN IF NOT EXISTS billing_period_start timestamptz,
        ADD COLUMN IF NOT EXISTS billing_period_end   timestamptz,
        ADD COLUMN IF NOT EXISTS charge_period_start  timestamptz,
        ADD COLUMN IF NOT EXISTS charge_period_end    timestamptz,
        ADD COLUMN IF NOT EXISTS charge_category      text,
        ADD COLUMN IF NOT EXISTS service_category     text,
        ADD COLUMN IF NOT EXISTS region_id            text,
        ADD COLUMN IF NOT EXISTS effective_cost       numeric,
        ADD COLUMN IF NOT EXISTS list_cost            numeric,
        ADD COLUMN IF NOT EXISTS contracted_cost      numeric,
        ADD COLUMN IF NOT EXISTS tags                 jsonb,
        ADD COLUMN IF NOT EXISTS focus                jsonb;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
BEGIN
    SET LOCAL lock_timeout = '10s';
    ALTER TABLE budgets
        ALTER COLUMN amount TYPE numeric,
        -- Optional scopes beside account and service.
        ADD COLUMN IF NOT EXISTS provider  text,
        ADD COLUMN IF NOT EXISTS tag_key   text,
        ADD COLUMN IF NOT EXISTS tag_value text;
    -- FOCUS providers are not only aws, azure and gcp (Oracle, SaaS
    -- vendors): accounts derived from an export keep theirs, lower-cased.
    -- accounts is small: checking the new constraint is quick.
    ALTER TABLE accounts DROP CONSTRAINT IF EXISTS accounts_provider_check;
    ALTER TABLE accounts ADD CONSTRAINT accounts_provider_check
        CHECK (length(provider) BETWEEN 1 AND 100);
END $$;
-- +goose StatementEnd

-- Long imports: who is loading what, and how far it got, readable by any
-- serving replica. Progress is written in short transactions of its own;
-- the outcome of an import that commits is written in its own transaction.
-- +goose StatementBegin
DO $$
BEGIN
    SET LOCAL lock_timeout = '10s';
    CREATE TABLE IF NOT EXISTS cost_imports (
        tenant_id        uuid NOT NULL,
        id               uuid NOT NULL,
        status           text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
        format           text NOT NULL CHECK (format IN ('csv', 'parquet')),
        replace          text CHECK (replace IN ('billing_period')),
        rows_done        bigint NOT NULL DEFAULT 0,
        bytes_done       bigint NOT NULL DEFAULT 0,
        inserted         bigint,
        replaced         bigint,
        accounts_created bigint,
        error            text CHECK (length(error) <= 4000),
        started_at       timestamptz NOT NULL,
        updated_at       timestamptz NOT NULL,
        finished_at      timestamptz,
        CONSTRAINT cost_imports_pkey PRIMARY KEY (tenant_id, id)
    );
    ALTER TABLE cost_imports ENABLE ROW LEVEL SECURITY;
    ALTER TABLE cost_imports FORCE ROW LEVEL SECURITY;
    DROP POLICY IF EXISTS tenant_isolation ON cost_imports;
    CREATE POLICY tenant_isolation ON cost_imports
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
    -- Indexes left invalid by an interrupted CREATE INDEX CONCURRENTLY
    -- below: IF NOT EXISTS would keep them as they are.
    IF EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relnamespace = current_schema()::regnamespace AND NOT i.indisvalid
                 AND c.relname = 'cost_items_billing_period_idx') THEN
        DROP INDEX cost_items_billing_period_idx;
    END IF;
    IF EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relnamespace = current_schema()::regnamespace AND NOT i.indisvalid
                 AND c.relname = 'cost_items_service_date_idx') THEN
        DROP INDEX cost_items_service_date_idx;
    END IF;
    IF EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relnamespace = current_schema()::regnamespace AND NOT i.indisvalid
                 AND c.relname = 'cost_imports_started_idx') THEN
        DROP INDEX cost_imports_started_idx;
    END IF;
END $$;
-- +goose StatementEnd

-- Restatements: the rows of one billing account and billing period, found
-- without reading the tenant's other periods. Rows without a billing
-- account (the five-column API's) are never replaced: not indexed.
CREATE INDEX CONCURRENTLY IF NOT EXISTS cost_items_billing_period_idx
    ON cost_items (tenant_id, billing_account_id, billing_period_start)
    WHERE billing_account_id IS NOT NULL;

-- Filters by service (summaries, budgets scoped to a service) over a range
-- of days.
CREATE INDEX CONCURRENTLY IF NOT EXISTS cost_items_service_date_idx
    ON cost_items (tenant_id, service, usage_date);

-- Listing a tenant's recent imports.
CREATE INDEX CONCURRENTLY IF NOT EXISTS cost_imports_started_idx
    ON cost_imports (tenant_id, started_at);

-- +goose Down
-- Amounts stay unconstrained numeric: narrowing them back to six decimals
-- would round, and nothing is ever rounded.
DROP INDEX IF EXISTS cost_imports_started_idx;
DROP INDEX IF EXISTS cost_items_service_date_idx;
DROP INDEX IF EXISTS cost_items_billing_period_idx;
DROP TABLE IF EXISTS cost_imports;
-- +goose StatementBegin
DO $$
BEGIN
    SET LOCAL lock_timeout = '10s';
    ALTER TABLE budgets
        DROP COLUMN IF EXISTS provider,
        DROP COLUMN IF EXISTS tag_key,
        DROP COLUMN IF EXISTS tag_value;
    ALTER TABLE cost_items
        DROP COLUMN IF EXISTS billing_account_id,
        DROP COLUMN IF EXISTS billing_period_start,
        DROP COLUMN IF EXISTS billing_period_end,
        DROP COLUMN IF EXISTS charge_period_start,
        DROP COLUMN IF EXISTS charge_period_end,
        DROP COLUMN IF EXISTS charge_category,
        DROP COLUMN IF EXISTS service_category,
        DROP COLUMN IF EXISTS region_id,
        DROP COLUMN IF EXISTS effective_cost,
        DROP COLUMN IF EXISTS list_cost,
        DROP COLUMN IF EXISTS contracted_cost,
        DROP COLUMN IF EXISTS tags,
        DROP COLUMN IF EXISTS focus;
END $$;
-- +goose StatementEnd
