#!/usr/bin/env bash
# Idempotent setup for the Flink side of W4 (Kafka -> tumbling window -> Kafka).
#
#   bash setup.sh [--flink DIR]
#
# Reuses the Flink 2.3.0 baseline (its venv ships Flink's jars under
# pyflink/lib): DIR, else $FLINK_BASELINE_HOME, else $HOME/.cache/flink-baseline;
# if it is not set up yet, the shared workspace's bench/flink/setup.sh (or
# $FLINK_BASELINE_SRC/setup.sh) is run first. The Kafka connector and
# kafka-clients (with their runtime dependencies, minus what flink-dist already
# bundles) are resolved with mvn from Maven Central into
# $HOME/.cache/weir/flink-kafka/libs, and src/FlinkKafkaW4.java is compiled into
# $HOME/.cache/weir/flink-kafka/classes. Nothing is written to the repository.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONNECTOR_VERSION="${FLINK_KAFKA_CONNECTOR_VERSION:-5.0.0-2.2}"
KAFKA_CLIENTS_VERSION="${FLINK_KAFKA_CLIENTS_VERSION:-4.2.0}"
CACHE="$HOME/.cache/weir/flink-kafka"
LIBS="$CACHE/libs"

# ---------------------------------------------------------------- Flink jars
# shellcheck source=../flink-lib.sh
source "$HERE/../flink-lib.sh"

# ---------------------------------------------------------------- connector jars
# flink-* artifacts are "provided" in the connector's pom (so not copied with
# the runtime scope); commons-lang3 and slf4j-api are inside flink-dist.
pom() {
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>weir</groupId>
  <artifactId>weir-flink-kafka-bench</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.flink</groupId>
      <artifactId>flink-connector-kafka</artifactId>
      <version>$CONNECTOR_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.commons</groupId><artifactId>commons-lang3</artifactId></exclusion>
        <exclusion><groupId>org.slf4j</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-clients</artifactId>
      <version>$KAFKA_CLIENTS_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.slf4j</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
EOF
}

echo "resolving flink-connector-kafka $CONNECTOR_VERSION + kafka-clients $KAFKA_CLIENTS_VERSION (cached in $CACHE)" >&2
pom | "$HERE/../../scripts/maven-fetch.sh" "$CACHE" >/dev/null
ls "$LIBS/flink-connector-kafka-$CONNECTOR_VERSION.jar" "$LIBS/kafka-clients-$KAFKA_CLIENTS_VERSION.jar" >/dev/null

# ---------------------------------------------------------------- compile
CP="$(ls "$LIB"/*.jar "$LIBS"/*.jar | tr '\n' ':')"
rm -rf "$CACHE/classes"
mkdir -p "$CACHE/classes"
javac -nowarn -cp "$CP" -d "$CACHE/classes" "$HERE/src/FlinkKafkaW4.java" 2>&1 | grep -v '^Note:' || true
[ -f "$CACHE/classes/FlinkKafkaW4.class" ] || { echo "compilation failed" >&2; exit 1; }
# run.sh finds the Flink jars through this file.
echo "$LIB" >"$CACHE/flink-lib"
echo "flink-kafka W4 ready: $CACHE (flink $FLINK_VERSION from $LIB, flink-connector-kafka $CONNECTOR_VERSION, kafka-clients $KAFKA_CLIENTS_VERSION)"
