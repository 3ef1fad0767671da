#!/usr/bin/env bash
# Benchmarks the three transports on this machine with the load tester:
# builds release binaries, starts a Redis of its own and one instance of
# each service on free ports (127.0.0.1 only), runs the same load against
# each, prints the reports, and stops everything. Bounded: each run
# publishes for DURATION seconds.
#
# Environment (all optional):
#   SUBSCRIBERS [1000]  PUBLISHERS [4]  RATE [500 msg/s]  DURATION [10 s]  SIZE [100 chars]
#   TRANSPORTS ["longpoll sse ws"]   JSON=1 for JSON reports
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_commands redis-server:redis-server curl:curl
raise_fd_limit

SUBSCRIBERS=${SUBSCRIBERS:-1000}
PUBLISHERS=${PUBLISHERS:-4}
RATE=${RATE:-500}
DURATION=${DURATION:-10}
SIZE=${SIZE:-100}
TRANSPORTS=${TRANSPORTS:-longpoll sse ws}

echo "==> building (release)" >&2
cargo build --release --locked --bin longpoll-svc --bin sse-svc --bin ws-svc --bin loadtest >&2

pids=()
stop_all() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap stop_all EXIT INT TERM

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no >/dev/null 2>&1 &
pids+=($!)
declare -A urls
for transport in $TRANSPORTS; do
  port=$(free_port)
  # Every client of a load test comes from one address: no per-client
  # limits (they have tests of their own).
  REDIS_URL="redis://127.0.0.1:$redis_port/" PORT=$port HOST=127.0.0.1 RUST_LOG=warn \
    PUBLISH_RATE_PER_SEC=0 MAX_CONNECTIONS_PER_CLIENT=0 \
    target/release/"$transport"-svc &
  pids+=($!)
  urls[$transport]="http://127.0.0.1:$port"
done
for transport in $TRANSPORTS; do
  wait_for_http "${urls[$transport]}/readyz" 30
done

for transport in $TRANSPORTS; do
  echo "==> $transport: $SUBSCRIBERS subscribers, $RATE msg/s for ${DURATION}s" >&2
  target/release/loadtest "$transport" --url "${urls[$transport]}" \
    --subscribers "$SUBSCRIBERS" --publishers "$PUBLISHERS" --rate "$RATE" \
    --duration "$DURATION" --size "$SIZE" ${JSON:+--json} || true
done
