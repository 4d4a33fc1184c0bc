-- The worker that runs restores of a worker's dumps, when it is not the
-- worker itself (the original's restore_worker_id): it reads the dump
-- worker's store read-only (worker config restore.shared_stores).
ALTER TABLE workers ADD COLUMN restore_worker_id bigint REFERENCES workers (id) ON DELETE SET NULL;
