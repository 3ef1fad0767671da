#!/usr/bin/env bash
# Builds every image docker-compose.yml uses, without any registry: a
# Debian 12 base made with debootstrap and `docker import`, Redis and nginx
# from Debian's packages on that base, and the services' image on the same
# base with the release binaries built here on the host (same Debian 12,
# same glibc). Then prints the variables that make compose use them.
#
#   scripts/images.sh                      build (or reuse) all four images
#   eval "$(scripts/images.sh --env)"      ... and export the variables
#   docker-compose up -d                   uses them (no --build)
#
# Where registries answer, none of this is needed: `docker compose up
# --build` pulls the official images the compose file names by default.
#
# Images (all local names; nothing is pushed):
#   chat-local/debian:bookworm   debootstrap --variant=minbase bookworm
#   chat-local/redis:bookworm    + redis-server
#   chat-local/nginx:bookworm    + nginx-light, openssl
#   chat-services:latest         + the three release binaries (deploy/Dockerfile, target from-host)
#
# Caching: the debootstrap tarball is kept in CHAT_IMAGES_CACHE (default
# ~/.cache/chat-images) and imported again only when the script's inputs
# change; Redis and nginx are rebuilt only when the base or their
# Dockerfile changed (docker's layer cache); the services' image only when
# the binaries changed (cargo and the layer cache decide).
#
# Environment: DEBIAN_MIRROR [http://deb.debian.org/debian],
# CHAT_IMAGES_CACHE, SKIP_CARGO_BUILD=1 (use the release binaries already
# in the target directory).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

BASE_IMAGE=chat-local/debian:bookworm
REDIS_IMAGE=chat-local/redis:bookworm
NGINX_IMAGE=chat-local/nginx:bookworm
SERVICES_IMAGE=chat-services:latest

print_env() {
  echo "export REDIS_IMAGE=$REDIS_IMAGE NGINX_IMAGE=$NGINX_IMAGE SERVICES_IMAGE=$SERVICES_IMAGE"
}

if [ "${1:-}" = "--env" ]; then
  "$0" >&2
  print_env
  exit 0
fi

ensure_commands debootstrap:debootstrap docker:docker.io docker-compose:docker-compose
if ! docker info >/dev/null 2>&1; then
  echo "error: no Docker engine answers (docker info failed): start one, or run as a user allowed to use it" >&2
  exit 1
fi

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${CHAT_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-images}
mkdir -p "$CACHE"
# The classic builder: BuildKit needs the buildx plugin, which Debian 12's
# docker.io does not have; every Dockerfile here works with both.
export DOCKER_BUILDKIT=0
started=$SECONDS

# What the base is made of; a change here makes a new tarball.
base_recipe="suite=bookworm variant=minbase mirror=$MIRROR recipe=1"
base_key=$(echo "$base_recipe" | sha256sum | cut -c1-16)
tarball="$CACHE/debian-bookworm-minbase-$base_key.tar"

image_label() {
  docker image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

if [ "$(image_label "$BASE_IMAGE" chat.base-key)" = "$base_key" ]; then
  echo "==> $BASE_IMAGE is up to date"
else
  if [ ! -s "$tarball" ]; then
    echo "==> debootstrap bookworm (minbase) from $MIRROR"
    root=$(mktemp -d /var/tmp/chat-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
      tail -20 "$CACHE/debootstrap.log" >&2
      exit 1
    }
    # As Debian's official images do: no daemons started by package
    # installs inside a build, no apt caches kept.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
      >"$root/etc/apt/apt.conf.d/90chat-no-recommends"
    echo "deb $MIRROR bookworm main" >"$root/etc/apt/sources.list"
    echo "deb $MIRROR bookworm-updates main" >>"$root/etc/apt/sources.list"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
      "$root"/var/cache/apt/archives/*.deb "$root"/dev/* "$root"/proc/* "$root"/sys/*
    tar --numeric-owner -C "$root" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$root"
    trap - EXIT
  fi
  echo "==> docker import $BASE_IMAGE"
  docker import \
    --change "LABEL chat.base-key=$base_key" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["bash"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
fi

# Redis and nginx from Debian's packages. --network host: apt reaches the
# mirror the way the host does.
for image in redis nginx; do
  tag_var="${image^^}_IMAGE"
  echo "==> ${!tag_var} (deploy/images/$image.Dockerfile)"
  docker build -q --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -f "deploy/images/$image.Dockerfile" -t "${!tag_var}" deploy/images >/dev/null
done

# The services' image: the release binaries built here, copied in.
target_dir=${CARGO_TARGET_DIR:-target}
if [ "${SKIP_CARGO_BUILD:-}" != 1 ]; then
  echo "==> cargo build --release (the services and the load tester)"
  build_release
fi
mkdir -p target/docker/bin
for binary in longpoll-svc sse-svc ws-svc; do
  # Copied only when changed, so the layer cache holds when nothing did.
  if ! cmp -s "$target_dir/release/$binary" "target/docker/bin/$binary"; then
    cp "$target_dir/release/$binary" "target/docker/bin/$binary"
  fi
done
echo "==> $SERVICES_IMAGE (deploy/Dockerfile, target from-host)"
docker build -q --network host --target from-host \
  --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" \
  -f deploy/Dockerfile -t "$SERVICES_IMAGE" . >/dev/null

echo "==> images ready in $((SECONDS - started)) s; compose uses them with:"
print_env
