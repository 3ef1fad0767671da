# nginx from Debian 12's package (with openssl, which the gateway needs to
# make its self-signed certificate), for machines that cannot pull the
# official nginx image (scripts/images.sh builds it on its own debootstrap
# base). The gateway's configuration is mounted by docker-compose.yml.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-light openssl \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 8080 8443
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
