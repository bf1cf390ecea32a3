#!/usr/bin/env bash
# Idempotent setup for the Flink side of W9 (W1's events -> OpenSearch).
#
#   bash setup.sh [--flink DIR]
#
# Reuses the Flink 2.3.0 baseline (its venv ships Flink's jars under
# pyflink/lib): DIR, else $FLINK_BASELINE_HOME, else $HOME/.cache/flink-baseline;
# if it is not set up yet, the shared workspace's bench/flink/setup.sh (or
# $FLINK_BASELINE_SRC/setup.sh) is run first. flink-connector-opensearch2 and
# its runtime dependencies (the OpenSearch client), minus what flink-dist
# already bundles, are resolved with mvn from Maven Central into
# $HOME/.cache/weir/flink-opensearch/libs, and the job and its Flink 2 sink
# are compiled into $HOME/.cache/weir/flink-opensearch/classes. Nothing is
# written to the repository.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONNECTOR_VERSION="${FLINK_OPENSEARCH_CONNECTOR_VERSION:-2.0.0-1.19}"
CACHE="$HOME/.cache/weir/flink-opensearch"
LIBS="$CACHE/libs"

# ---------------------------------------------------------------- Flink jars
# shellcheck source=../flink-lib.sh
source "$HERE/../flink-lib.sh"

# ---------------------------------------------------------------- connector jars
# flink-* artifacts are "provided" in the connector's pom; commons-lang3,
# slf4j and log4j are inside flink-dist or pyflink/lib.
pom() {
  cat <<EOF2
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>weir</groupId>
  <artifactId>weir-flink-opensearch-bench</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.flink</groupId>
      <artifactId>flink-connector-opensearch2</artifactId>
      <version>$CONNECTOR_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.commons</groupId><artifactId>commons-lang3</artifactId></exclusion>
        <exclusion><groupId>org.slf4j</groupId><artifactId>*</artifactId></exclusion>
        <exclusion><groupId>org.apache.logging.log4j</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
EOF2
}

echo "resolving flink-connector-opensearch2 $CONNECTOR_VERSION (cached in $CACHE)" >&2
pom | "$HERE/../../scripts/maven-fetch.sh" "$CACHE" >/dev/null
ls "$LIBS/flink-connector-opensearch2-$CONNECTOR_VERSION.jar" >/dev/null

# ---------------------------------------------------------------- compile
CP="$(ls "$LIB"/*.jar "$LIBS"/*.jar | tr '\n' ':')"
rm -rf "$CACHE/classes"
mkdir -p "$CACHE/classes"
javac -nowarn -cp "$CP" -d "$CACHE/classes" "$HERE/src/FlinkOpensearchW9.java" \
  "$HERE/src/org/apache/flink/connector/opensearch/sink/Opensearch2CompatSink.java" 2>&1 | grep -v '^Note:' || true
[ -f "$CACHE/classes/FlinkOpensearchW9.class" ] || { echo "compilation failed" >&2; exit 1; }
# run.sh finds the Flink jars through this file.
echo "$LIB" >"$CACHE/flink-lib"
echo "flink-opensearch W9 ready: $CACHE (flink $FLINK_VERSION from $LIB, flink-connector-opensearch2 $CONNECTOR_VERSION)"
