-- Retention (issue 14): an operator's pin keeps a dump from the worker's
-- retention (docs/retention.md); FAILED rows expire by age
-- (retention.failed_dumps), found through the partial index.
ALTER TABLE dumps ADD COLUMN pinned boolean NOT NULL DEFAULT false;
CREATE INDEX dumps_failed_finished ON dumps (finished_at) WHERE status = 'FAILED';
CREATE INDEX dumps_pinned ON dumps (worker_id) WHERE pinned;
CREATE INDEX restore_jobs_source_dump ON restore_jobs (source_dump_id) WHERE source_dump_id IS NOT NULL;
