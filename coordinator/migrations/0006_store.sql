-- The worker's pack store (issue 3): dumps are deleted, verified and
-- re-reported through tasks; workers report their store's figures.

-- Tasks that are not dumps: VERIFY the store, DELETE one dump, REBUILD the
-- catalog from the manifests. A DELETE task names its dump in dump_id.
ALTER TABLE tasks DROP CONSTRAINT tasks_kind_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_kind_check
    CHECK (kind IN ('DUMP', 'RESTORE', 'VERIFY', 'DELETE', 'REBUILD'));
-- What a finished task found or did (verify report, gc figures), as JSON.
ALTER TABLE tasks ADD COLUMN result jsonb;
-- At most one DELETE task per dump that is not finished.
CREATE UNIQUE INDEX tasks_delete_once ON tasks (dump_id)
    WHERE kind = 'DELETE' AND state IN ('QUEUED', 'LEASED');

-- The last store verification that covered a dump.
ALTER TABLE dumps ADD COLUMN verified text NOT NULL DEFAULT 'NO'
    CHECK (verified IN ('NO', 'YES', 'FAILED'));
ALTER TABLE dumps ADD COLUMN verified_at timestamptz;
CREATE INDEX dumps_worker_uuid ON dumps (worker_id, dump_uuid);

-- The figures each worker last reported for its store (one row per worker).
CREATE TABLE store_stats (
    worker_id        bigint PRIMARY KEY REFERENCES workers (id) ON DELETE CASCADE,
    reported_at      timestamptz NOT NULL,
    packs            bigint NOT NULL,
    pack_bytes       bigint NOT NULL,
    chunks           bigint NOT NULL,
    unique_raw_bytes bigint NOT NULL,
    stored_bytes     bigint NOT NULL,
    dumps            bigint NOT NULL,
    logical_bytes    bigint NOT NULL,
    free_bytes       bigint NOT NULL
);
