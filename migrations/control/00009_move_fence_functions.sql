-- The live-move fence as functions compiled once per session.
--
-- Every tenant transaction starts with the tenant's fence
-- (isolation.FenceStatement): its fence lock taken shared, then a check
-- that the tenant still lives where the transaction was routed. Sent as an
-- anonymous DO block, PostgreSQL compiled that check, and planned its
-- query, on every transaction (about 90 µs of backend time, the whole gap
-- between a tenant-bound point read and the same read without tenancy). A
-- function is compiled once per session and its query's plan kept, so the
-- fence costs its lock and one cached lookup.
--
-- These two serve the tenants whose storage is in this database: shared
-- tables (rls) and a schema of their own. The database strategy installs
-- its own in every tenant database (isolation.FenceDatabaseDDL). The
-- functions are SECURITY INVOKER, read only public catalogs or what the
-- caller may read anyway, and name everything they use with its schema, so
-- that the caller's search_path cannot change what they check. The lock
-- keys are arguments: isolation.FenceKey is their one definition. On
-- Citus the whole BEGIN message, fence included, is run again on the
-- workers (SET LOCAL travels with the message it came in), so these are
-- propagated there, and a worker, which has no control plane, skips the
-- shared-tables check: the coordinator has made it.

-- +goose Up
CREATE SCHEMA bulkhead_fence;
-- A tenant of the schema strategy runs as its own role: it needs the
-- schema, and enter_schema, whose only reads are public catalogs.
GRANT USAGE ON SCHEMA bulkhead_fence TO PUBLIC;

-- +goose StatementBegin
CREATE FUNCTION bulkhead_fence.enter_shared(tenant uuid, class integer, key integer) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(class, key);
    -- Nested: the inner condition is planned only where the table exists.
    IF pg_catalog.to_regclass('bulkhead.tenants') IS NOT NULL THEN
        IF NOT EXISTS (SELECT FROM bulkhead.tenants t
                       WHERE t.id OPERATOR(pg_catalog.=) tenant AND t.isolation OPERATOR(pg_catalog.=) 'rls') THEN
            RAISE EXCEPTION 'tenant moved' USING ERRCODE = 'BH001';
        END IF;
    END IF;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION bulkhead_fence.enter_shared(uuid, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead_fence.enter_shared(uuid, integer, integer) TO bulkhead_app;

-- +goose StatementBegin
-- Its own search_path: a tenant's transaction calls it under the tenant's
-- search_path, and a session keeps a function's query plans only while
-- the search_path they were made under holds — every call from another
-- tenant would plan them again.
CREATE FUNCTION bulkhead_fence.enter_schema(placement text, class integer, key integer) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns oid;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(class, key);
    ns := pg_catalog.to_regnamespace(placement);
    -- pg_description itself, not obj_description: a SQL function's query
    -- is planned again in every transaction, this one once a session.
    IF ns IS NULL OR EXISTS (SELECT FROM pg_catalog.pg_description d
                             WHERE d.objoid OPERATOR(pg_catalog.=) ns
                               AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
                               AND d.objsubid OPERATOR(pg_catalog.=) 0
                               AND d.description OPERATOR(pg_catalog.=) 'bulkhead: tenant moved out') THEN
        RAISE EXCEPTION 'tenant moved' USING ERRCODE = 'BH001';
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP SCHEMA bulkhead_fence CASCADE;
