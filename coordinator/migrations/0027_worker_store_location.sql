-- xrestore (issue 16 item 3): where each worker's pack store keeps its
-- packs, as the worker last said in Hello (no credential); a restore worker
-- granted with `worker set-restore-worker` gets it with the restore task to
-- read the dump worker's bucket read-only (docs/object-storage.md).
ALTER TABLE workers ADD COLUMN store_kind text NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN store_endpoint text NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN store_region text NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN store_bucket text NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN store_prefix text NOT NULL DEFAULT '';
