-- Restores (issue 7): restore jobs get their remaining settings, every
-- restore is a run with a log, and RESTORE tasks name their job and run.
-- (0007 is the discovery migration.)

-- The worker that runs a restore is the one holding the dump: decided per
-- run, not per job.
ALTER TABLE restore_jobs ALTER COLUMN worker_id DROP NOT NULL;
-- Empty: restore under the dumped database's name.
ALTER TABLE restore_jobs ALTER COLUMN target_database SET DEFAULT '';
ALTER TABLE restore_jobs ADD COLUMN keep_tablespaces boolean NOT NULL DEFAULT false;
ALTER TABLE restore_jobs ADD COLUMN extra_options text[] NOT NULL DEFAULT '{}';
-- REPEAT: the last cron time a run was queued for; SINGLE: when it was.
ALTER TABLE restore_jobs ADD COLUMN last_fired_at timestamptz;
CREATE INDEX restore_jobs_source ON restore_jobs (source_job_id) WHERE kind = 'TRIGGER';

-- One restore: queued with its task, then run by the worker holding the
-- dump. `target` is the resolved RestoreTarget as JSON (docs/protocol.md).
CREATE TABLE restore_runs (
    id                  bigserial PRIMARY KEY,
    restore_job_id      bigint REFERENCES restore_jobs (id) ON DELETE SET NULL,
    task_id             bigint,
    -- No foreign key: the dump may be deleted later, the run stays.
    dump_id             bigint NOT NULL,
    dump_uuid           uuid NOT NULL,
    worker_id           bigint REFERENCES workers (id),
    source_database     text NOT NULL DEFAULT '',
    target_instance_id  bigint NOT NULL,
    target              jsonb NOT NULL,
    status              text NOT NULL DEFAULT 'QUEUED'
        CHECK (status IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'ABORTED')),
    queued_at           timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    bytes_total         bigint NOT NULL DEFAULT 0,
    bytes_done          bigint NOT NULL DEFAULT 0,
    warnings            integer NOT NULL DEFAULT 0,
    error               text NOT NULL DEFAULT ''
);
CREATE INDEX restore_runs_job ON restore_runs (restore_job_id, id);

-- The restore log: lines of a run (the first shape of this table was never
-- written to).
DROP TABLE restore_log;
CREATE TABLE restore_log (
    id          bigserial PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES restore_runs (id) ON DELETE CASCADE,
    logged_at   timestamptz NOT NULL DEFAULT now(),
    -- MessageLevel number (1 DEBUG … 5 CRITICAL).
    level       smallint NOT NULL CHECK (level BETWEEN 1 AND 5),
    text        text NOT NULL
);
CREATE INDEX restore_log_run ON restore_log (run_id, id);

ALTER TABLE tasks ADD COLUMN restore_job_id bigint;
-- Why a task was queued: by hand (ADHOC), a SINGLE job's one run, a
-- REPEAT restore job's cron, or a dump that TRIGGERs restores.
ALTER TABLE tasks DROP CONSTRAINT tasks_origin_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_origin_check
    CHECK (origin IN ('ADHOC', 'SINGLE', 'REPEAT', 'TRIGGER'));
ALTER TABLE tasks ADD COLUMN restore_run_id bigint;
-- A restore job has at most one queued run: a newer dump replaces the
-- queued run's dump instead of queuing another (copy jobs under a backlog).
CREATE UNIQUE INDEX tasks_restore_queued_once ON tasks (restore_job_id)
    WHERE kind = 'RESTORE' AND state = 'QUEUED' AND restore_job_id IS NOT NULL;
-- A SINGLE restore job runs once, ever.
CREATE UNIQUE INDEX tasks_single_restore_once ON tasks (restore_job_id)
    WHERE kind = 'RESTORE' AND origin = 'SINGLE';
