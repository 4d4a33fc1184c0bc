-- What pg_dump leaves out of a database dump and a restore elsewhere needs
-- (database owner, encoding, locale, tablespace, ACL, settings, referenced
-- roles), as captured by the worker (docs/worker.md, "Restore metadata").
ALTER TABLE dumps ADD COLUMN restore_metadata jsonb;
