"""SQL of the "wide" shape of the ingest benchmark (tests/bench/ingest.py):
the same interface as churn_sql.py (initial_load, churn_day, VACUUM, COUNTS,
MB_AT_SCALE_1), a differently shaped database. Deterministic (setseed, no
now()).

Sizes at scale 1.0 (pg_dump -Fc -Z0, PostgreSQL 15): about 300 MB — a wide
table (60 columns of ints, short texts, numerics, timestamps) ~30%, 400 small
tables ~1%, large text documents (20-60 kB of words, TOASTed) ~35%, large
random bytea (32-256 kB, hex in COPY: half compressible, never dedupable)
~34%.
"""

import churn_sql

# Calibrated on PostgreSQL 15 (see docs/benchmarks.md, "Ingest off the
# critical path"); the benchmark reports the real dump size every day.
MB_AT_SCALE_1 = 322
ROWS = {"wide": 120_000, "docs": 2_500, "blobs": 400}
SMALL_TABLES = 400
SMALL_ROWS = 100

HELPERS = churn_sql.HELPERS

_WIDE_COLS = (
    [f"c{i:02} int NOT NULL" for i in range(1, 21)]
    + [f"t{i:02} text NOT NULL" for i in range(1, 21)]
    + [f"n{i:02} numeric(14,4) NOT NULL" for i in range(1, 11)]
    + [f"d{i:02} timestamptz NOT NULL" for i in range(1, 10)]
)
_WIDE_VALUES = (
    [f"(g * {7 + i} + floor(random() * 1000))::int" for i in range(1, 21)]
    + [f"substr(md5(g::text || '{i}' || random()::text), 1, {4 + i})" for i in range(1, 21)]
    + [f"round((random() * {10 ** (i % 6 + 1)})::numeric, 4)" for i in range(1, 11)]
    + ["pg_temp.sim_time(:day - floor(random() * 900)::int)" for _ in range(1, 10)]
)

SCHEMA = (
    "CREATE TABLE wide (id bigint PRIMARY KEY, " + ", ".join(_WIDE_COLS) + ");\n"
    "CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL);\n"
    "CREATE TABLE blobs (id bigint PRIMARY KEY, name text NOT NULL, content bytea NOT NULL);\n"
    f"""DO $$ BEGIN FOR i IN 1..{SMALL_TABLES} LOOP
  EXECUTE format('CREATE TABLE small_%s (id int PRIMARY KEY, name text NOT NULL,
    value numeric(12,2) NOT NULL, note text)', lpad(i::text, 3, '0'));
END LOOP; END $$;
"""
)

INSERTS = {
    "wide": "INSERT INTO wide SELECT g, " + ", ".join(_WIDE_VALUES)
    + " FROM generate_series(:lo, :hi) AS g;\n",
    "docs": """INSERT INTO docs
SELECT g, initcap(pg_temp.words(5)), pg_temp.words(2500 + (g::bigint * 7919 % 5000)::int)
FROM generate_series(:lo, :hi) AS g;
""",
    "blobs": """INSERT INTO blobs
SELECT g, 'blob-' || g || '.bin', pg_temp.noise(1024 + (g::bigint * 104729 % 7169)::int, g)
FROM generate_series(:lo, :hi) AS g;
""",
}

SMALL_FILL = f"""DO $$ BEGIN FOR i IN 1..{SMALL_TABLES} LOOP
  EXECUTE format('INSERT INTO small_%s SELECT g, pg_temp.words(2),
    round((random() * 1000)::numeric, 2), CASE WHEN g %% 3 = 0 THEN pg_temp.words(6) END
    FROM generate_series(1, {SMALL_ROWS}) g', lpad(i::text, 3, '0'));
END LOOP; END $$;
"""

# One day: scattered updates in every table, a sentence inserted into 2% of
# the documents, new random content for 1% of the blobs, a little growth.
CHURN = f"""
SELECT setseed(:day / 1000.0);
UPDATE wide SET c01 = c01 + 1, t05 = substr(md5(id::text || ':salt'), 1, 9),
  n03 = round((random() * 1000)::numeric, 4), d01 = pg_temp.sim_time(:day)
WHERE random() < :rate;
DELETE FROM wide WHERE random() < :rate / 4;
UPDATE docs SET body = overlay(body PLACING pg_temp.words(30) || ' '
  FROM 1 + floor(random() * length(body))::int FOR 0)
WHERE random() < :rate * 2;
UPDATE blobs SET content = pg_temp.noise(1024 + (id::bigint * 104729 % 7169)::int, id + :salt)
WHERE random() < :rate;
DO $$ BEGIN FOR i IN 1..{SMALL_TABLES} LOOP
  EXECUTE format('UPDATE small_%s SET value = value + 1 WHERE random() < 0.05',
                 lpad(i::text, 3, '0'));
END LOOP; END $$;
"""

VACUUM = "VACUUM;\nCHECKPOINT;\n"

COUNTS = """SELECT 'wide=' || (SELECT count(*) FROM wide) || ' docs=' || (SELECT count(*) FROM docs)
  || ' blobs=' || (SELECT count(*) FROM blobs);"""

GROWTH = {"wide": 0.5, "docs": 0.2, "blobs": 0.2}


def initial_load(scale: float) -> str:
    """The SQL that creates and fills the database at `scale` (1.0 ≈ 300 MB)."""
    rows = {t: max(20, int(n * scale)) for t, n in ROWS.items()}
    parts = [HELPERS, "SELECT setseed(0.42);", SCHEMA]
    for table, sql in INSERTS.items():
        parts.append(churn_sql._bind(sql, lo=1, hi=rows[table], day=0))
    parts += [SMALL_FILL, "ANALYZE;"]
    return "\n".join(parts)


def churn_day(day: int, rate: float) -> str:
    """The SQL of simulated day `day` (2, 3, …)."""
    parts = [HELPERS, churn_sql._bind(CHURN, day=day, rate=rate, salt=day * 1_000_003)]
    for table, share in GROWTH.items():
        parts.append(
            f"SELECT max(id) + 1 AS lo, max(id) + greatest(1, (count(*) * {share * rate})"
            f"::bigint) AS hi FROM {table} \\gset")
        parts.append(churn_sql._bind(INSERTS[table], day=day))
    return "\n".join(parts)
