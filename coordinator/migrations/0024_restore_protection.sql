-- Restore protection (issue 14 item 1, docs/retention.md): the dump of a
-- restore run that is QUEUED or RUNNING is in the protected list of the
-- worker HOLDING the dump (Schedule.protected_dump_uuids), whichever worker
-- runs the restore. The holder's schedule version is bumped when a run starts
-- or stops protecting a dump (queued, re-pointed to a newer dump, ended,
-- deleted), whatever code path does it, so the worker's mirror follows at once.
CREATE INDEX restore_runs_active_dump ON restore_runs (dump_id)
    WHERE status IN ('QUEUED', 'RUNNING');

CREATE FUNCTION pgsnapman_restore_protection() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    was bigint;
    now_ bigint;
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status IN ('QUEUED', 'RUNNING') THEN
        was := OLD.dump_id;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status IN ('QUEUED', 'RUNNING') THEN
        now_ := NEW.dump_id;
    END IF;
    -- QUEUED -> RUNNING (or back, after a lost lease) changes nothing.
    IF was IS DISTINCT FROM now_ THEN
        UPDATE workers SET schedule_version = schedule_version + 1
         WHERE id IN (SELECT worker_id FROM dumps WHERE id IN (was, now_));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER restore_runs_protect
    AFTER INSERT OR DELETE OR UPDATE OF status, dump_id ON restore_runs
    FOR EACH ROW EXECUTE FUNCTION pgsnapman_restore_protection();
