-- The pgsnapman catalog, version 1. Applied by the coordinator at start
-- (sqlx migrations, under an advisory lock, so several coordinators may start
-- at once). Enumerations are stored as their proto labels without the prefix
-- (e.g. 'ACTIVE', 'FULL', 'SUCCEEDED') and checked here.

CREATE TABLE workers (
    id                          bigserial PRIMARY KEY,
    name                        text NOT NULL UNIQUE,
    status                      text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'HALTED')),
    registered_at               timestamptz NOT NULL DEFAULT now(),
    last_seen_at                timestamptz,
    -- Bumped by every Admin change that alters what this worker must run.
    schedule_version            bigint NOT NULL DEFAULT 1,
    confirmed_schedule_version  bigint NOT NULL DEFAULT 0,
    outbox_backlog              bigint NOT NULL DEFAULT 0,
    agent_version               text NOT NULL DEFAULT '',
    client_majors               integer[] NOT NULL DEFAULT '{}'
);

-- One row per open lease stream, on whichever coordinator holds it. A worker
-- is "connected" while one of its sessions has been seen recently; a crashed
-- coordinator's rows simply go stale.
CREATE TABLE worker_sessions (
    session_id      uuid PRIMARY KEY,
    worker_id       bigint NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    seen_at         timestamptz NOT NULL DEFAULT now(),
    stale_after     timestamptz NOT NULL
);
CREATE INDEX worker_sessions_worker ON worker_sessions (worker_id, stale_after);

CREATE TABLE instances (
    id                  bigserial PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    host                text NOT NULL,
    port                integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    username            text NOT NULL,
    -- Sent only to the worker that connects; never returned by the Admin API.
    password            text,
    maintenance_db      text NOT NULL,
    status              text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'HALTED')),
    default_worker_id   bigint REFERENCES workers (id),
    server_version      text NOT NULL DEFAULT '',
    comment             text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dump_jobs (
    id              bigserial PRIMARY KEY,
    worker_id       bigint NOT NULL REFERENCES workers (id),
    instance_id     bigint NOT NULL REFERENCES instances (id),
    database        text NOT NULL DEFAULT '',
    schema_name     text NOT NULL DEFAULT '',
    dump_type       text NOT NULL CHECK (dump_type IN ('FULL', 'SCHEMA', 'CLUSTER', 'CLUSTER_SCHEMA', 'GLOBALS', 'SCRIPT')),
    format          text NOT NULL CHECK (format IN ('CUSTOM', 'DIRECTORY', 'PLAIN')),
    extra_options   text[] NOT NULL DEFAULT '{}',
    cron            text NOT NULL,
    kind            text NOT NULL DEFAULT 'REPEAT' CHECK (kind IN ('REPEAT', 'SINGLE')),
    status          text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'HALTED')),
    keep_daily      integer NOT NULL DEFAULT 14,
    keep_weekly     integer NOT NULL DEFAULT 2,
    keep_monthly    integer NOT NULL DEFAULT 5,
    keep_yearly     integer NOT NULL DEFAULT 2,
    parallel_jobs   integer NOT NULL DEFAULT 0,
    comment         text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dump_jobs_worker ON dump_jobs (worker_id);
CREATE INDEX dump_jobs_instance ON dump_jobs (instance_id);

-- Restores (the restore issue fills in the behaviour; the shape is fixed now).
CREATE TABLE restore_jobs (
    id                  bigserial PRIMARY KEY,
    worker_id           bigint NOT NULL REFERENCES workers (id),
    -- Source: the latest good dump of a job, or one fixed dump.
    source_job_id       bigint,
    source_dump_id      bigint,
    target_instance_id  bigint NOT NULL REFERENCES instances (id),
    target_database     text NOT NULL,
    schema_name         text NOT NULL DEFAULT '',
    restore_type        text NOT NULL CHECK (restore_type IN ('FULL', 'SCHEMA', 'DATA')),
    existing_database   text NOT NULL CHECK (existing_database IN ('RENAME', 'DROP', 'DROP_BEFORE', 'LEAVE', 'TRUNCATE')),
    kind                text NOT NULL CHECK (kind IN ('SINGLE', 'REPEAT', 'TRIGGER')),
    cron                text NOT NULL DEFAULT '',
    run_at              timestamptz,
    roles               boolean NOT NULL DEFAULT true,
    target_owner        text NOT NULL DEFAULT '',
    tablespace_map      jsonb NOT NULL DEFAULT '{}',
    parallel_jobs       integer NOT NULL DEFAULT 0,
    status              text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'HALTED')),
    comment             text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (source_job_id IS NOT NULL OR source_dump_id IS NOT NULL)
);

