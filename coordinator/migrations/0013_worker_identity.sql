-- Worker identity (docs/security-enroll.md): one-time enrollment tokens, the
-- certificates the coordinator's CA issued to workers, and revocation.
-- Tokens are stored only as the SHA-256 of the token text; certificates only
-- by serial number (the certificate itself stays on the worker).

CREATE TABLE enrollment_tokens (
    id              bigserial PRIMARY KEY,
    worker_id       bigint NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    -- sha256 of the token text (`pse_…`); the token itself is printed once.
    token_sha256    bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    -- Set in the transaction that enrolls with it; a token works once.
    used_at         timestamptz,
    -- Who issued it (the operator token's name when authentication is on).
    created_by      text NOT NULL DEFAULT ''
);
CREATE INDEX enrollment_tokens_worker ON enrollment_tokens (worker_id);

CREATE TABLE worker_certificates (
    -- Lower-case hex, as the CA wrote it into the certificate.
    serial          text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]{1,64}$'),
    worker_id       bigint NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    not_after       timestamptz NOT NULL,
    -- Set by RevokeWorker; a revoked serial is refused on every call.
    revoked_at      timestamptz
);
CREATE INDEX worker_certificates_worker ON worker_certificates (worker_id, not_after);

-- When the worker was last revoked; cleared by its next enrollment.
ALTER TABLE workers ADD COLUMN revoked_at timestamptz;
