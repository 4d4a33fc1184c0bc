-- SINGLE dump jobs run once, through the coordinator: the task that runs one
-- is marked SINGLE, and at most one such task may ever exist per job, so
-- several coordinators (or restarts, or reconnecting workers) cannot start a
-- second run.
ALTER TABLE tasks ADD COLUMN origin text NOT NULL DEFAULT 'ADHOC'
    CHECK (origin IN ('ADHOC', 'SINGLE'));
CREATE UNIQUE INDEX tasks_single_once ON tasks (job_id) WHERE origin = 'SINGLE';
