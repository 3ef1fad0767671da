# Shared helpers for the scripts in this folder. Source it; do not run it.

# ensure_commands COMMAND:DEBIAN_PACKAGE...: installs from Debian, in one
# apt-get run, the packages whose command is missing (as root, or with
# sudo), or stops with instructions.
ensure_commands() {
  local pair command package missing=()
  for pair in "$@"; do
    command=${pair%%:*} package=${pair#*:}
    if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ]; then
      missing+=("$package")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing from Debian: ${missing[*]}" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "error: not root and no sudo; install these Debian packages: ${missing[*]}" >&2
      return 1
    fi
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  for pair in "$@"; do
    command=${pair%%:*}
    if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ]; then
      echo "error: installing ${pair#*:} did not provide $command" >&2
      return 1
    fi
  done
}

# free_port: prints a TCP port nothing listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for_http URL SECONDS: waits until URL answers 200.
wait_for_http() {
  local url=$1 seconds=${2:-30} i
  for ((i = 0; i < seconds * 10; i++)); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "error: $url did not answer within ${seconds}s" >&2
  return 1
}

# raise_fd_limit: lets one process hold thousands of connections.
raise_fd_limit() {
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
}

# Builds the release binaries: the three services and the load tester,
# always together, so that every script shares one build (cargo builds a
# dependency once per set of features, and a different selection of
# packages can select different features).
build_release() {
  cargo build --release --locked --bin longpoll-svc --bin sse-svc --bin ws-svc --bin loadtest
}
