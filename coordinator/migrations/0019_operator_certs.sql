-- Operator client certificates (docs/security-auth.md, "Client
-- certificates"): kept with the tokens, in the same name space, with the
-- same roles, expiry, revocation and audit. A row is either a token (its
-- sha256) or a certificate (the SHA-256 of its DER, i.e. its fingerprint).
ALTER TABLE api_tokens ALTER COLUMN token_sha256 DROP NOT NULL;
ALTER TABLE api_tokens
    ADD COLUMN cert_sha256 bytea UNIQUE CHECK (length(cert_sha256) = 32),
    -- Lower-case hex, as DER encodes it (for the operator's eyes only).
    ADD COLUMN cert_serial text CHECK (cert_serial ~ '^[0-9a-f]{1,64}$'),
    -- 'issued': signed by the built-in CA from a CSR (pgsnap cert issue);
    -- 'registered': brought by the operator (pgsnap cert register).
    ADD COLUMN cert_source text CHECK (cert_source IN ('issued', 'registered')),
    ADD CONSTRAINT api_tokens_one_credential CHECK (
        (token_sha256 IS NULL) <> (cert_sha256 IS NULL)
        AND (cert_sha256 IS NULL) = (cert_serial IS NULL)
        AND (cert_sha256 IS NULL) = (cert_source IS NULL)
    );
