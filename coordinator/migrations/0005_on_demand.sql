-- Dump on demand: scheduled runs of the job dump only when the source
-- database's pgsnapman.metainfo asks for it (docs/worker.md).
ALTER TABLE dump_jobs ADD COLUMN on_demand boolean NOT NULL DEFAULT false;
