-- enc (issue 16 item 2): whether each worker's pack store is encrypted at
-- rest, and its key's id (a public fingerprint, never the key), as last
-- reported with its figures (docs/encryption.md).
ALTER TABLE store_stats ADD COLUMN encrypted boolean NOT NULL DEFAULT false;
ALTER TABLE store_stats ADD COLUMN key_id text NOT NULL DEFAULT '';
