#!/usr/bin/env bash
# Benchmarks the transports on this machine with the load tester: builds
# release binaries, starts a Redis of its own and one instance of each
# service on free ports (127.0.0.1 only), runs the load, prints the
# reports, and stops everything. Bounded: each run publishes for DURATION
# seconds.
#
#   scripts/bench.sh            each transport under the same load, one report each
#   scripts/bench.sh compare    product vs floor, back to back, per transport and
#                               subscriber count: deliveries per server CPU-second
#                               (service + Redis vs the floor) and p99, as a table
#   scripts/bench.sh publish    no subscribers: server CPU per published message
#   scripts/bench.sh rooms      small rooms (ROOMS x ROOM_SUBSCRIBERS), publishers as fast
#                               as answered: accepted msg/s and CPU per message
#   scripts/bench.sh idle       IDLE_CONNECTIONS idle connections per transport: the
#                               server's resident memory per connection
#   scripts/bench.sh all        compare, publish, rooms and idle
#
# The floor is limit-server (a minimal fan-out server, not part of this
# repository): FLOOR_BIN is its binary; without it, it is built from
# FLOOR_SRC [../shared/bench/limit-server] into FLOOR_TARGET_DIR
# [/tmp/limit-target]. Every mode but the first needs it.
#
# Environment (all optional):
#   SUBSCRIBERS [1000]  PUBLISHERS [4]  RATE [500 msg/s]  DURATION [10 s]  SIZE [100 chars]
#   TRANSPORTS ["longpoll sse ws"]   JSON=1 for JSON reports (first mode)
#   compare:  SUBSCRIBER_COUNTS ["200 2000"]  RATE [50]  DURATION [20]
#   rooms:    ROOMS [1000]  ROOM_SUBSCRIBERS [3]  ROOM_PUBLISHERS [16]
#   idle:     IDLE_CONNECTIONS [19000]  SOURCE_IPS [127.0.0.1,127.0.0.2]
#   FLOOR_THREADS [1]  (the floor's runtime threads)
#   PRODUCT_BIN_DIR [target/release]  the services to measure, e.g. an
#     earlier commit's release build, to compare before and after
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

MODE=${1:-report}
case $MODE in
  report | compare | publish | rooms | idle | all) ;;
  *)
    echo "usage: $0 [report|compare|publish|rooms|idle|all]" >&2
    exit 2
    ;;
esac

ensure_commands redis-server:redis-server curl:curl python3:python3
raise_fd_limit

if [ "$MODE" = compare ] || [ "$MODE" = all ]; then
  RATE=${RATE:-50}
  DURATION=${DURATION:-20}
fi
SUBSCRIBERS=${SUBSCRIBERS:-1000}
PUBLISHERS=${PUBLISHERS:-4}
RATE=${RATE:-500}
DURATION=${DURATION:-10}
SIZE=${SIZE:-100}
PRODUCT_BIN_DIR=${PRODUCT_BIN_DIR:-target/release}
TRANSPORTS=${TRANSPORTS:-longpoll sse ws}
SUBSCRIBER_COUNTS=${SUBSCRIBER_COUNTS:-200 2000}
ROOMS=${ROOMS:-1000}
ROOM_SUBSCRIBERS=${ROOM_SUBSCRIBERS:-3}
ROOM_PUBLISHERS=${ROOM_PUBLISHERS:-16}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-19000}
SOURCE_IPS=${SOURCE_IPS:-127.0.0.1,127.0.0.2}
FLOOR_THREADS=${FLOOR_THREADS:-1}

echo "==> building (release)" >&2
build_release >&2

if [ "$MODE" != report ] && [ -z "${FLOOR_BIN:-}" ]; then
  FLOOR_SRC=${FLOOR_SRC:-../shared/bench/limit-server}
  if [ ! -f "$FLOOR_SRC/Cargo.toml" ]; then
    echo "error: mode $MODE needs the floor: set FLOOR_BIN, or FLOOR_SRC to limit-server's source" >&2
    exit 1
  fi
  FLOOR_TARGET_DIR=${FLOOR_TARGET_DIR:-/tmp/limit-target}
  echo "==> building the floor from $FLOOR_SRC into $FLOOR_TARGET_DIR" >&2
  CARGO_TARGET_DIR=$FLOOR_TARGET_DIR cargo build --release --locked \
    --manifest-path "$FLOOR_SRC/Cargo.toml" >&2
  FLOOR_BIN=$FLOOR_TARGET_DIR/release/limit-server
