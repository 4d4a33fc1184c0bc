#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the dashboard test
# (tests/tests/e2e/dashboard.rs): Debian's chromium and chromium-driver,
# installed only when missing; exports PGSNAPMAN_CHROMIUM and
# PGSNAPMAN_CHROMEDRIVER. Sourced by test.sh; preset variables win.
set -euo pipefail

if [ -z "${PGSNAPMAN_CHROMIUM:-}" ] || [ -z "${PGSNAPMAN_CHROMEDRIVER:-}" ]; then
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "pgsnapman: installing chromium and chromium-driver (for the dashboard test)" >&2
    pgsnapman_sudo=()
    [ "$(id -u)" -ne 0 ] && pgsnapman_sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${pgsnapman_sudo[@]}" apt-get update -qq
    "${pgsnapman_sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  fi
  export PGSNAPMAN_CHROMIUM="${PGSNAPMAN_CHROMIUM:-$(command -v chromium)}"
  export PGSNAPMAN_CHROMEDRIVER="${PGSNAPMAN_CHROMEDRIVER:-$(command -v chromedriver)}"
fi
