"""SQL of the scale benchmark (tests/bench/scale.py, issue 15 item 5): the
churn benchmark's mixed database (churn_sql.py: customers, orders, events,
attachments) with primary keys only, plus a table of large documents (text
and jsonb, 8-50 kB each, TOASTed and pglz-compressed in the heap but dumped
in full), so that a 20 GB dump fits in a fraction of that on disk.
Deterministic: setseed() and hashes of the ids, never now().

Shares of the dump (pg_dump -Fc -Z0), by design, at every size: customers,
orders and events 20% (in churn_sql's proportions), attachments (random
bytea: hex in COPY, half compressible, never dedupable) 10%, documents 70%.
Documents are paragraphs drawn (by a hash of the id) from a pool of 4096
generated paragraphs, so they are cheap to generate server-side; the pool is
a temporary table, not part of the dump.
"""

import re

import churn_sql

# Dump bytes per row (PostgreSQL 15, -Fc -Z0): churn_sql's calibration for
# its tables (306 MB at scale 1: customers 16%, orders 54%, events 19%,
# attachments 11%, confirmed at 0.1 GB); documents measured at 0.1 GB (see docs/benchmarks.md).
ROW_BYTES = {
    "customers": 0.16 * 306e6 / churn_sql.ROWS["customers"],
    "orders": 0.54 * 306e6 / churn_sql.ROWS["orders"],
    "events": 0.19 * 306e6 / churn_sql.ROWS["events"],
    "attachments": 0.11 * 306e6 / churn_sql.ROWS["attachments"],
    "documents": 29_450,
}
SHARES = {"rows": 0.20, "attachments": 0.10, "documents": 0.70}
TABLES = ["customers", "orders", "events", "attachments", "documents"]
# Rows per INSERT statement of the initial load (each its own transaction,
# so a long load shows progress and can stop between batches).
BATCH_BYTES = 500e6

POOL = r"""
SELECT setseed(0.17);
CREATE TEMP TABLE pool (id int PRIMARY KEY, t text NOT NULL);
INSERT INTO pool SELECT i, initcap(pg_temp.words(1)) || ' ' || pg_temp.words(40 + i % 40) || '.'
FROM generate_series(0, 4095) i;
ANALYZE pool;
CREATE FUNCTION pg_temp.para(h int) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT t FROM pg_temp.pool WHERE id = h & 4095
$$;
"""

# Only primary keys: secondary indexes cost disk, not dump size.
SCHEMA = "\n".join(ln for ln in churn_sql.SCHEMA.splitlines()
                   if not ln.startswith("CREATE INDEX")) + r"""
CREATE TABLE documents (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL,
  title       text NOT NULL,
  updated_at  timestamptz NOT NULL,
  body        text NOT NULL,
  sections    jsonb NOT NULL
);
"""

# churn_sql's word list, as a constant array: inline expressions instead of
# its SQL functions (pg_temp.words, items, noise cost 30-400 µs a row, too
# slow for tens of millions of rows; the columns and their distributions are
# churn_sql's).
_WORDS = re.search(r"SELECT ARRAY\[(.*?)\]\s*AS w", churn_sql.HELPERS, re.S).group(1)
_N_WORDS = _WORDS.count("'") // 2
WORD = f"(ARRAY[{_WORDS}])[1 + floor(random() * {_N_WORDS})::int]"


def words(n: str, outer: str = "g") -> str:
    """`n` random words joined by spaces (a subquery correlated with the
    outer row `outer`, so that it is evaluated once per row)."""
    return (f"(SELECT string_agg({WORD}, ' ') FROM generate_series(1, greatest(({n}) + 0 * {outer}, 1)))")


def sim_time(day: str) -> str:
    return (f"(timestamptz '2024-03-01 00:00:00+00' + make_interval(days => ({day})::int) "
            "+ random() * interval '1 day')")


_ITEM = ("jsonb_build_object('sku', 'SKU-' || lpad((floor(random() * 90000) + 10000)::text, 6, '0'), "
         "'qty', 1 + floor(random() * 5)::int, 'price', round((random() * 200)::numeric, 2), "
         f"'name', {WORD} || ' ' || {WORD} || ' ' || {WORD})")

