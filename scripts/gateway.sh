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
# GATEWAY_*) apply. With GATEWAY_TLS_LISTEN set (e.g. 8443), it also serves
# the same origin over TLS and HTTP/2 there, with the certificate in
# TLS_SOURCE (tls.crt, tls.key) or a self-signed one for localhost
# (deploy/nginx/chat-tls.sh).
set -euo pipefail
if [ $# -ne 5 ]; then
  sed -n '2,16p' "$0" >&2
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
if [ -n "${GATEWAY_TLS_LISTEN:-}" ]; then
  TLS_SOURCE=${TLS_SOURCE:-$state/no-certificate} "$root/deploy/nginx/chat-tls.sh" "$state/chat-gen"
  cat >"$state/chat-gen/chat-tls-server.conf" <<EOF
server {
    listen $GATEWAY_TLS_LISTEN ssl http2;
    server_name _;
    ssl_certificate chat-gen/tls.crt;
    ssl_certificate_key chat-gen/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    include chat/chat-locations.conf;
}
EOF
else
  echo "# No GATEWAY_TLS_LISTEN: no TLS server." >"$state/chat-gen/chat-tls-server.conf"
fi
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
