#!/usr/bin/env bash
# A Python virtual environment for the tests that drive the coordinator from
# an independent gRPC implementation (grpcio; tests/python/). Created once
# from tests/python/requirements.txt (exact pins) and recreated when that file
# changes; exported as PGSNAPMAN_TEST_PYTHON. A preset variable wins.
# Sourced by test.sh.
set -euo pipefail

if [ -z "${PGSNAPMAN_TEST_PYTHON:-}" ]; then
  pgsnapman_pyenv="${PGSNAPMAN_TEST_PYENV:-$HOME/.cache/pgsnapman-pyenv}"
  pgsnapman_req="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/python/requirements.txt"
  if ! cmp -s "$pgsnapman_req" "$pgsnapman_pyenv/requirements.txt"; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
      echo "pgsnapman: installing python3-venv (for the gRPC client tests)" >&2
      pgsnapman_sudo=()
      [ "$(id -u)" -ne 0 ] && pgsnapman_sudo=(sudo)
      DEBIAN_FRONTEND=noninteractive "${pgsnapman_sudo[@]}" apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "pgsnapman: creating the test Python environment in $pgsnapman_pyenv" >&2
    rm -rf "$pgsnapman_pyenv"
    python3 -m venv "$pgsnapman_pyenv"
    "$pgsnapman_pyenv/bin/python" -m pip install --quiet --disable-pip-version-check \
      --only-binary=:all: -r "$pgsnapman_req"
    cp "$pgsnapman_req" "$pgsnapman_pyenv/requirements.txt"
  fi
  export PGSNAPMAN_TEST_PYTHON="$pgsnapman_pyenv/bin/python"
fi
