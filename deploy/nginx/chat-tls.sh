#!/bin/sh
# Puts the gateway's TLS certificate and key in DIR (DIR/tls.crt,
# DIR/tls.key) for nginx.conf to use: the ones mounted in TLS_SOURCE
# (default /etc/nginx/tls, files tls.crt and tls.key) when there are any,
# otherwise a self-signed certificate for `localhost` (and 127.0.0.1), made
# now with openssl and valid for 30 days. Browsers warn about a self-signed
# certificate; mount a real one for anything but local use.
#
# usage: chat-tls.sh DIR
# POSIX sh: it runs in the gateway's container as well as on a host.
set -eu
dir=${1:?usage: chat-tls.sh DIR}
source=${TLS_SOURCE:-/etc/nginx/tls}
mkdir -p "$dir"

if [ -s "$source/tls.crt" ] && [ -s "$source/tls.key" ]; then
  cp "$source/tls.crt" "$dir/tls.crt"
  cp "$source/tls.key" "$dir/tls.key"
  echo "chat-tls.sh: using the certificate in $source" >&2
else
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 30 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
  echo "chat-tls.sh: no certificate in $source; made a self-signed one for localhost" >&2
fi
chmod 600 "$dir/tls.key"
