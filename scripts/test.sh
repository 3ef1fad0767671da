#!/usr/bin/env bash
# Runs every test of the workspace. On a fresh Debian machine with Rust it
# first installs what the tests need (redis-server); each test then starts
# its own Redis on a free port and stops it at the end.
#
#   scripts/test.sh            all tests
#   scripts/test.sh -E 'test(sse)'   extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_command redis-server redis-server
ensure_command curl curl
raise_fd_limit

echo "==> building"
cargo build --workspace --all-targets --locked

echo "==> testing"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked "$@"
else
  echo "(cargo-nextest not found; using cargo test)"
  cargo test --workspace --locked "$@"
fi
