#!/usr/bin/env bash
# Debian packages of pgsnapman (docs/packages.md), made with cargo-deb from
# binaries that are already built:
#
#   ./deploy/packages.sh build [--release]  build the binaries (dev profile, or
#                                           release), then the three .deb files
#                                           into $CARGO_TARGET_DIR/debian/
#   ./deploy/packages.sh test               package the dev binaries test.sh
#                                           built, install them with dpkg,
#                                           start the coordinator and a worker
#                                           with the units' ExecStart lines as
#                                           the pgsnapman user, take a dump
#                                           with the installed pgsnap, then
#                                           remove and purge (needs root)
#
# `test` leaves the machine as it found it, also when it fails (trap).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/prereqs.sh

# cargo-deb is a build tool, not a dependency: pinned, installed when missing.
CARGO_DEB_VERSION=3.8.0
PACKAGES=(pgsnapman-cli pgsnapman-coordinator pgsnapman-worker)
# Deadlines of the test, in tenths of a second of polling.
READY_POLLS=1800 # coordinator: first start runs initdb of the embedded catalog
ONLINE_POLLS=600 # worker: enrollment and its first link

die() {
  echo "packages.sh: $*" >&2
  exit 1
}

# Installed next to the build cache (kept between CI runs like it), unless
# the pinned version is on PATH already (e.g. ~/.cargo/bin).
CARGO_DEB_ROOT="$(dirname "$CARGO_TARGET_DIR")/pgsnapman-tools/cargo-deb-$CARGO_DEB_VERSION"

