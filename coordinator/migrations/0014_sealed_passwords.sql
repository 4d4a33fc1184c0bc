-- seal (issue 13): instance passwords sealed by pgsnap to the X25519 key of
-- each worker that uses them (docs/security-seal.md). The catalog keeps
-- ciphertext only.

-- The key a worker presents in Hello (32 bytes) and its fingerprint.
ALTER TABLE workers ADD COLUMN seal_public_key bytea
    CHECK (seal_public_key IS NULL OR octet_length(seal_public_key) = 32);
ALTER TABLE workers ADD COLUMN seal_key_fingerprint text;
ALTER TABLE workers ADD COLUMN seal_key_presented_at timestamptz;

-- One sealed copy of an instance's password per worker that uses it.
CREATE TABLE instance_passwords (
    instance_id     bigint NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    worker_id       bigint NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    -- crypto_box_seal(password): 48 bytes of overhead, at most 4096 of password.
    sealed          bytea NOT NULL CHECK (octet_length(sealed) BETWEEN 49 AND 4144),
    -- The worker key it is sealed to (a re-created key makes it STALE).
    key_fingerprint text NOT NULL,
    set_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, worker_id)
);
CREATE INDEX instance_passwords_worker ON instance_passwords (worker_id);

-- Passwords stored in clear before this migration. Nothing writes this
-- column any more: the coordinator seals each one to every worker that uses
-- the instance as soon as that worker has presented its key, then sets it to
-- NULL; at start it drops (with a warning) those no worker uses.
ALTER TABLE instances RENAME COLUMN password TO legacy_password;
