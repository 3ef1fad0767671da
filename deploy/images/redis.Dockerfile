# Redis from Debian 12's package, for machines that cannot pull the
# official redis:7-bookworm (scripts/images.sh builds it on its own
# debootstrap base). Runs as compose runs the official image: the command
# is `redis-server ...`, data in /data.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
