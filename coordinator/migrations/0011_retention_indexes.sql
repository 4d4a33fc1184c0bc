-- Pruning by age (coordinator `[retention]`): the history tables are
-- deleted from oldest first, which needs their time columns indexed.
-- messages already has messages_time (logged_at).
CREATE INDEX applied_events_time ON applied_events (applied_at);
CREATE INDEX restore_log_time ON restore_log (logged_at);
