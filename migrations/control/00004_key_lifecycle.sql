-- Key lifecycle: an expiry, and when a key was last used.

-- +goose Up
-- A key past expires_at is refused like a revoked one. Rotation sets it on
-- the old key, so that clients have a grace period to switch.
ALTER TABLE bulkhead.api_keys ADD COLUMN expires_at timestamptz;
-- last_used_at is written by the serving role while it authenticates, at
-- most once a minute per key (the UPDATE says so in its WHERE), so that it
-- costs no write per request.
ALTER TABLE bulkhead.api_keys ADD COLUMN last_used_at timestamptz;
-- This is the one write the serving role has on the control plane, and
-- verify allows exactly it (isolation.CheckControlPlane): a column-level
-- privilege, so it can change nothing else, not even which tenant a key is
-- for or whether it is revoked.
GRANT UPDATE (last_used_at) ON bulkhead.api_keys TO bulkhead_app;

-- +goose Down
REVOKE UPDATE (last_used_at) ON bulkhead.api_keys FROM bulkhead_app;
ALTER TABLE bulkhead.api_keys DROP COLUMN last_used_at;
ALTER TABLE bulkhead.api_keys DROP COLUMN expires_at;
