#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, then every test (unit, and the
# e2e tests against real ovsdb-server/OVN/OVS, which need root). With CI=true a
# missing prerequisite of an e2e test is a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== cargo fmt";    cargo fmt --all -- --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test";   cargo test --workspace --no-fail-fast "$@"
