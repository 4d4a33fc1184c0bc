-- dash2 (issue 18 part 2, docs/dashboard.md): what the dashboard needs to
-- keep in the catalog rather than in one coordinator's memory.

-- Dashboard sessions, shared by every coordinator on this catalog and kept
-- across restarts. Only the SHA-256 of the session id (the cookie) is kept:
-- a catalog reader cannot take over a session. The caller is the token's
-- row, re-read at every request (revocation, expiry, role); `csrf` guards
-- the forms of that session and is useless without the cookie. Expired rows
-- are deleted by the next login (which also enforces dashboard.max_sessions).
CREATE TABLE dashboard_sessions (
    id_sha256  bytea PRIMARY KEY CHECK (length(id_sha256) = 32),
    token_id   bigint NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf       text NOT NULL CHECK (length(csrf) BETWEEN 16 AND 128),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);

-- The worker's scheduler.timezone (IANA name) as its last Hello said; NULL
-- from a worker older than the field (the dashboard then reads crons in UTC).
ALTER TABLE workers ADD COLUMN timezone text CHECK (length(timezone) <= 64);

-- The databases of the last applied discovery list (docs/discovery.md), so
-- that the dashboard can show the ones without an ACTIVE dump job.
ALTER TABLE instance_discovery ADD COLUMN databases text[] NOT NULL DEFAULT '{}';

-- Discovery that only reports (`pgsnap instance add --discover report`):
-- the list is kept (above) and no job is added.
ALTER TABLE instances ADD COLUMN discover_report_only boolean NOT NULL DEFAULT false;
