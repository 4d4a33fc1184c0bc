#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, the build of
# every binary, then every unit and integration test (real PostgreSQL
# clusters, real coordinator and worker processes), then the Debian packages
# (built from those binaries, installed, started, purged: needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/prereqs.sh
source deploy/pg-majors.sh
source deploy/python-env.sh
source deploy/chromium.sh

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries used by the integration tests)"
cargo build --workspace --bins --locked
echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${PGSNAPMAN_TEST_THREADS:-2}"
echo "== Debian packages (docs/packages.md)"
./deploy/packages.sh test
