-- Cost line items, budgets, and the idempotency keys of cost ingest. The
-- rules of 00001_accounts.sql hold: tenant_id leads every key, index and
-- (composite, DEFERRABLE) foreign key; RLS enabled, forced, NULLIF policy;
-- no grants here.
--
-- Money is numeric(20,6): exact, six decimals, below 10^14 in magnitude.
-- The application refuses anything it would have to round.

-- +goose Up
CREATE TABLE cost_items (
    tenant_id  uuid NOT NULL,
    -- UUIDv7: the keyset listing orders by (usage_date, id), and time-ordered
    -- ids keep a day's rows in insertion order.
    id         uuid NOT NULL,
    account_id uuid NOT NULL,
    service    text NOT NULL CHECK (length(service) BETWEEN 1 AND 200),
    usage_date date NOT NULL,
    amount     numeric(20, 6) NOT NULL,
    currency   text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cost_items_pkey PRIMARY KEY (tenant_id, id),
    -- DEFERRABLE: deleting a tenant removes its tables' rows in any order.
    CONSTRAINT cost_items_account_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES accounts (tenant_id, id) DEFERRABLE
);
-- Keyset listing and date-bounded summaries.
CREATE INDEX cost_items_date_idx ON cost_items (tenant_id, usage_date, id);
-- Listing one account, and the foreign-key check when an account is deleted.
CREATE INDEX cost_items_account_date_idx ON cost_items (tenant_id, account_id, usage_date, id);
ALTER TABLE cost_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE cost_items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON cost_items
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

CREATE TABLE budgets (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    amount     numeric(20, 6) NOT NULL CHECK (amount > 0),
    currency   text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    period     text NOT NULL CHECK (period IN ('monthly', 'quarterly', 'yearly')),
    -- Optional scope: NULL means every account, every service.
    account_id uuid,
    service    text CHECK (length(service) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT budgets_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT budgets_name_key UNIQUE (tenant_id, name),
    CONSTRAINT budgets_account_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES accounts (tenant_id, id) DEFERRABLE
);
CREATE INDEX budgets_account_idx ON budgets (tenant_id, account_id);
ALTER TABLE budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE budgets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budgets
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- An Idempotency-Key a tenant sent, the fingerprint of the request it came
-- with, and the result to replay. Written in the transaction of the work it
-- guards, so a key is recorded exactly when the work is.
CREATE TABLE idempotency_keys (
    tenant_id   uuid NOT NULL,
    key         text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    operation   text NOT NULL,
    fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32),
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant_id, key)
);
-- Expiry sweeps.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (tenant_id, created_at);
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE budgets;
DROP TABLE cost_items;
