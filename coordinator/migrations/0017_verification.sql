-- Row counts at dump time (issue 14, docs/verification.md): the rows of every
-- table's data, counted by the worker as the dump streamed into its store.
-- table_rows: a JSON array of {"database", "schema", "table", "rows"}
-- (database empty but in cluster dumps); NULL when not counted (older dumps,
-- failed dumps, or see table_rows_error).
ALTER TABLE dumps
    ADD COLUMN table_rows jsonb,
    ADD COLUMN table_rows_error text NOT NULL DEFAULT '';
