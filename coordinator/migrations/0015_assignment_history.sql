-- Which workers a dump job or an instance was ever assigned to. The
-- WorkerService refuses events about jobs and instances that are not the
-- sending worker's (issue 13); a job or instance moved to another worker
-- stays the old worker's for the events it produced before the move and
-- uploads late (a link down for days), so that those events neither wedge
-- its outbox nor get refused. Kept by triggers, so every way a job or an
-- instance changes worker is covered.
CREATE TABLE dump_job_workers (
    job_id      bigint NOT NULL REFERENCES dump_jobs (id) ON DELETE CASCADE,
    worker_id   bigint NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, worker_id)
);

CREATE TABLE instance_workers (
    instance_id bigint NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    worker_id   bigint NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    PRIMARY KEY (instance_id, worker_id)
);

INSERT INTO dump_job_workers (job_id, worker_id) SELECT id, worker_id FROM dump_jobs;
INSERT INTO instance_workers (instance_id, worker_id)
    SELECT id, default_worker_id FROM instances WHERE default_worker_id IS NOT NULL;

CREATE FUNCTION note_dump_job_worker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dump_job_workers (job_id, worker_id) VALUES (NEW.id, NEW.worker_id)
        ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;

CREATE TRIGGER dump_jobs_note_worker AFTER INSERT OR UPDATE OF worker_id ON dump_jobs
    FOR EACH ROW EXECUTE FUNCTION note_dump_job_worker();

CREATE FUNCTION note_instance_worker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.default_worker_id IS NOT NULL THEN
        INSERT INTO instance_workers (instance_id, worker_id) VALUES (NEW.id, NEW.default_worker_id)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER instances_note_worker AFTER INSERT OR UPDATE OF default_worker_id ON instances
    FOR EACH ROW EXECUTE FUNCTION note_instance_worker();
