-- Dump verification (issue 14 item 4, docs/verification.md): `pgsnap verify
-- now` reads a dump through or restores it into a scratch database; the
-- last result is kept on the dump row. Not the store's chunk check
-- (dumps.verified).
ALTER TABLE tasks DROP CONSTRAINT tasks_kind_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_kind_check
    CHECK (kind IN ('DUMP', 'RESTORE', 'VERIFY', 'DELETE', 'REBUILD', 'VERIFY_DUMP'));
-- What a VERIFY_DUMP task was asked: {"method", "instance_id", "checks"}.
ALTER TABLE tasks ADD COLUMN params jsonb;

ALTER TABLE dumps
    ADD COLUMN restore_verified_method text,
    ADD COLUMN restore_verified_at timestamptz,
    ADD COLUMN restore_verified_ok boolean,
    -- {"error", "mismatches": [{"schema", "table", "expected", "found"}],
    --  "failed_checks": [...], "tables_checked"}
    ADD COLUMN restore_verified_detail jsonb;
