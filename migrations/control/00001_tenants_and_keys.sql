-- The control plane: who the tenants are, where their data lives, and the
-- API keys that speak for them. It lives in the bulkhead schema, which the
-- migrator creates before goose records its first version there.

-- +goose Up
CREATE TABLE bulkhead.tenants (
    id            uuid PRIMARY KEY,
    slug          text NOT NULL CONSTRAINT tenants_slug_key UNIQUE
                  CONSTRAINT tenants_slug_check CHECK (slug ~ '^[a-z][a-z0-9-]{2,62}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The strategy and placement are recorded per tenant so that tenants on
    -- different strategies can live side by side and be moved later.
    isolation     text NOT NULL CHECK (isolation IN ('rls', 'schema', 'database')),
    server        text NOT NULL DEFAULT '',
    placement     text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'provisioning'
                  CHECK (status IN ('provisioning', 'active', 'suspended', 'deleting')),
    version       bigint NOT NULL DEFAULT 0,
    migrate_error text NOT NULL DEFAULT '',
    migrated_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bulkhead.api_keys (
    -- id is the key's public part; the secret is stored only as its SHA-256.
    id          text PRIMARY KEY CHECK (id ~ '^[a-z2-7]{16}$'),
    tenant_id   uuid NOT NULL REFERENCES bulkhead.tenants (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('viewer', 'editor')),
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant_id_idx ON bulkhead.api_keys (tenant_id);

-- The serving role reads the control plane to authenticate; every write goes
-- through the owner.
GRANT USAGE ON SCHEMA bulkhead TO bulkhead_app;
GRANT SELECT ON bulkhead.tenants, bulkhead.api_keys TO bulkhead_app;

-- +goose Down
DROP TABLE bulkhead.api_keys;
DROP TABLE bulkhead.tenants;
