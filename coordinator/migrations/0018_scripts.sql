-- Registered scripts (docs/scripts.md): an admin registers one by name; a
-- SCRIPT dump job runs it on its worker. A new version under the same name
-- replaces the content and the hash; jobs name the script, not a version.
CREATE TABLE scripts (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    content     bytea NOT NULL CHECK (octet_length(content) BETWEEN 1 AND 1048576),
    -- 'sha256:' and the hex SHA-256 of content.
    hash        text NOT NULL CHECK (hash ~ '^sha256:[0-9a-f]{64}$'),
    comment     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The script a SCRIPT job runs. RESTRICT: a script in use cannot be removed.
ALTER TABLE dump_jobs
    ADD COLUMN script_name text REFERENCES scripts (name) ON UPDATE RESTRICT ON DELETE RESTRICT,
    ADD CONSTRAINT dump_jobs_script_only_for_script_jobs
        CHECK ((dump_type = 'SCRIPT') = (script_name IS NOT NULL));
CREATE INDEX dump_jobs_script ON dump_jobs (script_name) WHERE script_name IS NOT NULL;

