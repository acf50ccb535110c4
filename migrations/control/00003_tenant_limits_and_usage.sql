-- Load walls: each tenant's overrides of the configured limits, and the
-- per-minute usage counters behind `bulkhead tenant stats`.

-- +goose Up
-- A NULL column keeps the configured default. The serving role reads the
-- overrides in the same query that authenticates a key.
CREATE TABLE bulkhead.tenant_limits (
    tenant_id      uuid PRIMARY KEY REFERENCES bulkhead.tenants (id) ON DELETE CASCADE,
    -- Transactions the tenant may run at once in one server process.
    max_concurrent integer CHECK (max_concurrent BETWEEN 1 AND 10000),
    -- Requests per second, and at once, per API key of the tenant.
    rate           double precision CHECK (rate > 0 AND rate <= 1000000),
    burst          integer CHECK (burst BETWEEN 1 AND 1000000),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON bulkhead.tenant_limits TO bulkhead_app;

-- What each server process (replica) counted per tenant and minute: only
-- the top tenants of each flush, the rest added up under the nil UUID, so
-- the rows per minute are bounded whatever the number of tenants. No
-- foreign key: a deleted tenant's usage stays until the retention drops it.
CREATE TABLE bulkhead.tenant_usage (
    minute     timestamptz NOT NULL,
    replica    text NOT NULL CHECK (length(replica) BETWEEN 1 AND 100),
    tenant_id  uuid NOT NULL,
    requests   bigint NOT NULL DEFAULT 0,
    rejections bigint NOT NULL DEFAULT 0,
    waits      bigint NOT NULL DEFAULT 0,
    wait_us    bigint NOT NULL DEFAULT 0,
    db_us      bigint NOT NULL DEFAULT 0,
    CONSTRAINT tenant_usage_pkey PRIMARY KEY (minute, replica, tenant_id)
);
GRANT SELECT ON bulkhead.tenant_usage TO bulkhead_app;

-- The serving role may only read the control plane (bulkhead verify calls
-- anything else critical), yet every serving process records its usage.
-- It does so through this function alone, which adds counters and drops
-- rows past the retention, and can touch no other table. It runs as its
-- owner, which bypasses nothing: the owner role is subject to forced RLS.
-- Times are parameters: nothing here calls now(), so the upsert also
-- works where a distributed engine refuses non-immutable functions in
-- ON CONFLICT.
-- +goose StatementBegin
CREATE FUNCTION bulkhead.record_tenant_usage(
    p_minute timestamptz, p_replica text, p_retention interval,
    p_tenants uuid[], p_requests bigint[], p_rejections bigint[],
    p_waits bigint[], p_wait_us bigint[], p_db_us bigint[])
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO bulkhead.tenant_usage AS u
        (minute, replica, tenant_id, requests, rejections, waits, wait_us, db_us)
    SELECT p_minute, p_replica, x.t, x.r, x.j, x.w, x.wu, x.d
    FROM unnest(p_tenants, p_requests, p_rejections, p_waits, p_wait_us, p_db_us) AS x(t, r, j, w, wu, d)
    ON CONFLICT ON CONSTRAINT tenant_usage_pkey DO UPDATE SET
        requests   = u.requests + EXCLUDED.requests,
        rejections = u.rejections + EXCLUDED.rejections,
        waits      = u.waits + EXCLUDED.waits,
        wait_us    = u.wait_us + EXCLUDED.wait_us,
        db_us      = u.db_us + EXCLUDED.db_us;
    DELETE FROM bulkhead.tenant_usage
    WHERE minute < p_minute - greatest(p_retention, interval '10 minutes');
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION bulkhead.record_tenant_usage(timestamptz, text, interval, uuid[], bigint[], bigint[], bigint[], bigint[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.record_tenant_usage(timestamptz, text, interval, uuid[], bigint[], bigint[], bigint[], bigint[], bigint[]) TO bulkhead_app;

-- +goose Down
DROP FUNCTION bulkhead.record_tenant_usage(timestamptz, text, interval, uuid[], bigint[], bigint[], bigint[], bigint[], bigint[]);
DROP TABLE bulkhead.tenant_usage;
DROP TABLE bulkhead.tenant_limits;
