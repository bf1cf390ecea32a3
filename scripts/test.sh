#!/usr/bin/env bash
# The project's test command: lints, builds every binary and runs every test
# (unit, property and multi-process end-to-end) on a fresh machine with no
# manual step. Build dependencies are vendored (protoc), come from crates.io or
# from Debian's packages (libclang for RocksDB's bindings); the S3-compatible
# server the storage tests start is installed from crates.io, Kafka's jars
# and OpenSearch's come from Maven Central, helm and FerretDB from the Go
# module proxy, all cached; MariaDB, PostgreSQL, Chromium and the JDK come
# from Debian's packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One target directory outside the clone, reused across runs and clones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

echo "== dependencies"
# RocksDB's bindings are generated with libclang.
scripts/libclang.sh
# A real S3-compatible server for the storage conformance suite.
TOOLS="$HOME/.cache/weir/tools"
if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
  cargo install s3s-fs@0.14.1 --locked --features binary --root "$TOOLS" --target-dir "$HOME/.cache/weir/tools-target"
fi
export WEIR_S3S_FS="$TOOLS/bin/s3s-fs"
# A real Kafka broker (KRaft) for the Kafka tests: its jars come from Maven
# Central through mvn, cached (see scripts/kafka.sh).
# The OpenSearch node's and HDFS's launchers are compiled, so a JDK (javac) is needed.
if ! command -v java >/dev/null || ! command -v javac >/dev/null || ! command -v mvn >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  command -v java >/dev/null && command -v javac >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jdk-headless
  command -v mvn >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq maven
fi
# Real MariaDB and PostgreSQL servers for the JDBC sink's tests, from
# Debian's packages; the tests start their own on free loopback ports.
pg_found() { command -v postgres >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; }
if ! command -v mariadbd >/dev/null || ! command -v mariadb >/dev/null || ! pg_found || ! command -v psql >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  command -v mariadbd >/dev/null && command -v mariadb >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server mariadb-client
  pg_found && command -v psql >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql postgresql-client
fi
# Debian's Chromium and ChromeDriver for the web UI's browser test.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
fi
WEIR_KAFKA_LIBS="$(scripts/kafka.sh fetch | tail -n 1)"
export WEIR_KAFKA_LIBS
# helm v3.22.0 built through the Go module proxy and an offline Kubernetes
# schema validator from PyPI, cached under ~/.cache/weir/tools (see
# scripts/helm.sh), for the chart checks and the chart wiring test.
WEIR_HELM="$(scripts/helm.sh install | tail -n 1)"
export WEIR_HELM
# FerretDB (MongoDB's wire protocol over SQLite) for the MongoDB sink's
# tests, built from its module on the Go module proxy and cached (see
# scripts/ferretdb.sh).
WEIR_FERRETDB="$(scripts/ferretdb.sh install | tail -n 1)"
export WEIR_FERRETDB
# An OpenSearch node (Elasticsearch's REST API) for the search sink's tests:
# OpenSearch's jars from Maven Central and a small launcher compiled here,
# cached (see scripts/opensearch.sh).
WEIR_OPENSEARCH_DIR="$(scripts/opensearch.sh fetch | tail -n 1)"
export WEIR_OPENSEARCH_DIR
# An HDFS (NameNode and DataNode in one JVM) for the HDFS storage tests:
# Hadoop's minicluster jars from Maven Central and a small launcher compiled
# here, cached (see scripts/hdfs.sh).
WEIR_HDFS_DIR="$(scripts/hdfs.sh fetch | tail -n 1)"
export WEIR_HDFS_DIR

echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== chart"
# helm lint and helm template with the default and several values files,
# every rendered manifest validated against the Kubernetes schemas offline;
# invalid values files must be refused.
scripts/helm.sh check
echo "== layering"
# The runtime must stay transport-agnostic (see docs/architecture.md).
for crate in weir-runtime weir-connectors; do
  if cargo tree -p "$crate" -e normal --locked | grep -q '^.*tonic '; then
    echo "$crate depends on tonic" >&2; exit 1
  fi
done
# The job manager learns of connectors only through the registry it is given.
if cargo tree -p weir-jobmanager -e normal --locked | grep -q 'weir-connectors'; then
  echo "weir-jobmanager depends on weir-connectors" >&2; exit 1
fi
echo "== build"
cargo build --workspace --all-targets --locked
echo "== quick start"
# The README's first command, as written (it reuses this build).
quickstart_out="$(scripts/quickstart.sh)"
grep -q '"channel"' <<<"$quickstart_out" || { echo "the quick start printed no results:" >&2; echo "$quickstart_out" | tail -n 20 >&2; exit 1; }
echo "the quick start printed $(grep -c '"channel"' <<<"$quickstart_out") results"
echo "== test"
cargo test --workspace --locked
