-- s3 (issue 16 item 1): where each worker's pack store keeps its packs,
-- as last reported with its figures (docs/object-storage.md).
ALTER TABLE store_stats ADD COLUMN backend text NOT NULL DEFAULT 'local';
ALTER TABLE store_stats ADD COLUMN backend_location text NOT NULL DEFAULT '';
ALTER TABLE store_stats ADD COLUMN cache_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE store_stats ADD COLUMN cache_limit bigint NOT NULL DEFAULT 0;