ensure_cargo_deb() {
  cargo_deb_ok() { [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" = "$CARGO_DEB_VERSION" ]; }
  cargo_deb_ok && return 0
  export PATH="$CARGO_DEB_ROOT/bin:$PATH"
  cargo_deb_ok && return 0
  echo "== installing cargo-deb $CARGO_DEB_VERSION into $CARGO_DEB_ROOT (once; takes minutes)"
  # Its own temporary target dir: not the workspace's.
  env -u CARGO_TARGET_DIR cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet \
    --root "$CARGO_DEB_ROOT"
  cargo_deb_ok || die "cargo-deb $CARGO_DEB_VERSION is not usable after installing it"
}

# build_debs PROFILE_DIR CARGO_PROFILE OUT: man pages and completion scripts
# from the built binaries (the same clap definitions as --help), then one .deb
# per package.
build_debs() {
  local bin="$CARGO_TARGET_DIR/$1" profile=$2 out=$3
  for b in pgsnap pgsnapman-coordinator pgsnapman-worker; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing: run cargo build --workspace --bins first"
  done
  # Cargo-deb reads these through its target/release/ prefix (docs/packages.md).
  local gen="$bin/pgsnapman-deb"
  rm -rf "$gen"
  mkdir -p "$gen/man1" "$gen/man8" "$gen/completions"
  "$bin/pgsnap" man --dir "$gen/man1" >/dev/null
  "$bin/pgsnapman-coordinator" --man-dir "$gen/man8"
  "$bin/pgsnapman-worker" --man-dir "$gen/man8"
  gzip -9n "$gen"/man1/*.1 "$gen"/man8/*.8
  "$bin/pgsnap" completions bash >"$gen/completions/pgsnap.bash"
  "$bin/pgsnap" completions zsh >"$gen/completions/_pgsnap"
  "$bin/pgsnap" completions fish >"$gen/completions/pgsnap.fish"
  mkdir -p "$out"
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    # --profile dev makes cargo-deb warn that it is meant for releases; the
    # test packages the dev binaries on purpose (no time for a release build).
    cargo deb --package "$pkg" --no-build --profile "$profile" --strip --fast \
      --output "$out" --quiet --locked >/dev/null
  done
}

cmd_build() {
  local dir=debug profile=dev
  if [ "${1:-}" = "--release" ]; then dir=release profile=release; fi
  ensure_cargo_deb
  cargo build --workspace --bins --locked --profile "$profile"
  build_debs "$dir" "$profile" "$CARGO_TARGET_DIR/debian"
  ls -l "$CARGO_TARGET_DIR"/debian/*.deb
}

# ───────────────────────────── the test ─────────────────────────────

t_dir=""
t_user_created=0
t_pids=()
t_pg_bin=""
t_had_var_lib=1

t_cleanup() {
  local status=$?
  set +e
  for p in "${t_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${t_pids[@]}"; do wait "$p" 2>/dev/null; done
  if [ -n "$t_dir" ] && [ -d "$t_dir/source/data" ]; then
    runuser -u postgres -- env -C / "$t_pg_bin/pg_ctl" -D "$t_dir/source/data" -m immediate -w stop >/dev/null 2>&1
  fi
  if [ "$status" -ne 0 ] && [ -n "$t_dir" ]; then
    for log in "$t_dir"/*.log "$t_dir"/source/pg.log; do
      [ -f "$log" ] && { echo "--- tail of $log"; tail -n 30 "$log"; }
    done
  fi
  dpkg --purge "${PACKAGES[@]}" >/dev/null 2>&1
  # The test refused to start if these held anything: what is left is its own.
  if [ -n "$t_dir" ]; then
    rm -rf /etc/pgsnapman /var/lib/pgsnapman/coordinator /var/lib/pgsnapman/worker
    [ "$t_had_var_lib" -eq 0 ] && rm -rf /var/lib/pgsnapman
  fi
  if [ "$t_user_created" -eq 1 ] && getent passwd pgsnapman >/dev/null; then
    deluser --quiet --system pgsnapman >/dev/null 2>&1
    getent group pgsnapman >/dev/null && delgroup --quiet --system pgsnapman >/dev/null 2>&1
  fi
  [ -n "$t_dir" ] && rm -rf "$t_dir"
  exit "$status"
}

# unit_value UNIT KEY: the value of KEY= in an installed unit file.
unit_value() {
  local file
  file=$(dpkg -L "${1%.service}" | grep -E "/systemd/system/$1\$" | head -n 1)
  [ -n "$file" ] || die "$1 is not installed by ${1%.service}"
  sed -n "s/^$2=//p" "$file" | tail -n 1
}

# start_unit UNIT LOG: what systemd would do where it is not PID 1 here: the
# unit's EnvironmentFile (exported, never put in argv), then its exact
# ExecStart as its User, from /, in the background.
start_unit() {
  local unit=$1 log=$2 exec user envfile
  exec=$(unit_value "$unit" ExecStart)
  user=$(unit_value "$unit" User)
  envfile=$(unit_value "$unit" EnvironmentFile)
  envfile=${envfile#-}
  [ -n "$exec" ] && [ -n "$user" ] || die "$unit has no ExecStart or User"
  (
    set -a
    # shellcheck disable=SC1090
    [ -f "$envfile" ] && . "$envfile"
    set +a
    # shellcheck disable=SC2086 # ExecStart is split into words as systemd does
    exec setpriv --reuid="$user" --regid="$user" --init-groups env -C / $exec
  ) >"$log" 2>&1 &
  t_pids+=($!)
}

# poll N CMD…: run CMD every 0.1 s until it succeeds, at most N times.
poll() {
  local n=$1
  shift
  for _ in $(seq 1 "$n"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# expect_mode PATH MODE OWNER: the file's mode and owner:group.
expect_mode() {
  local got
  got=$(stat -c '%a %U:%G' "$1")
  [ "$got" = "$2 $3" ] || die "$1 is $got, expected $2 $3"
}

# free_port: a loopback port the kernel says is free. Probing fixed numbers
# with connect() misses ports in the ephemeral range that another process's
# outgoing connection holds (bind then fails with "Address already in use").
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cmd_test() {
  [ "$(id -u)" -eq 0 ] || die "the package test installs packages: run it as root"
  command -v dpkg >/dev/null || die "the package test needs dpkg (a Debian or Ubuntu machine)"
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q installed; then
      die "$pkg is installed on this machine: the test would replace and purge it"
    fi
  done
  [ ! -e /etc/pgsnapman ] || die "/etc/pgsnapman exists: the test would purge it"
  for d in coordinator worker; do
    [ ! -e "/var/lib/pgsnapman/$d" ] || die "/var/lib/pgsnapman/$d exists: the test would purge it"
  done
  getent passwd pgsnapman >/dev/null || t_user_created=1
  [ -d /var/lib/pgsnapman ] || t_had_var_lib=0
  t_pg_bin="${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
  [ -x "$t_pg_bin/initdb" ] || die "no PostgreSQL server binaries (set PG_BINDIR)"

  t_dir=$(mktemp -d /tmp/pgsnapman-packages.XXXXXX)
  chmod 755 "$t_dir"
  trap t_cleanup EXIT
  # A signal ends the script through exit, so that the EXIT trap cleans up.
  trap 'exit 130' INT TERM
  ensure_cargo_deb

  echo "== packages: building the .deb files from the dev binaries"
  build_debs debug dev "$t_dir/debs"
  local debs=("$t_dir"/debs/*.deb)
  [ "${#debs[@]}" -eq 3 ] || die "expected 3 packages, got ${debs[*]}"

  echo "== packages: dpkg -i (twice: the maintainer scripts are idempotent)"
  dpkg -i "${debs[@]}" >"$t_dir/dpkg.log" 2>&1 || die "dpkg -i failed: $(tail -n 5 "$t_dir/dpkg.log")"
  dpkg -i "${debs[@]}" >>"$t_dir/dpkg.log" 2>&1 || die "dpkg -i again failed: $(tail -n 5 "$t_dir/dpkg.log")"
  t_check_installed

  echo "== packages: coordinator and worker from their units' ExecStart lines"
  local port src_port
  port=$(free_port)
  local coord_dir=/var/lib/pgsnapman/coordinator
  cat >/etc/pgsnapman/coordinator.env <<ENV
PGSNAPMAN_SERVER__LISTEN=127.0.0.1:$port
PGSNAPMAN_SERVER__READY_FILE=$coord_dir/ready
ENV
  start_unit pgsnapman-coordinator.service "$t_dir/coordinator.log"
  poll "$READY_POLLS" test -s "$coord_dir/ready" || die "the coordinator did not become ready"
  export PGSNAPMAN_COORDINATOR="https://127.0.0.1:$port"
  export PGSNAPMAN_CA_FILE="$coord_dir/pki/ca.crt"
  export PGSNAPMAN_TOKEN_FILE="$coord_dir/admin.token"
  local pgsnap=/usr/bin/pgsnap enroll_token
  enroll_token=$("$pgsnap" --output json worker register pkg-worker |
    sed -n 's/.*"enrollment_token": *"\([^"]*\)".*/\1/p')
  [ -n "$enroll_token" ] || die "no enrollment token from the installed pgsnap"
  # The token goes to the worker through its EnvironmentFile, never argv.
  (
    umask 077
    cat >/etc/pgsnapman/worker.env <<ENV
PGSNAPMAN_WORKER__NAME=pkg-worker
PGSNAPMAN_COORDINATOR__URL=$PGSNAPMAN_COORDINATOR
PGSNAPMAN_COORDINATOR__CA_FILE=$PGSNAPMAN_CA_FILE
PGSNAPMAN_COORDINATOR__ENROLL_TOKEN=$enroll_token
ENV
  )
  start_unit pgsnapman-worker.service "$t_dir/worker.log"
  poll "$ONLINE_POLLS" t_worker_online || die "the worker did not come online"
  expect_mode /var/lib/pgsnapman/worker/identity/worker.key 600 pgsnapman:pgsnapman

  echo "== packages: a dump through the installed pgsnap"
  src_port=$(free_port)
  mkdir -p "$t_dir/source"
  chown postgres: "$t_dir/source"
  local as_pg=(runuser -u postgres -- env -C /)
  "${as_pg[@]}" "$t_pg_bin/initdb" -D "$t_dir/source/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
  "${as_pg[@]}" "$t_pg_bin/pg_ctl" -D "$t_dir/source/data" -l "$t_dir/source/pg.log" -w \
    -o "-p $src_port -k $t_dir/source -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  "$t_pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$src_port" -U postgres -d postgres \
    -c "CREATE DATABASE shop" -c "SELECT 1" >/dev/null
  "$t_pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$src_port" -U postgres -d shop \
    -c "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g" >/dev/null
  local instance job
  instance=$("$pgsnap" --output json instance add --name pkg-source --host 127.0.0.1 --port "$src_port" \
    --user postgres --worker pkg-worker | sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | head -n 1)
  job=$("$pgsnap" --output json job add --instance "$instance" --database shop --cron "0 2 * * *" |
    sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | head -n 1)
  [ -n "$job" ] || die "no job id from pgsnap job add"
  "$pgsnap" dump now "$job" --wait >"$t_dir/dump.log" 2>&1 || die "pgsnap dump now failed: $(tail -n 3 "$t_dir/dump.log")"
  "$pgsnap" --output json catalog list --job "$job" | grep -q '"id"' || die "the dump is not in the catalog"
  # The pack store is the pgsnapman user's, and private.
  [ -z "$(find /var/lib/pgsnapman/worker /var/lib/pgsnapman/coordinator ! -user pgsnapman -print -quit)" ] ||
    die "files under /var/lib/pgsnapman not owned by pgsnapman"

  echo "== packages: SIGTERM, exit status 0"
  local p
  for p in "${t_pids[@]}"; do kill -TERM "$p"; done
  for p in "${t_pids[@]}"; do wait "$p" || die "a service exited with $? after SIGTERM"; done
  t_pids=()

  echo "== packages: remove keeps configuration and state, purge deletes them"
  dpkg --remove "${PACKAGES[@]}" >>"$t_dir/dpkg.log" 2>&1 || die "dpkg --remove failed"
  for f in /usr/bin/pgsnap /usr/bin/pgsnapman-coordinator /usr/bin/pgsnapman-worker; do
    [ ! -e "$f" ] || die "$f is still there after dpkg --remove"
  done
  [ -f /etc/pgsnapman/worker.toml ] && [ -d /var/lib/pgsnapman/worker ] ||
    die "dpkg --remove deleted configuration or state"
  dpkg --purge "${PACKAGES[@]}" >>"$t_dir/dpkg.log" 2>&1 || die "dpkg --purge failed"
  [ ! -e /etc/pgsnapman ] || die "/etc/pgsnapman is still there after purge: $(ls -A /etc/pgsnapman)"
  for d in coordinator worker; do
    [ ! -e "/var/lib/pgsnapman/$d" ] || die "/var/lib/pgsnapman/$d is still there after purge"
  done
  if [ "$t_had_var_lib" -eq 0 ] && [ -e /var/lib/pgsnapman ]; then
    die "/var/lib/pgsnapman is still there after purge"
  fi
  if dpkg-query -W "${PACKAGES[@]}" 2>/dev/null | grep -q .; then
    die "dpkg still knows a package: $(dpkg-query -W "${PACKAGES[@]}" 2>/dev/null)"
  fi
  echo "== packages: ok"
}

t_worker_online() {
  /usr/bin/pgsnap --output json worker show pkg-worker | grep -q '"connected": *true'
}

# What the packages put on the machine, with the owners and modes of
# docs/packages.md.
t_check_installed() {
  getent passwd pgsnapman | grep -q ':/var/lib/pgsnapman:/usr/sbin/nologin$' ||
    die "no pgsnapman system user with home /var/lib/pgsnapman: $(getent passwd pgsnapman)"
  expect_mode /var/lib/pgsnapman/coordinator 700 pgsnapman:pgsnapman
  expect_mode /var/lib/pgsnapman/worker 700 pgsnapman:pgsnapman
  expect_mode /etc/pgsnapman/coordinator.toml 644 root:root
  expect_mode /etc/pgsnapman/worker.env 600 root:root
  local conffiles
  conffiles=$(dpkg-query -W -f='${Conffiles}\n' pgsnapman-coordinator pgsnapman-worker)
  for f in coordinator.toml coordinator.env worker.toml worker.env; do
    grep -q "/etc/pgsnapman/$f " <<<"$conffiles" || die "/etc/pgsnapman/$f is not a conffile"
  done
  for unit in pgsnapman-coordinator.service pgsnapman-worker.service; do
    [ "$(unit_value "$unit" User)" = pgsnapman ] || die "$unit does not run as pgsnapman"
    unit_value "$unit" ExecStart | grep -q '^/usr/bin/' || die "$unit does not start /usr/bin/…"
    # Enabled on install (deb-systemd-helper), also where systemd is not running.
    [ -L "/etc/systemd/system/multi-user.target.wants/$unit" ] || die "$unit is not enabled"
  done
  for page in man1/pgsnap.1.gz man1/pgsnap-worker-register.1.gz man8/pgsnapman-coordinator.8.gz \
    man8/pgsnapman-worker.8.gz man8/pgsnapman-worker-enroll.8.gz; do
    [ -f "/usr/share/man/$page" ] || die "/usr/share/man/$page is not installed"
  done
  if command -v man >/dev/null; then
    man -P cat pgsnapman-worker 2>/dev/null | grep -q -- '--config' || die "man pgsnapman-worker does not render"
  fi
  bash -n /usr/share/bash-completion/completions/pgsnap || die "the bash completion does not parse"
  [ -f /usr/share/zsh/vendor-completions/_pgsnap ] && [ -f /usr/share/fish/vendor_completions.d/pgsnap.fish ] ||
    die "the zsh or fish completion is not installed"
  /usr/bin/pgsnapman-coordinator --version | grep -q "^pgsnapman-coordinator " || die "pgsnapman-coordinator --version"
}

case "${1:-}" in
build)
  shift
  cmd_build "$@"
  ;;
test) cmd_test ;;
*) die "usage: deploy/packages.sh build [--release] | test" ;;
esac
