-- Script restores and script versions in the catalog (docs/scripts.md).
-- A restore job may name a registered script that restores instead of
-- pg_restore/psql. RESTRICT: a script a restore job names cannot be removed.
ALTER TABLE restore_jobs
    ADD COLUMN script_name text REFERENCES scripts (name) ON UPDATE RESTRICT ON DELETE RESTRICT;
CREATE INDEX restore_jobs_script ON restore_jobs (script_name) WHERE script_name IS NOT NULL;

-- The version of the script a restore run was given ('sha256:<hex>'); the
-- script's name is in the run's target JSON.
ALTER TABLE restore_runs
    ADD COLUMN script_hash text NOT NULL DEFAULT ''
        CHECK (script_hash = '' OR script_hash ~ '^sha256:[0-9a-f]{64}$');

-- The version of the script that made a SCRIPT dump (from its manifest).
ALTER TABLE dumps
    ADD COLUMN script_hash text NOT NULL DEFAULT ''
        CHECK (script_hash = '' OR script_hash ~ '^sha256:[0-9a-f]{64}$');
