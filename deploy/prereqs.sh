#!/usr/bin/env bash
# Installs what pgsnapman needs to build and run on a Debian/Ubuntu machine,
# only when it is missing: a C toolchain, PostgreSQL server and client
# binaries (initdb, pg_ctl, pg_dump, pg_restore, psql, contrib), and libclang
# for RocksDB's bindings. Sourced by quickstart.sh and test.sh.
set -euo pipefail

pgsnapman_need_pkgs=()
pgsnapman_have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }
pgsnapman_have_pg || pgsnapman_need_pkgs+=(postgresql postgresql-contrib)
command -v cc >/dev/null || pgsnapman_need_pkgs+=(build-essential)
pgsnapman_have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] || dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null | grep -q "ok installed"
}
pgsnapman_have_libclang || pgsnapman_need_pkgs+=(libclang-dev)

if ((${#pgsnapman_need_pkgs[@]})); then
  echo "pgsnapman: installing ${pgsnapman_need_pkgs[*]}" >&2
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "pgsnapman: need root or sudo to install ${pgsnapman_need_pkgs[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${pgsnapman_need_pkgs[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "pgsnapman: a Rust toolchain is needed (https://rustup.rs): install it and run this again" >&2
    exit 1
  fi
fi

# Debian's postgresql package does not put the server binaries on PATH.
if [ -z "${PG_BINDIR:-}" ] && ! command -v initdb >/dev/null; then
  PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  export PG_BINDIR
fi

# Builds are slow (RocksDB is C++): keep them in a cache outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pgsnapman-target}"
