-- The libpq sslmode each instance is dumped and restored with
-- (docs/configuration.md, "TLS to the database servers"). Instances that
-- exist already keep libpq's default, prefer, so that an upgrade breaks no
-- connection; new ones get require unless they are local.
ALTER TABLE instances
    ADD COLUMN sslmode text NOT NULL DEFAULT 'prefer'
    CHECK (sslmode IN ('disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'));
