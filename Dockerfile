# attnserve container image: attn_server + attn_cli on debian:bookworm-slim.
#
#   docker build -t attnserve .
#   docker run -p 50051:50051 -p 9090:9090 attnserve                  # demo model
#   docker run -v ./models:/models -p 50051:50051 attnserve --model_repository /models
#
# Without a Docker engine (CI, scripts/ci/container.sh):
#   buildah bud --isolation chroot --storage-driver vfs --pull=never -t attnserve .
#
# Stage 1 builds with the README's own scripts (scripts/setup.sh --runtime,
# scripts/build.sh) and keeps ccache and apt downloads in cache mounts, so a
# rebuild after a source change recompiles only what changed. Stage 2 holds
# only the shared libraries the two binaries link and the binaries.

FROM docker.io/library/debian:bookworm-slim AS build
ENV DEBIAN_FRONTEND=noninteractive \
    CCACHE_DIR=/ccache \
    CCACHE_BASEDIR=/src \
    ATTN_CMAKE_ARGS="-DATTN_BUILD_TESTS=OFF"
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && echo 'APT::Keep-Downloaded-Packages "true";' >/etc/apt/apt.conf.d/10keep \
 && scripts/setup.sh --runtime
COPY . .
RUN --mount=type=cache,target=/ccache \
    scripts/build.sh --target attn_server attn_cli \
 && strip build/server/attn_server build/client/attn_cli \
      build/server/libattn_openssl_compat_*.so \
 && (ccache -s | grep -i hit || true)

FROM docker.io/library/debian:bookworm-slim
# Runtime libraries of attn_server and attn_cli (from `ldd`), nothing else.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libdnnl2 libhwy1 libgomp1 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libcivetweb1 \
      libc-ares2 libre2-9 libssl3 ocl-icd-libopencl1 zlib1g >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
 && groupadd --system --gid 10001 attn \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin attn \
 && mkdir -p /models && chown 10001:10001 /models
COPY --from=build /src/build/server/attn_server /src/build/client/attn_cli /usr/local/bin/
# OpenSSL 3 compatibility objects for REST over TLS (docs/ARCHITECTURE.md).
COPY --from=build /src/build/server/libattn_openssl_compat_ssl.so \
     /src/build/server/libattn_openssl_compat_crypto.so /usr/local/lib/attnserve/
USER 10001:10001
# gRPC (--port) and Prometheus /metrics (--metrics_port).
EXPOSE 50051 9090
# /models is where `-v ./models:/models` mounts a repository (no VOLUME: an
# anonymous volume would only hide what is mounted there).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["attn_cli", "health", "--target=127.0.0.1:50051", "--deadline_ms=2000"]
ENTRYPOINT ["attn_server"]
