-- Wake-ups (issue 15): a coordinator LISTENs on pgsnapman_wake and
-- pgsnapman_task and acts at once instead of at its next poll.
--   pgsnapman_wake: 't<worker id>' a task of that worker was queued;
--                   's<worker id>' that worker's schedule version changed.
--   pgsnapman_task: '<task id>' the task row changed (state, lease, progress).
-- NOTIFY is delivered at commit, to every coordinator listening (several
-- coordinators on one catalog each wake the streams they hold); the polls
-- stay as the fallback for a lost notification.

CREATE FUNCTION pgsnapman_task_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'QUEUED' THEN
        PERFORM pg_notify('pgsnapman_wake', 't' || NEW.worker_id);
    END IF;
    PERFORM pg_notify('pgsnapman_task', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify
    AFTER INSERT OR UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION pgsnapman_task_changed();

CREATE FUNCTION pgsnapman_schedule_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgsnapman_wake', 's' || NEW.id);
    RETURN NULL;
END
$$;

CREATE TRIGGER workers_schedule_notify
    AFTER UPDATE OF schedule_version ON workers
    FOR EACH ROW
    WHEN (OLD.schedule_version IS DISTINCT FROM NEW.schedule_version)
    EXECUTE FUNCTION pgsnapman_schedule_changed();
