-- Tenant tables are written once and applied by every strategy in its own
-- place (the shared public schema, a tenant's schema, a tenant's database).
-- Names are unqualified: the migrator's search_path picks the schema.
--
-- Every tenant table follows the same rules:
--   * tenant_id leads the primary key, every unique key, every foreign key
--     and every index, so no row can point at or probe another tenant's row;
--   * Row-Level Security is enabled AND forced (forced binds the owner too);
--   * the policy compares tenant_id with the transaction-local setting
--     app.tenant_id, NULLIF'd so that an unset or empty setting matches no
--     row and raises no cast error;
--   * no grants here: the strategy grants DML on tables with a tenant_id
--     column to its serving role after migrating.

-- +goose Up
CREATE TABLE accounts (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL,
    provider    text NOT NULL CHECK (provider IN ('aws', 'azure', 'gcp')),
    external_id text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 200),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT accounts_external_id_key UNIQUE (tenant_id, provider, external_id)
);
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON accounts
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- +goose Down
DROP TABLE accounts;
