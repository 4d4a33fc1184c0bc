#!/usr/bin/env bash
# Quickstart: installs what is missing, builds pgsnapman, starts the embedded
# default (a coordinator that creates its own local catalog cluster, and one
# worker) on loopback, creates a throwaway source PostgreSQL server with a
# sample database, registers it, takes a dump and prints the catalog.
#
#   ./deploy/quickstart.sh          keep everything running until Ctrl-C
#   ./deploy/quickstart.sh --once   stop everything after showing the catalog
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/prereqs.sh

once=0
[ "${1:-}" = "--once" ] && once=1

echo "== building pgsnapman (first build takes a while)"
cargo build --workspace --bins --locked
bin="$CARGO_TARGET_DIR/debug"
export PATH="$bin:$PATH"

# Run as root, the Postgres servers run as the postgres user, which cannot
# enter a clone in root's 0700 home: keep the state where it can.
qs_default="$PWD/pgsnapman-data/quickstart"
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$PWD"; then
  qs_default=/var/lib/pgsnapman/quickstart
fi
qs="${PGSNAPMAN_QUICKSTART_DIR:-$qs_default}"
port="${PGSNAPMAN_QUICKSTART_PORT:-7431}"
echo "== quickstart state in $qs (removed and recreated)"
rm -rf "$qs"
mkdir -p "$qs"
chmod 755 "$qs"

# In use: something listens on it, or a socket holds it as its local port
# (an outgoing connection in the ephemeral range, where 55432 lies: connect()
# does not see those, and the server's bind would fail).
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null ||
    { command -v ss >/dev/null && [ -n "$(ss -Htan "sport = :$1")" ]; }
}
if port_busy "$port"; then
  echo "pgsnapman: port $port is in use; set PGSNAPMAN_QUICKSTART_PORT to a free one" >&2
  exit 1
fi
export PGSNAPMAN_COORDINATOR="https://127.0.0.1:$port"
# The coordinator creates its own CA on first start; pgsnap and the worker
# verify its certificate against it.
export PGSNAPMAN_CA_FILE="$qs/coordinator/pki/ca.crt"

# Server and client binaries of one version: the newest packaged one, else PATH.
pg_bin="${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
[ -n "$pg_bin" ] && [ -x "$pg_bin/psql" ] || pg_bin="$(dirname "$(command -v psql)")"
as_pg=()
# `env -C /`: initdb and postgres go back to their working directory.
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres -- env -C /); fi

pids=()
cleanup() {
  echo "== stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -d "$qs/source/data" ] && "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$qs/source/data" -m fast -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== starting the coordinator (embedded catalog under $qs/coordinator)"
PGSNAPMAN_SERVER__LISTEN="127.0.0.1:$port" \
PGSNAPMAN_SERVER__READY_FILE="$qs/coordinator.ready" \
PGSNAPMAN_COORDINATOR__DATA_DIR="$qs/coordinator" \
  pgsnapman-coordinator >"$qs/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  [ -s "$qs/coordinator.ready" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { tail -n 30 "$qs/coordinator.log"; exit 1; }
  sleep 0.2
done
[ -s "$qs/coordinator.ready" ] || { tail -n 30 "$qs/coordinator.log"; echo "coordinator did not start" >&2; exit 1; }
# On first start the coordinator writes an admin token (0600) for pgsnap.
export PGSNAPMAN_TOKEN_FILE="$qs/coordinator/admin.token"

echo "== registering and starting a worker (it enrolls with a one-time token: docs/security-enroll.md)"
# The token goes to the worker through its environment, never argv.
enroll_token=$(pgsnap --output json worker register quickstart-worker \
  | sed -n 's/.*"enrollment_token": *"\([^"]*\)".*/\1/p')
[ -n "$enroll_token" ] || { echo "no enrollment token from pgsnap worker register" >&2; exit 1; }
PGSNAPMAN_COORDINATOR__ENROLL_TOKEN="$enroll_token" \
PGSNAPMAN_WORKER__NAME=quickstart-worker \
PGSNAPMAN_WORKER__DATA_DIR="$qs/worker" \
PGSNAPMAN_COORDINATOR__URL="$PGSNAPMAN_COORDINATOR" \
PGSNAPMAN_COORDINATOR__CA_FILE="$PGSNAPMAN_CA_FILE" \
  pgsnapman-worker >"$qs/worker.log" 2>&1 &
pids+=($!)

echo "== creating a throwaway source server with a sample database"
src_port=55432
while port_busy "$src_port"; do src_port=$((src_port + 1)); done
mkdir -p "$qs/source"
[ ${#as_pg[@]} -gt 0 ] && chown postgres: "$qs/source"
"${as_pg[@]}" "$pg_bin/initdb" -D "$qs/source/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$qs/source/data" -l "$qs/source/pg.log" -w \
  -o "-p $src_port -k $qs/source -c listen_addresses=127.0.0.1" start >/dev/null
psql() { "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$src_port" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE shop"
psql -d shop <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, joined timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, total numeric(10,2), doc jsonb);
INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 1000) g;
INSERT INTO orders (customer, total, doc)
  SELECT 1 + g % 1000, (g % 500) * 1.25, jsonb_build_object('items', g % 7, 'note', md5(g::text))
  FROM generate_series(1, 50000) g;
SQL

echo "== registering the source server and a nightly dump job"
instance=$(pgsnap --output json instance add --name quickstart-source --host 127.0.0.1 --port "$src_port" \
  --user postgres --worker quickstart-worker | sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | head -n 1)
job=$(pgsnap --output json job add --instance "$instance" --database shop --cron "0 2 * * *" \
  | sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | head -n 1)
pgsnap job list

echo "== taking a dump now"
pgsnap dump now "$job" --wait
echo "== a second dump of the unchanged database: its bytes are already in the store"
pgsnap dump now "$job" --wait >/dev/null
echo "== the catalog (SIZE: what pg_dump wrote; STORED: what each dump added to the store)"
pgsnap catalog list
echo "== the worker's store"
# The worker reports its store's figures a moment after each dump.
for _ in $(seq 1 50); do
  pgsnap --output json store stats | grep -q '"dumps": 2' && break
  sleep 0.2
done
pgsnap store stats

echo "== restoring the first dump into a new database, shop_copy, on the same server"
dump=$(pgsnap --output json catalog list --job "$job" | sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | tail -n 1)
pgsnap restore now --dump "$dump" --to-instance "$instance" --to-database shop_copy --wait
echo "rows in shop_copy.orders: $(psql -A -t -d shop_copy -c 'SELECT count(*) FROM orders')"

if [ "$once" -eq 1 ]; then
  echo "== quickstart done"
  exit 0
fi
cat <<TXT

pgsnapman is running:  coordinator $PGSNAPMAN_COORDINATOR, worker quickstart-worker,
                       source server 127.0.0.1:$src_port (database "shop").
In another shell:      export PATH="$bin:\$PATH" PGSNAPMAN_COORDINATOR=$PGSNAPMAN_COORDINATOR
                       export PGSNAPMAN_CA_FILE=$PGSNAPMAN_CA_FILE
                       export PGSNAPMAN_TOKEN_FILE=$PGSNAPMAN_TOKEN_FILE
                       pgsnap worker list; pgsnap dump now $job --wait; pgsnap catalog list
Logs:                  $qs/coordinator.log, $qs/worker.log
Press Ctrl-C to stop everything.
TXT
wait "${pids[0]}"
