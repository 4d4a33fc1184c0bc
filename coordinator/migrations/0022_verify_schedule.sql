-- Scheduled verification per dump job (issue 14 item 4, docs/verification.md):
-- the worker fires `verify_cron` from its mirrored schedule and verifies the
-- job's newest successful dump by `verify_method`, restoring into
-- `verify_instance_id` (NULL: the job's own instance) and running
-- `verify_checks` (SQL that must return true; set by admins only).
ALTER TABLE dump_jobs
    ADD COLUMN verify_cron text NOT NULL DEFAULT '',
    ADD COLUMN verify_method text NOT NULL DEFAULT 'read'
        CHECK (verify_method IN ('read', 'restore')),
    ADD COLUMN verify_instance_id bigint REFERENCES instances (id),
    ADD COLUMN verify_checks text[] NOT NULL DEFAULT '{}';
CREATE INDEX dump_jobs_verify_instance ON dump_jobs (verify_instance_id)
    WHERE verify_instance_id IS NOT NULL;
