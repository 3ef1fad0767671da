#!/usr/bin/env bash
# Runs the whole system on this machine: Redis, every service (built in
# release mode) and the gateway (nginx) on one origin, as docker-compose.yml
# does with containers. On a fresh Debian machine with Rust it installs what
# is missing (redis-server, nginx) first. Ctrl-C stops everything it started.
#
# Environment (all optional):
#   GATEWAY_PORT      the one origin: demo page and every route [8080]
#   GATEWAY_TLS_PORT  the same origin over HTTPS and HTTP/2, with a
#                     self-signed certificate for localhost [8443]
#   REDIS_URL     use this Redis instead of starting one
#   REDIS_PORT    port of the Redis this script starts [6379]
#   plus any service variable (README, "Configuration"), e.g. RUST_LOG=debug
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

SERVICES=(longpoll-svc sse-svc ws-svc)
declare -A PORTS=([longpoll-svc]=8081 [sse-svc]=8082 [ws-svc]=8083)

ensure_commands redis-server:redis-server nginx:nginx-light curl:curl openssl:openssl
raise_fd_limit

echo "==> building (release)"
build_release

state_dir=.run
mkdir -p "$state_dir"
pids=()
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "==> stopping"
  # Newest first: the services go before the Redis they use.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  exit 0
}
trap stop_all INT TERM EXIT

if [ -z "${REDIS_URL:-}" ] && [ -z "${REDIS_CLUSTER_URLS:-}" ]; then
  redis_port=${REDIS_PORT:-6379}
  if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
    echo "==> using the Redis already on port $redis_port"
  else
    echo "==> starting Redis on port $redis_port"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$state_dir" \
      --save "" --appendonly yes --daemonize no >"$state_dir/redis.log" 2>&1 &
    pids+=($!)
  fi
  export REDIS_URL="redis://127.0.0.1:$redis_port/"
fi

# The gateway in front sets X-Real-IP: per-client limits key on it, not on
# the gateway's own address (which every client would share).
export TRUST_X_REAL_IP=${TRUST_X_REAL_IP:-true}
for service in "${SERVICES[@]}"; do
  port=${PORTS[$service]}
  echo "==> starting $service on port $port"
  PORT=$port target/release/"$service" &
  pids+=($!)
done
for service in "${SERVICES[@]}"; do
  wait_for_http "http://127.0.0.1:${PORTS[$service]}/readyz" 30
done

gateway_port=${GATEWAY_PORT:-8080}
tls_port=${GATEWAY_TLS_PORT:-8443}
echo "==> starting the gateway on ports $gateway_port (HTTP) and $tls_port (HTTPS, HTTP/2)"
GATEWAY_TLS_LISTEN=$tls_port \
  scripts/gateway.sh "$state_dir/gateway" "$gateway_port" 127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8083 &
pids+=($!)
wait_for_http "http://127.0.0.1:$gateway_port/gateway/healthz" 30

cat <<MSG

The chat is running. Open http://localhost:$gateway_port/ (the demo page; or
https://localhost:$tls_port/ over HTTP/2, with a self-signed certificate), or:
  publish        curl -X POST localhost:$gateway_port/rooms/general/messages \\
                   -H 'content-type: application/json' -d '{"author":"me","message":"hi"}'
  long polling   curl 'localhost:$gateway_port/rooms/general/poll?after=0'
  SSE            curl -N localhost:$gateway_port/rooms/general/events
  WebSocket      websocat ws://localhost:$gateway_port/rooms/general/ws
Each service also answers on its own port: longpoll 8081, sse 8082, ws 8083.
Ctrl-C stops it.
MSG
wait -n "${pids[@]}" || true
echo "a process exited on its own; stopping the rest" >&2