-- The dump catalog. Rows outlive their job (no foreign key on job_id) and can
-- be rebuilt from the workers' manifests: dump_uuid is the worker's identity.
CREATE TABLE dumps (
    id              bigserial PRIMARY KEY,
    dump_uuid       uuid NOT NULL UNIQUE,
    job_id          bigint NOT NULL,
    worker_id       bigint NOT NULL REFERENCES workers (id),
    instance_id     bigint NOT NULL,
    host            text NOT NULL,
    port            integer NOT NULL,
    database        text NOT NULL,
    schema_name     text NOT NULL DEFAULT '',
    dump_type       text NOT NULL,
    format          text NOT NULL,
    status          text NOT NULL CHECK (status IN ('SUCCEEDED', 'FAILED', 'REMOVING')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    dump_bytes      bigint NOT NULL DEFAULT 0,
    stored_bytes    bigint NOT NULL DEFAULT 0,
    database_bytes  bigint NOT NULL DEFAULT -1,
    server_version  text NOT NULL DEFAULT '',
    client_version  text NOT NULL DEFAULT '',
    location        text NOT NULL DEFAULT '',
    message         text NOT NULL DEFAULT '',
    task_id         bigint,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dumps_job ON dumps (job_id, started_at);
CREATE INDEX dumps_instance ON dumps (instance_id, database);

CREATE TABLE restore_log (
    id              bigserial PRIMARY KEY,
    restore_job_id  bigint,
    task_id         bigint,
    dump_id         bigint,
    worker_id       bigint REFERENCES workers (id),
    target_instance_id bigint,
    target_database text NOT NULL DEFAULT '',
    logged_at       timestamptz NOT NULL DEFAULT now(),
    level           text NOT NULL,
    text            text NOT NULL
);

CREATE TABLE messages (
    id          bigserial PRIMARY KEY,
    logged_at   timestamptz NOT NULL DEFAULT now(),
    -- MessageLevel number (1 DEBUG … 5 CRITICAL) so that "at least" is a comparison.
    level       smallint NOT NULL CHECK (level BETWEEN 1 AND 5),
    class       text NOT NULL,
    worker_id   bigint REFERENCES workers (id),
    job_id      bigint,
    text        text NOT NULL
);
CREATE INDEX messages_time ON messages (logged_at);

-- The ad-hoc task queue. Claimed with FOR UPDATE SKIP LOCKED; a lease has an
-- id and an expiry; completion needs the current lease id.
CREATE TABLE tasks (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('DUMP', 'RESTORE', 'VERIFY')),
    state           text NOT NULL DEFAULT 'QUEUED' CHECK (state IN ('QUEUED', 'LEASED', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    worker_id       bigint NOT NULL REFERENCES workers (id),
    job_id          bigint,
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    lease_id        uuid,
    leased_until    timestamptz,
    error           text NOT NULL DEFAULT '',
    dump_id         bigint,
    progress_phase  text NOT NULL DEFAULT '',
    progress_done   bigint NOT NULL DEFAULT 0,
    progress_total  bigint NOT NULL DEFAULT 0
);
CREATE INDEX tasks_queue ON tasks (worker_id, id) WHERE state = 'QUEUED';
CREATE INDEX tasks_leases ON tasks (leased_until) WHERE state = 'LEASED';

-- Every event a worker uploaded, so that a replayed event changes nothing.
CREATE TABLE applied_events (
    worker_id   bigint NOT NULL REFERENCES workers (id),
    event_id    uuid NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker_id, event_id)
);
