-- Auto-discovery of databases (docs/discovery.md): an instance's default
-- worker lists its databases; the coordinator adds a job for each database
-- that has none, at a minute inside the instance's backup window.
ALTER TABLE instances
    ADD COLUMN auto_discover boolean NOT NULL DEFAULT false,
    -- Whole hours; the window may wrap past midnight; start = end is the whole day.
    ADD COLUMN backup_window_start integer NOT NULL DEFAULT 2
        CHECK (backup_window_start BETWEEN 0 AND 23),
    ADD COLUMN backup_window_end integer NOT NULL DEFAULT 6
        CHECK (backup_window_end BETWEEN 0 AND 23),
    -- Status and retention of the jobs discovery adds.
    ADD COLUMN discovered_status text NOT NULL DEFAULT 'ACTIVE'
        CHECK (discovered_status IN ('ACTIVE', 'HALTED')),
    ADD COLUMN discovered_keep_daily integer NOT NULL DEFAULT 14,
    ADD COLUMN discovered_keep_weekly integer NOT NULL DEFAULT 2,
    ADD COLUMN discovered_keep_monthly integer NOT NULL DEFAULT 5,
    ADD COLUMN discovered_keep_yearly integer NOT NULL DEFAULT 2;

-- When the last applied list of an instance's databases was taken: an older
-- list (a report that waited in an outbox) is ignored. Its own table, so
-- that applying a list locks this row and never the instance's (which event
-- batches also update), and lock order cannot deadlock with them.
CREATE TABLE instance_discovery (
    instance_id bigint PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    listed_at   timestamptz NOT NULL
);

-- Set when discovery finds the job's database gone, cleared when it is back:
-- the WARNING about a vanished database is written once, not at every list.
ALTER TABLE dump_jobs ADD COLUMN database_missing_since timestamptz;
