-- Strategy names: the isolation column no longer lists them.

-- +goose Up
-- The strategies are the build's (app.Strategies): a new one is its
-- package and one registration line, and the control plane need not be
-- migrated for it. What a name may look like is still checked; whether a
-- build has the strategy is the registry's question (an unknown one is an
-- error wherever a tenant of it is served, set up or migrated).
ALTER TABLE bulkhead.tenants DROP CONSTRAINT tenants_isolation_check;
ALTER TABLE bulkhead.tenants ADD CONSTRAINT tenants_isolation_check CHECK (isolation ~ '^[a-z][a-z0-9_]{0,62}$');

-- +goose Down
ALTER TABLE bulkhead.tenants DROP CONSTRAINT tenants_isolation_check;
ALTER TABLE bulkhead.tenants ADD CONSTRAINT tenants_isolation_check CHECK (isolation IN ('rls', 'schema', 'database'));
