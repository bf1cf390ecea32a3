# syntax=docker/dockerfile:1
#
# Image of the three Weir binaries: weir (CLI), weir-jobmanager,
# weir-taskmanager. No ENTRYPOINT: the Helm chart (helm/weir) sets each
# container's command. Build with BuildKit:
#
#   docker build -t weir:0.1.0 .
#
# See docs/kubernetes.md.

# ---- build -------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# libclang: RocksDB's bindings are generated at build time. cmake: native
# dependencies' build scripts. librdkafka (with OpenSSL, for Kafka's TLS and
# SASL) and RocksDB themselves are compiled from source by their crates, and
# protoc comes vendored (protoc-bin-vendored).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The registry and target directory live in cache mounts, reused across
# builds; the binaries are copied out of the mount before it goes away.
RUN --mount=type=cache,id=weir-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=weir-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=weir-target,target=/src/target \
    cargo build --release --locked -p weir --bins \
 && mkdir -p /out \
 && cp target/release/weir target/release/weir-jobmanager target/release/weir-taskmanager /out/

# ---- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim

# The binaries link only glibc, libstdc++, libgcc_s and zlib, all in the base
# image; ca-certificates for TLS to S3 and Kafka.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 weir \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/weir --no-create-home \
      --shell /usr/sbin/nologin weir \
 && mkdir -p /var/lib/weir/state /etc/weir \
 && chown -R 10001:10001 /var/lib/weir

COPY --from=builder /out/weir /out/weir-jobmanager /out/weir-taskmanager /usr/local/bin/

USER 10001:10001
WORKDIR /var/lib/weir

# 6123 job manager gRPC, 6124 task manager gRPC, 8081 job manager REST and
# probes, 9249 Prometheus metrics (and the task manager's probes).
EXPOSE 6123 6124 8081 9249

CMD ["weir", "--help"]
