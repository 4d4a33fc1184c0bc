-- Operator authentication and the audit (docs/security-auth.md).
-- A token is `psm_` + 32 random bytes (base64url); only its sha256 is kept.
CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    role         text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Token name of the creator ('' for the bootstrap token).
    created_by   text NOT NULL DEFAULT '',
    expires_at   timestamptz,
    revoked_at   timestamptz,
    -- Updated at most once a minute per token (not at every call).
    last_used_at timestamptz
);

-- Append-only: one row per mutating AdminService call and per refused call
-- (and enrollment, renewal and revocation of workers). `args` has every
-- secret redacted before it is written.
CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    -- Token name, `worker:<name>` for a worker certificate, '' when unknown.
    actor  text NOT NULL,
    -- The gRPC method name (`RestoreNow`), or the full path of an unknown one.
    method text NOT NULL,
    args   jsonb NOT NULL DEFAULT '{}',
    -- ip:port of the caller, when known.
    peer   text,
    ok     boolean NOT NULL,
    -- '' when ok, else the error line the caller got.
    detail text NOT NULL DEFAULT ''
);
-- `pgsnap audit list` filters by actor, method, time and failure, newest first.
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);
CREATE INDEX audit_log_method ON audit_log (method, at);
CREATE INDEX audit_log_failed ON audit_log (at) WHERE NOT ok;
