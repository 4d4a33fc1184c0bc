-- Alerts (issue 17 item 3, docs/alerts.md): notification channels, the rules
-- that name them, the incidents the rules open and resolve, and the outbox of
-- deliveries the coordinators send (claimed with FOR UPDATE SKIP LOCKED).

-- A place notifications go. Settings hold no secret: the HMAC key of a
-- webhook or the SMTP password is sealed under the coordinator's notify key
-- (docs/alerts.md "Secrets": version byte 1, 24-byte nonce, XSalsa20-Poly1305
-- ciphertext and tag); key_id names that key (16 hex digits of its SHA-256).
CREATE TABLE notify_channels (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    kind            text NOT NULL CHECK (kind IN ('WEBHOOK', 'EMAIL')),
    -- WEBHOOK: {"url"}; EMAIL: {"relay", "port", "tls", "from", "to", "username"}.
    settings        jsonb NOT NULL,
    sealed_secret   bytea,
    key_id          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Set when a delivery to it gave up, cleared by the next one that works.
    failing_since   timestamptz,
    last_error      text NOT NULL DEFAULT ''
);

CREATE TABLE notify_rules (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    class           text NOT NULL CHECK (class IN ('DUMP_FAILED', 'RESTORE_FAILED',
                        'VERIFY_FAILED', 'DUMP_MISSING', 'WORKER_OFFLINE',
                        'OUTBOX_BACKLOG', 'CHANNEL_FAILED')),
    severity        text NOT NULL CHECK (severity IN ('INFO', 'WARNING', 'CRITICAL')),
    -- Only this dump job (DUMP_FAILED, DUMP_MISSING, VERIFY_FAILED); NULL: all.
    job_id          bigint,
    -- WORKER_OFFLINE: offline longer than; DUMP_MISSING: the longest age of
    -- the newest good dump (NULL: 1.5 periods of the job's cron).
    threshold_seconds bigint CHECK (threshold_seconds > 0),
    -- OUTBOX_BACKLOG: events waiting in a worker's outbox, more than.
    threshold_count bigint CHECK (threshold_count >= 0),
    send_resolved   boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- A channel named by a rule cannot be removed (the rule would go silent).
CREATE TABLE notify_rule_channels (
    rule_id         bigint NOT NULL REFERENCES notify_rules (id) ON DELETE CASCADE,
    channel_id      bigint NOT NULL REFERENCES notify_channels (id),
    PRIMARY KEY (rule_id, channel_id)
);

-- One per rule and subject ('job:12', 'worker:3', ...) while its condition
-- holds: the partial unique index lets only one coordinator open it, and
-- repeats of the condition do not notify again until it is resolved.
CREATE TABLE notify_incidents (
    id              bigserial PRIMARY KEY,
    rule_id         bigint NOT NULL REFERENCES notify_rules (id) ON DELETE CASCADE,
    subject         text NOT NULL,
    summary         text NOT NULL,
    details         jsonb NOT NULL,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz
);
CREATE UNIQUE INDEX notify_incidents_open ON notify_incidents (rule_id, subject)
    WHERE resolved_at IS NULL;
CREATE INDEX notify_incidents_resolved ON notify_incidents (resolved_at)
    WHERE resolved_at IS NOT NULL;

-- The outbox: one row per incident change and channel. A coordinator claims
-- due rows (FOR UPDATE SKIP LOCKED) by moving next_attempt_at past its send
-- timeout, so a crashed sender's rows come back (at-least-once).
CREATE TABLE notify_deliveries (
    id              bigserial PRIMARY KEY,
    incident_id     bigint NOT NULL REFERENCES notify_incidents (id) ON DELETE CASCADE,
    channel_id      bigint NOT NULL REFERENCES notify_channels (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    -- The JSON body sent (docs/alerts.md "Payload"), fixed at creation.
    payload         jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX notify_deliveries_due ON notify_deliveries (next_attempt_at)
    WHERE status = 'PENDING';
