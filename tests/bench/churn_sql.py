"""SQL of the churn benchmark: a mixed schema, its initial content and one
simulated day of churn. Deterministic: every random choice follows
setseed(), autovacuum is off on the benchmark's cluster, and times are
simulated (a fixed epoch plus the day number), never now().

Sizes at scale 1.0 (pg_dump -Fc -Z0): about 300 MB — customers 16%, orders
54%, events 19%, attachments 11% (random bytes, hex in COPY: half
compressible, none dedupable).
"""

# Rows at scale 1.0, and the size of its uncompressed custom-format dump
# (calibrated on PostgreSQL 15: 30.6 MB at scale 0.1).
MB_AT_SCALE_1 = 306
ROWS = {
    "customers": 200_000,
    "orders": 610_000,
    "events": 345_000,
    "attachments": 4_100,
}

# Session-local helpers (pg_temp): nothing but the tables lands in the dump.
HELPERS = r"""
SET max_parallel_workers_per_gather = 0;
CREATE FUNCTION pg_temp.words(n int) RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
  FROM (SELECT ARRAY['alpha','amber','anchor','apple','arrow','autumn','badge',
    'basket','beacon','berry','blade','bloom','border','branch','breeze','bridge',
    'bronze','button','cable','candle','canvas','carbon','castle','cedar','chalk',
    'cherry','circle','cloud','clover','cobalt','copper','coral','cotton','crane',
    'crystal','delta','desert','diamond','dune','eagle','echo','ember','falcon',
    'feather','fern','field','flint','forest','fossil','garden','garnet','glacier',
    'granite','harbor','hazel','horizon','iron','island','ivory','jade','jasper',
    'kernel','lagoon','lantern','lemon','linen','lotus','maple','marble','meadow',
    'mirror','monsoon','mosaic','nectar','nickel','oasis','ocean','olive','onyx',
    'orbit','orchid','pepper','pebble','pine','planet','plaza','prairie','quartz',
    'radar','raven','reef','ribbon','river','rocket','saffron','salt','shadow',
    'silver','slate','spruce','summit','thunder','timber','topaz','tulip','valley',
    'velvet','willow','winter','zephyr','shipped','pending','returned','gift',
    'express','standard','priority','warehouse','invoice','refund','customer',
    'order','delivery','address','payment','discount','voucher','subscription']
    AS w) v, generate_series(1, greatest(n, 1)) g
$$;
CREATE FUNCTION pg_temp.noise(n_hashes int, salt bigint) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
  SELECT string_agg(sha256(int8send(salt * 1000 + i)), ''::bytea ORDER BY i)
  FROM generate_series(1, n_hashes) i
$$;
CREATE FUNCTION pg_temp.sim_time(day int) RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
  SELECT timestamptz '2024-03-01 00:00:00+00' + make_interval(days => day)
         + random() * interval '1 day'
$$;
CREATE FUNCTION pg_temp.items() RETURNS jsonb LANGUAGE sql VOLATILE AS $$
  SELECT jsonb_agg(jsonb_build_object(
           'sku', 'SKU-' || lpad((floor(random() * 90000) + 10000)::text, 6, '0'),
           'qty', 1 + floor(random() * 5)::int,
           'price', round((random() * 200)::numeric, 2),
           'name', pg_temp.words(3)))
  FROM generate_series(1, 1 + floor(random() * 3)::int)
$$;
"""

SCHEMA = r"""
CREATE TABLE customers (
  id         bigint PRIMARY KEY,
  name       text NOT NULL,
  email      text NOT NULL,
  country    char(2) NOT NULL,
  created_at timestamptz NOT NULL,
  profile    jsonb NOT NULL
);
CREATE TABLE orders (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL,
  status      text NOT NULL,
  total       numeric(12,2) NOT NULL,
  placed_at   timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL,
  items       jsonb NOT NULL,
  note        text
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE TABLE events (
  id      bigint PRIMARY KEY,
  at      timestamptz NOT NULL,
  kind    text NOT NULL,
  payload jsonb NOT NULL
);
CREATE INDEX events_at_idx ON events (at);
CREATE TABLE attachments (
  id       bigint PRIMARY KEY,
  order_id bigint NOT NULL,
  filename text NOT NULL,
  mime     text NOT NULL,
  content  bytea NOT NULL
);
"""

