-- The authentication generation: a counter that every change deciding
-- whether a key works, or what it resolves to, moves forward in the same
-- transaction. Serving processes cache authenticated keys and read this one
-- row a couple of times a second: a cached key is trusted only while the
-- generation it was read with is still the current one (or for at most a
-- second after it was read), so a revocation, a suspension, a deletion or
-- a rotation's end reaches every process within a second without a query
-- per request. A poll rather than LISTEN/NOTIFY: a transaction-mode pooler
-- (database.pooler: pgbouncer) cannot keep a session listening.

-- +goose Up
CREATE TABLE bulkhead.auth_generation (
    -- One row: the CHECK and the primary key keep it that way.
    id  boolean PRIMARY KEY DEFAULT true CHECK (id),
    gen bigint NOT NULL DEFAULT 0
);
INSERT INTO bulkhead.auth_generation DEFAULT VALUES;
GRANT SELECT ON bulkhead.auth_generation TO bulkhead_app;

-- A trigger, not the Go code, moves it: every writer (the admin API, the
-- CLI in another process, an operator's own SQL) is covered, and the
-- increment commits or rolls back with the change itself. Row-level with a
-- WHEN, so that only a real change of what authentication reads counts:
-- not last_used_at, which the serving role writes once a minute per key,
-- nor a tenant's migration bookkeeping, nor a statement that matched no
-- row.
-- +goose StatementBegin
CREATE FUNCTION bulkhead.bump_auth_generation() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE bulkhead.auth_generation SET gen = gen + 1;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION bulkhead.bump_auth_generation() FROM PUBLIC;

CREATE TRIGGER api_keys_auth_generation
    AFTER UPDATE ON bulkhead.api_keys FOR EACH ROW
    WHEN ((OLD.tenant_id, OLD.role, OLD.secret_hash, OLD.revoked_at, OLD.expires_at)
          IS DISTINCT FROM (NEW.tenant_id, NEW.role, NEW.secret_hash, NEW.revoked_at, NEW.expires_at))
    EXECUTE FUNCTION bulkhead.bump_auth_generation();
CREATE TRIGGER api_keys_auth_generation_delete
    AFTER DELETE ON bulkhead.api_keys FOR EACH ROW
    EXECUTE FUNCTION bulkhead.bump_auth_generation();
CREATE TRIGGER tenants_auth_generation
    AFTER UPDATE ON bulkhead.tenants FOR EACH ROW
    WHEN ((OLD.id, OLD.slug, OLD.isolation, OLD.server, OLD.placement, OLD.status)
          IS DISTINCT FROM (NEW.id, NEW.slug, NEW.isolation, NEW.server, NEW.placement, NEW.status))
    EXECUTE FUNCTION bulkhead.bump_auth_generation();
CREATE TRIGGER tenants_auth_generation_delete
    AFTER DELETE ON bulkhead.tenants FOR EACH ROW
    EXECUTE FUNCTION bulkhead.bump_auth_generation();
CREATE TRIGGER tenant_limits_auth_generation
    AFTER INSERT OR UPDATE OR DELETE ON bulkhead.tenant_limits FOR EACH ROW
    EXECUTE FUNCTION bulkhead.bump_auth_generation();

-- +goose Down
DROP TRIGGER tenant_limits_auth_generation ON bulkhead.tenant_limits;
DROP TRIGGER tenants_auth_generation_delete ON bulkhead.tenants;
DROP TRIGGER tenants_auth_generation ON bulkhead.tenants;
DROP TRIGGER api_keys_auth_generation_delete ON bulkhead.api_keys;
DROP TRIGGER api_keys_auth_generation ON bulkhead.api_keys;
DROP FUNCTION bulkhead.bump_auth_generation();
DROP TABLE bulkhead.auth_generation;