FAST_INSERTS = {
    "customers": f"""INSERT INTO customers
SELECT g, initcap({WORD} || ' ' || {WORD}),
       {WORD} || g || '@example.' || (ARRAY['com','net','org','de','fr'])[1 + g % 5],
       (ARRAY['DE','FR','US','GB','NL','SE','IT','ES','PL','JP'])[1 + floor(random() * 10)::int],
       {sim_time(":day - floor(random() * 900)")},
       jsonb_build_object(
         'tier', (ARRAY['free','basic','pro','enterprise'])[1 + floor(random() * 4)::int],
         'newsletter', random() < 0.4,
         'tags', to_jsonb(string_to_array({words("1 + floor(random() * 4)::int")}, ' ')),
         'address', jsonb_build_object('street', initcap({WORD} || ' ' || {WORD}) || ' ' || (1 + g % 200),
                                       'city', initcap({WORD}),
                                       'zip', lpad((g::bigint * 7919 % 99999)::text, 5, '0')),
         'logins', floor(random() * 500)::int)
FROM generate_series(:lo, :hi) AS g;
""",
    "orders": f"""INSERT INTO orders
SELECT g, 1 + floor(random() * :customers)::bigint,
       (ARRAY['new','paid','packed','shipped','delivered','returned'])[1 + floor(random() * 6)::int],
       round((random() * 800)::numeric, 2),
       {sim_time(":day - floor(random() * 600)")},
       {sim_time(":day")},
       CASE floor(random() * 3)::int WHEN 0 THEN jsonb_build_array({_ITEM})
         WHEN 1 THEN jsonb_build_array({_ITEM}, {_ITEM})
         ELSE jsonb_build_array({_ITEM}, {_ITEM}, {_ITEM}) END,
       CASE WHEN random() < 0.3 THEN {words("2 + floor(random() * 12)::int")} END
FROM generate_series(:lo, :hi) AS g;
""",
    "events": f"""INSERT INTO events
SELECT g, {sim_time(":day")},
       (ARRAY['login','logout','view','search','cart','checkout','error'])[1 + floor(random() * 7)::int],
       jsonb_build_object(
         'ip', '10.' || (g % 256) || '.' || floor(random() * 256) || '.' || floor(random() * 256),
         'path', '/' || {WORD} || '/' || {WORD},
         'ms', floor(random() * 2000)::int,
         'session', substr(md5(g::text || random()::text), 1, 16),
         'agent', (ARRAY['Mozilla/5.0 (X11; Linux x86_64)','Mozilla/5.0 (Macintosh)',
                         'curl/7.88.1','okhttp/4.9'])[1 + floor(random() * 4)::int])
FROM generate_series(:lo, :hi) AS g;
""",
    # 2-6 KiB of random bytes per row, as churn_sql's (sha512 of the id).
    "attachments": f"""INSERT INTO attachments
SELECT g, 1 + floor(random() * :orders)::bigint,
       {WORD} || '_' || {WORD} || (ARRAY['.pdf','.png','.jpg','.zip'])[1 + g % 4],
       (ARRAY['application/pdf','image/png','image/jpeg','application/zip'])[1 + g % 4],
       (SELECT string_agg(sha512(int8send(g::bigint * 1000 + i)), ''::bytea ORDER BY i)
        FROM generate_series(1, (32 + g % 65)::int) i)
FROM generate_series(:lo, :hi) AS g;
""",
}

