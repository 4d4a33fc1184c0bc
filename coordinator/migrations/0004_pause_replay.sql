-- Standby sources: pause WAL replay for the duration of a job's dumps.
ALTER TABLE dump_jobs ADD COLUMN pause_replay boolean NOT NULL DEFAULT false;
