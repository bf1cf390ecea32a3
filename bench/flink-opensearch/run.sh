#!/usr/bin/env bash
# Usage: run.sh URL INDEX N P
#   URL    the OpenSearch node, e.g. http://127.0.0.1:9200
#   INDEX  an existing index; the job adds one document per even-auction event
#   N      number of generated events
#   P      parallelism
# Prints one result line on stdout; logging (errors only) goes to stderr.
# Environment: FLINK_OPENSEARCH_JAVA_OPTS (JVM options, default -Xms2g -Xmx2g).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -eq 4 ] || { echo "usage: run.sh URL INDEX N P" >&2; exit 2; }
CACHE="$HOME/.cache/weir/flink-opensearch"

if [ ! -f "$CACHE/classes/FlinkOpensearchW9.class" ] || [ ! -f "$CACHE/flink-lib" ]; then
  echo "not set up: run bench/flink-opensearch/setup.sh first" >&2
  exit 1
fi
LIB="$(cat "$CACHE/flink-lib")"
[ -d "$LIB" ] || { echo "Flink jars missing at $LIB: rerun setup.sh" >&2; exit 1; }
CP="$CACHE/classes:$(ls "$LIB"/*.jar "$CACHE"/libs/*.jar | tr '\n' ':')"

# Module opens as in Flink's default config.yaml (env.java.opts.all).
OPENS=""
for pkg in java.lang java.net java.io java.nio sun.nio.ch java.lang.reflect java.text java.time \
           java.util java.util.concurrent java.util.concurrent.atomic java.util.concurrent.locks; do
  OPENS="$OPENS --add-opens=java.base/$pkg=ALL-UNNAMED"
done

# shellcheck disable=SC2086
java ${FLINK_OPENSEARCH_JAVA_OPTS:--Xms2g -Xmx2g} $OPENS \
  -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
  -cp "$CP" FlinkOpensearchW9 "$1" "$2" "$3" "$4"
