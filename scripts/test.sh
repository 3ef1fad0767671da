#!/usr/bin/env bash
# Runs every test of the workspace. On a fresh Debian machine with Rust it
# first installs what the tests need from Debian (redis-server; chromium and
# chromium-driver for the browser tests; debootstrap and docker-compose for
# the compose tests); each test then starts its own Redis (and browser, or
# compose project) and stops it at the end.
#
# The compose tests (tests/tests/compose.rs) need a Docker engine: when one
# answers, scripts/images.sh first builds (or reuses) the images they run;
# without one they fail, saying so.
#
#   scripts/test.sh            all tests
#   scripts/test.sh -E 'test(sse)'   extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_commands redis-server:redis-server nginx:nginx-light chromium:chromium \
  chromedriver:chromium-driver curl:curl openssl:openssl \
  debootstrap:debootstrap docker-compose:docker-compose
raise_fd_limit

if docker info >/dev/null 2>&1; then
  echo "==> images for the compose tests"
  scripts/images.sh
else
  echo "warning: no Docker engine answers: the compose tests will fail" >&2
fi

echo "==> building"
cargo build --workspace --all-targets --locked

echo "==> testing"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked "$@"
else
  echo "(cargo-nextest not found; using cargo test)"
  cargo test --workspace --locked "$@"
fi
