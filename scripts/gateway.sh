#!/usr/bin/env bash
# Runs the chat gateway (nginx) on this machine in front of service
# processes: writes its config into STATE_DIR from deploy/nginx (the same
# locations docker-compose uses) and execs nginx in the foreground, so the
# caller holds nginx's PID.
#
# usage: scripts/gateway.sh STATE_DIR LISTEN LONGPOLL SSE WS
#   LISTEN   what nginx listens on: 8080, or 127.0.0.1:18080
#   LONGPOLL, SSE, WS   comma-separated host:port of each service's instances
# The environment variables of deploy/nginx/chat-render.sh (ALLOWED_ORIGINS,
# GATEWAY_*) apply.
set -euo pipefail
if [ $# -ne 5 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
state=$(mkdir -p "$1" && cd "$1" && pwd)
listen=$2

servers() {
  local address
  IFS=',' read -ra addresses <<<"$1"
  for address in "${addresses[@]}"; do
    printf '        server %s max_fails=1 fail_timeout=2s;\\n' "$address"
  done
}

mkdir -p "$state/chat"
cp "$root"/deploy/nginx/chat-*.conf "$state/chat/"
"$root/deploy/nginx/chat-render.sh" "$state/chat-gen"
sed -e "s|@STATE_DIR@|$state|g" \
    -e "s|@LISTEN@|$listen|g" \
    -e "s|@WEB_ROOT@|$root/web|g" \
    -e "s|@LONGPOLL_SERVERS@|$(servers "$3")|" \
    -e "s|@SSE_SERVERS@|$(servers "$4")|" \
    -e "s|@WS_SERVERS@|$(servers "$5")|" \
    "$root/deploy/nginx/nginx.local.conf.template" >"$state/nginx.conf"

nginx=$(command -v nginx || echo /usr/sbin/nginx)
"$nginx" -t -q -e stderr -p "$state" -c "$state/nginx.conf"
exec "$nginx" -e stderr -p "$state" -c "$state/nginx.conf"
