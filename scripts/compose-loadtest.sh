#!/usr/bin/env bash
# Load-tests the docker-compose deployment: brings it up under its own
# project name with every service scaled to REPLICAS, runs the load tester
# (on the host, release build) through the gateway's published port for
# each transport, and takes the deployment down again (`down -v`).
#
#   scripts/compose-loadtest.sh 1          one replica of each service
#   scripts/compose-loadtest.sh 3          three of each
#   scripts/compose-loadtest.sh 3 sse      only SSE
#
# Needs a Docker engine and the images (scripts/images.sh builds them, or
# set REDIS_IMAGE, NGINX_IMAGE, SERVICES_IMAGE). Every client comes from
# one address, so the per-client and per-address limits are turned off.
# Environment: SUBSCRIBERS [500], PUBLISHERS [2], RATE [200], DURATION [15],
# SIZE [100] (the load tester's options).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

replicas=${1:?usage: compose-loadtest.sh REPLICAS [TRANSPORT...]}
shift
transports=("$@")
[ ${#transports[@]} -gt 0 ] || transports=(longpoll sse ws)

export REDIS_IMAGE=${REDIS_IMAGE:-chat-local/redis:bookworm}
export NGINX_IMAGE=${NGINX_IMAGE:-chat-local/nginx:bookworm}
export SERVICES_IMAGE=${SERVICES_IMAGE:-chat-services:latest}
export PUBLISH_RATE_PER_SEC=0 MAX_CONNECTIONS=0 MAX_CONNECTIONS_PER_CLIENT=0 \
  GATEWAY_CONNECTIONS_PER_ADDRESS=0 GATEWAY_PUBLISH_RATE_PER_SEC=0 \
  GATEWAY_PORT=127.0.0.1: GATEWAY_TLS_PORT=127.0.0.1: RUST_LOG=warn
project="chatload$$"
compose() { docker-compose -p "$project" -f docker-compose.yml "$@"; }
trap 'compose down -v -t 2 >/dev/null 2>&1' EXIT
raise_fd_limit

echo "==> cargo build --release"
build_release
loadtest=${CARGO_TARGET_DIR:-target}/release/loadtest

echo "==> docker-compose up: $replicas replica(s) of each service"
compose up -d --no-build --scale longpoll-svc="$replicas" --scale sse-svc="$replicas" \
  --scale ws-svc="$replicas" >/dev/null
gateway="http://$(compose port gateway 8080)"
wait_for_http "$gateway/gateway/healthz" 60
for _ in $(seq 60); do
  unhealthy=$(compose ps | grep -c -E 'starting|unhealthy' || true)
  [ "$unhealthy" -eq 0 ] && break
  sleep 1
done

for transport in "${transports[@]}"; do
  service="$transport-svc"
  # The memory and CPU figures come from the first replica's /metrics.
  first=$(docker ps -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$service" | head -1)
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"${project}_edge\").IPAddress}}" "$first")
  port=$(case $transport in longpoll) echo 8081 ;; sse) echo 8082 ;; ws) echo 8083 ;; esac)
  extra=()
  [ "$transport" = ws ] && extra=(--publish-over ws)
  echo "==> $transport through the gateway ($replicas replica(s))"
  "$loadtest" "$transport" --url "$gateway" --metrics-url "http://$ip:$port" \
    --subscribers "${SUBSCRIBERS:-500}" --publishers "${PUBLISHERS:-2}" \
    --rate "${RATE:-200}" --duration "${DURATION:-15}" --size "${SIZE:-100}" "${extra[@]}"
done