# Row generators shared by the initial load and the daily inserts. Each is an
# INSERT … SELECT over generate_series(:lo, :hi) AS g with the simulated
# day in :day (psql variables).
INSERT_CUSTOMERS = r"""
INSERT INTO customers
SELECT g, initcap(pg_temp.words(2)),
       lower(replace(pg_temp.words(1), ' ', '')) || g || '@example.' ||
         (ARRAY['com','net','org','de','fr'])[1 + g % 5],
       (ARRAY['DE','FR','US','GB','NL','SE','IT','ES','PL','JP'])[1 + floor(random() * 10)::int],
       pg_temp.sim_time(:day - floor(random() * 900)::int),
       jsonb_build_object(
         'tier', (ARRAY['free','basic','pro','enterprise'])[1 + floor(random() * 4)::int],
         'newsletter', random() < 0.4,
         'tags', to_jsonb(string_to_array(pg_temp.words(1 + floor(random() * 4)::int), ' ')),
         'address', jsonb_build_object('street', initcap(pg_temp.words(2)) || ' ' || (1 + g % 200),
                                       'city', initcap(pg_temp.words(1)),
                                       'zip', lpad((g::bigint * 7919 % 99999)::text, 5, '0')),
         'logins', floor(random() * 500)::int)
FROM generate_series(:lo, :hi) AS g;
"""

INSERT_ORDERS = r"""
INSERT INTO orders
SELECT g, 1 + floor(random() * :customers)::bigint,
       (ARRAY['new','paid','packed','shipped','delivered','returned'])[1 + floor(random() * 6)::int],
       round((random() * 800)::numeric, 2),
       pg_temp.sim_time(:day - floor(random() * 600)::int),
       pg_temp.sim_time(:day),
       pg_temp.items(),
       CASE WHEN random() < 0.3 THEN pg_temp.words(2 + floor(random() * 12)::int) END
FROM generate_series(:lo, :hi) AS g;
"""

INSERT_EVENTS = r"""
INSERT INTO events
SELECT g, pg_temp.sim_time(:day),
       (ARRAY['login','logout','view','search','cart','checkout','error'])[1 + floor(random() * 7)::int],
       jsonb_build_object(
         'ip', '10.' || (g % 256) || '.' || floor(random() * 256) || '.' || floor(random() * 256),
         'path', '/' || replace(pg_temp.words(2), ' ', '/'),
         'ms', floor(random() * 2000)::int,
         'session', substr(md5(g::text || random()::text), 1, 16),
         'agent', (ARRAY['Mozilla/5.0 (X11; Linux x86_64)','Mozilla/5.0 (Macintosh)',
                         'curl/7.88.1','okhttp/4.9'])[1 + floor(random() * 4)::int])
FROM generate_series(:lo, :hi) AS g;
"""

# 2–6 KiB of random bytes per row (sha256 of the id: deterministic).
INSERT_ATTACHMENTS = r"""
INSERT INTO attachments
SELECT g, 1 + floor(random() * :orders)::bigint,
       replace(pg_temp.words(2), ' ', '_') || (ARRAY['.pdf','.png','.jpg','.zip'])[1 + g % 4],
       (ARRAY['application/pdf','image/png','image/jpeg','application/zip'])[1 + g % 4],
       pg_temp.noise(64 + (g % 129)::int, g)
FROM generate_series(:lo, :hi) AS g;
"""

INSERTS = {
    "customers": INSERT_CUSTOMERS,
    "orders": INSERT_ORDERS,
    "events": INSERT_EVENTS,
    "attachments": INSERT_ATTACHMENTS,
}