fi

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
redis_pid=$!
pids+=("$redis_pid")
declare -A urls service_pids
for transport in $TRANSPORTS; do
  port=$(free_port)
  # Every client of a load test comes from one address: no per-client
  # limits (they have tests of their own). Polls are held as long as the
  # service allows, so that idle ones stay held while thousands open.
  REDIS_URL="redis://127.0.0.1:$redis_port/" PORT=$port HOST=127.0.0.1 RUST_LOG=warn \
    PUBLISH_RATE_PER_SEC=0 MAX_CONNECTIONS_PER_CLIENT=0 LONGPOLL_TIMEOUT_SECS=60 \
    "$PRODUCT_BIN_DIR/$transport"-svc &
  service_pids[$transport]=$!
  pids+=($!)
  urls[$transport]="http://127.0.0.1:$port"
done
if [ "$MODE" != report ]; then
  floor_port=$(free_port)
  HOST=127.0.0.1 PORT=$floor_port LIMIT_THREADS=$FLOOR_THREADS LONGPOLL_TIMEOUT_SECS=60 \
    "$FLOOR_BIN" 2>/dev/null &
  floor_pid=$!
  pids+=("$floor_pid")
  floor_url="http://127.0.0.1:$floor_port"
  wait_for_http "$floor_url/readyz" 30
fi
for transport in $TRANSPORTS; do
  wait_for_http "${urls[$transport]}/readyz" 30
done

if [ "$MODE" = report ]; then
  for transport in $TRANSPORTS; do
    echo "==> $transport: $SUBSCRIBERS subscribers, $RATE msg/s for ${DURATION}s" >&2
    target/release/loadtest "$transport" --url "${urls[$transport]}" \
      --subscribers "$SUBSCRIBERS" --publishers "$PUBLISHERS" --rate "$RATE" \
      --duration "$DURATION" --size "$SIZE" ${JSON:+--json} || true
  done
  exit 0
fi

results=$(mktemp -d)
# side NAME TRANSPORT ARGS...: one run against the product (the service
# and its Redis measured) or the floor, its JSON report kept as NAME.json
# and shown as text.
side() {
  local name=$1 side=$2 transport=$3
  shift 3
  local url measure
  if [ "$side" = product ]; then
    url=${urls[$transport]}
    measure=(--server-pid "${service_pids[$transport]}")
    # Idle memory is the service's own; CPU is the service's and Redis'.
    [[ " $* " == *" --idle "* ]] || measure+=(--server-pid "$redis_pid")
  else
    url=$floor_url
    measure=(--server-pid "$floor_pid")
  fi
  echo "==> $side $transport: $*" >&2
  target/release/loadtest "$transport" --url "$url" "${measure[@]}" --json "$@" \
    >"$results/$name.json" || true
  python3 scripts/bench_table.py show "$results/$name.json" >&2 || true
}

run_compare() {
  local transport subscribers
  for subscribers in $SUBSCRIBER_COUNTS; do
    for transport in $TRANSPORTS; do
      for s in product floor; do
        side "compare-$transport-$subscribers-$s" $s "$transport" \
          --subscribers "$subscribers" --publishers "$PUBLISHERS" --rate "$RATE" \
          --duration "$DURATION" --size "$SIZE"
      done
    done
  done
}

run_publish() {
  local transport
  for transport in $TRANSPORTS; do
    for s in product floor; do
      side "publish-$transport-$s" $s "$transport" --subscribers 0 \
        --publishers "$PUBLISHERS" --rate "$RATE" --duration "$DURATION" --size "$SIZE"
    done
  done
}

run_rooms() {
  local transport
  for transport in $TRANSPORTS; do
    for s in product floor; do
      side "rooms-$transport-$s" $s "$transport" --rooms "$ROOMS" \
        --subscribers $((ROOMS * ROOM_SUBSCRIBERS)) --publishers "$ROOM_PUBLISHERS" --rate 0 \
        --duration "$DURATION" --size "$SIZE"
    done
  done
}

run_idle() {
  local transport
  for transport in $TRANSPORTS; do
    for s in product floor; do
      side "idle-$transport-$s" $s "$transport" --idle "$IDLE_CONNECTIONS" \
        --source-ip "$SOURCE_IPS"
    done
  done
}

case $MODE in
  compare) run_compare ;;
  publish) run_publish ;;
  rooms) run_rooms ;;
  idle) run_idle ;;
  all)
    run_compare
    run_publish
    run_rooms
    run_idle
    ;;
esac

echo "==> $(date -u +%Y-%m-%d) on $(nproc) cores; compare ratios within one run only" >&2
python3 scripts/bench_table.py table "$results"
rm -rf "$results"
