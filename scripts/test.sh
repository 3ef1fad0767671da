#!/usr/bin/env bash
# Runs every test of the workspace. On a fresh Debian machine with Rust it
# first installs what the tests need from Debian (redis-server; chromium and
# chromium-driver for the browser tests); each test then starts its own
# Redis (and browser) and stops it at the end.
#
#   scripts/test.sh            all tests
#   scripts/test.sh -E 'test(sse)'   extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_commands redis-server:redis-server nginx:nginx-light chromium:chromium \
  chromedriver:chromium-driver curl:curl
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