# One day of churn, psql variables: :day, :rate (fraction of rows updated,
# e.g. 0.01), :salt (a bigint unique to the day). Updates pick rows with
# random() over the whole table (scattered, never a contiguous range); inserts
# take new ids at the end; deletes are scattered (orders, customers) or the
# oldest rows (events, a retention job); VACUUM (plain) makes the freed space
# reusable, so later updates and inserts move rows physically.
CHURN = r"""
SELECT setseed(:day / 1000.0);
UPDATE customers SET
  email = lower(replace(pg_temp.words(1), ' ', '')) || id || '@example.org',
  profile = jsonb_set(profile, '{logins}', to_jsonb((profile->>'logins')::int + 1))
WHERE random() < :rate;
UPDATE orders SET
  status = (ARRAY['paid','packed','shipped','delivered','returned'])[1 + floor(random() * 5)::int],
  updated_at = pg_temp.sim_time(:day),
  total = round(total * (0.9 + random() * 0.2)::numeric, 2),
  items = CASE WHEN random() < 0.5 THEN pg_temp.items() ELSE items END
WHERE random() < :rate;
UPDATE events SET payload = payload || jsonb_build_object('reviewed', true)
WHERE random() < :rate;
UPDATE attachments SET content = pg_temp.noise(64 + (id % 129)::int, id + :salt)
WHERE random() < :rate;
DELETE FROM orders WHERE random() < :rate / 4;
DELETE FROM customers WHERE random() < :rate / 10;
DELETE FROM events WHERE id < (SELECT min(id) FROM events) + (SELECT count(*) FROM events) * :rate * 2;
"""

VACUUM = "VACUUM customers, orders, events, attachments;\nCHECKPOINT;\n"

COUNTS = """SELECT string_agg(t || '=' || n, ' ' ORDER BY t) FROM (
  SELECT 'customers' t, count(*) n FROM customers UNION ALL
  SELECT 'orders', count(*) FROM orders UNION ALL
  SELECT 'events', count(*) FROM events UNION ALL
  SELECT 'attachments', count(*) FROM attachments) c;"""

# A fingerprint of the content, to check that restores are complete.
FINGERPRINT = """SELECT string_agg(t || ':' || n || ':' || h, ' ' ORDER BY t) FROM (
  SELECT 'customers' t, count(*) n, sum(hashtext(x::text)::bigint) h FROM customers x UNION ALL
  SELECT 'orders', count(*), sum(hashtext(x::text)::bigint) FROM orders x UNION ALL
  SELECT 'events', count(*), sum(hashtext(x::text)::bigint) FROM events x UNION ALL
  SELECT 'attachments', count(*), sum(hashtext(x::text)::bigint) FROM attachments x) c;"""


def initial_load(scale: float) -> str:
    """The SQL that creates and fills the database at `scale` (1.0 ≈ 300 MB)."""
    rows = {t: max(100, int(n * scale)) for t, n in ROWS.items()}
    parts = [HELPERS, "SELECT setseed(0.42);", SCHEMA]
    for table, sql in INSERTS.items():
        parts.append(_bind(sql, lo=1, hi=rows[table], day=0,
                           customers=rows["customers"], orders=rows["orders"]))
    parts.append("ANALYZE;")
    return "\n".join(parts)


# New rows per day as a fraction of the table, relative to the update rate.
GROWTH = {"customers": 0.1, "orders": 0.5, "events": 2.5, "attachments": 0.2}


def churn_day(day: int, rate: float) -> str:
    """The SQL of simulated day `day` (2, 3, …): updates, deletes, inserts."""
    parts = [HELPERS, _bind(CHURN, day=day, rate=rate, salt=day * 1_000_003)]
    for table, share in GROWTH.items():
        # New ids continue after the table's largest; psql's \gset sets :lo, :hi.
        parts.append(
            f"SELECT max(id) + 1 AS lo, max(id) + greatest(1, (count(*) * {share * rate})"
            f"::bigint) AS hi FROM {table} \\gset")
        parts.append(_bind(INSERTS[table], day=day,
                           customers="(SELECT max(id) FROM customers)",
                           orders="(SELECT max(id) FROM orders)"))
    return "\n".join(parts)


def _bind(sql: str, **values) -> str:
    """Replaces :name placeholders by values (those not given are left to psql)."""
    for name in sorted(values, key=len, reverse=True):
        sql = sql.replace(f":{name}", str(values[name]))
    return sql
