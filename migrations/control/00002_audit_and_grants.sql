-- Consolidation grants, and the append-only, hash-chained audit log.

-- +goose Up
-- A key may read (only read, and only through each tenant's own binding)
-- other tenants' data for consolidated reports.
CREATE TABLE bulkhead.key_grants (
    key_id     text NOT NULL REFERENCES bulkhead.api_keys (id) ON DELETE CASCADE,
    tenant_id  uuid NOT NULL REFERENCES bulkhead.tenants (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT key_grants_pkey PRIMARY KEY (key_id, tenant_id)
);
CREATE INDEX key_grants_tenant_id_idx ON bulkhead.key_grants (tenant_id);
GRANT SELECT ON bulkhead.key_grants TO bulkhead_app;

-- Every row carries the hash of the previous one (prev_hash) and its own
-- (hash = sha256(prev_hash || canonical row)), so editing or removing a row
-- breaks the chain where it happened. seq is assigned by the writer under
-- an advisory lock, gapless.
CREATE TABLE bulkhead.audit_log (
    seq       bigint PRIMARY KEY CHECK (seq > 0),
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    reason    text NOT NULL DEFAULT '',
    tenants   text[] NOT NULL DEFAULT '{}',
    detail    jsonb NOT NULL DEFAULT '{}',
    prev_hash bytea NOT NULL,
    hash      bytea NOT NULL
);

-- Append-only: not even its owner may change or remove rows. A trigger
-- refuses it, and the privileges are revoked (the owner's own are
-- revocable) once the triggers exist.
-- +goose StatementBegin
CREATE FUNCTION bulkhead.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON bulkhead.audit_log
    FOR EACH ROW EXECUTE FUNCTION bulkhead.audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON bulkhead.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.audit_log_append_only();
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON bulkhead.audit_log FROM bulkhead_owner;

-- +goose Down
DROP TABLE bulkhead.audit_log;
DROP FUNCTION bulkhead.audit_log_append_only();
DROP TABLE bulkhead.key_grants;