INSERT_DOCUMENTS = r"""
INSERT INTO documents
SELECT g, 1 + (g::bigint * 7919) % :customers,
       'Report ' || g || ': ' || initcap(substr(pg_temp.para(hashint8(g)), 1, 40)),
       pg_temp.sim_time(:day - (g % 600)::int),
       (SELECT string_agg(p.t, E'\n\n' ORDER BY k)
        FROM generate_series(1, 20 + (hashint8(g) & 63)) k
        JOIN pg_temp.pool p ON p.id = hashint8(g::bigint * 1000 + k) & 4095),
       (SELECT jsonb_build_object('version', 1, 'lang', 'en', 'revision', 0,
                 'sections', jsonb_agg(jsonb_build_object(
                   'n', k, 'heading', initcap(substr(p.t, 1, 24)), 'text', p.t,
                   'refs', jsonb_build_array(hashint8(g + k) & 65535, k * 7)) ORDER BY k))
        FROM generate_series(1, 8 + (hashint8(g + 1) & 15)) k
        JOIN pg_temp.pool p ON p.id = hashint8(g::bigint * 1000 + 500 + k) & 4095)
FROM generate_series(:lo, :hi) AS g;
"""

INSERTS = dict(FAST_INSERTS, documents=INSERT_DOCUMENTS)

# The churn benchmark's rule for the documents too: rows chosen by random()
# with probability :rate; half of them get a sentence inserted at a random
# place of the body; scattered deletes; new documents at the end.
CHURN_DOCUMENTS = r"""
SELECT setseed(:day / 1000.0 + 0.5);
UPDATE documents SET updated_at = pg_temp.sim_time(:day),
  body = CASE WHEN random() < 0.5 THEN body ELSE
    overlay(body PLACING pg_temp.words(30) || ' ' FROM 1 + floor(random() * length(body))::int FOR 0) END,
  sections = jsonb_set(sections, '{revision}', to_jsonb(:day))
WHERE random() < :rate;
DELETE FROM documents WHERE random() < :rate / 4;
"""
GROWTH_DOCUMENTS = 0.2

VACUUM = "VACUUM customers, orders, events, attachments, documents;\nCHECKPOINT;\n"

COUNTS = ("SELECT string_agg(t || '=' || n, ' ' ORDER BY t) FROM ("
          + " UNION ALL ".join(f"SELECT '{t}' t, count(*) n FROM {t}" for t in TABLES) + ") c;")


def rows_for(dump_bytes: float) -> dict:
    """Rows per table for a dump of about `dump_bytes`."""
    mixed = {t: churn_sql.ROWS[t] * ROW_BYTES[t] for t in ("customers", "orders", "events")}
    rows = {t: SHARES["rows"] * dump_bytes * b / sum(mixed.values()) / ROW_BYTES[t]
            for t, b in mixed.items()}
    rows["attachments"] = SHARES["attachments"] * dump_bytes / ROW_BYTES["attachments"]
    rows["documents"] = SHARES["documents"] * dump_bytes / ROW_BYTES["documents"]
    return {t: max(100, int(n)) for t, n in rows.items()}


def schema() -> str:
    return "\n".join([churn_sql.HELPERS, SCHEMA])


def load_batches(rows: dict):
    """(table, lo, hi, SQL) of the initial load, one psql session each (each
    with the session helpers and the paragraph pool), in table order."""
    for table in TABLES:
        per = max(100, int(BATCH_BYTES / ROW_BYTES[table]))
        for lo in range(1, rows[table] + 1, per):
            hi = min(rows[table], lo + per - 1)
            sql = churn_sql._bind(INSERTS[table], lo=lo, hi=hi, day=0,
                                  customers=rows["customers"], orders=rows["orders"])
            yield table, lo, hi, "\n".join(
                [churn_sql.HELPERS, POOL, f"SELECT setseed({(lo % 997) / 1000.0});", sql])


def churn_day(day: int, rate: float) -> str:
    """One day of churn_sql's churn, and the same rule on the documents."""
    parts = [churn_sql.churn_day(day, rate), POOL,
             churn_sql._bind(CHURN_DOCUMENTS, day=day, rate=rate),
             f"SELECT max(id) + 1 AS lo, max(id) + greatest(1, (count(*) * "
             f"{GROWTH_DOCUMENTS * rate})::bigint) AS hi FROM documents \\gset",
             churn_sql._bind(INSERT_DOCUMENTS, day=day,
                             customers="(SELECT max(id) FROM customers)")]
    return "\n".join(parts)
