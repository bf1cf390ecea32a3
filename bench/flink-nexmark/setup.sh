#!/usr/bin/env bash
# Idempotent setup for the Flink side of the Nexmark comparison.
#
#   bash setup.sh [--flink DIR]
#
# Runs bench/flink-kafka/setup.sh (the Flink 2.3.0 baseline's jars, which
# hold the Table planner and the json format, plus flink-connector-kafka and
# kafka-clients from Maven Central) and compiles src/FlinkNexmark.java into
# $HOME/.cache/weir/flink-nexmark/classes. Nothing is written to the repository.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$HOME/.cache/weir/flink-nexmark"
KAFKA_CACHE="$HOME/.cache/weir/flink-kafka"

bash "$HERE/../flink-kafka/setup.sh" "$@" >&2
LIB="$(cat "$KAFKA_CACHE/flink-lib")"
ls "$LIB"/flink-json-*.jar >/dev/null || { echo "no flink-json jar in $LIB" >&2; exit 1; }

CP="$(ls "$LIB"/*.jar "$KAFKA_CACHE"/libs/*.jar | tr '\n' ':')"
rm -rf "$CACHE/classes"
mkdir -p "$CACHE/classes"
javac -nowarn -cp "$CP" -d "$CACHE/classes" "$HERE/src/FlinkNexmark.java" 2>&1 | grep -v '^Note:' || true
[ -f "$CACHE/classes/FlinkNexmark.class" ] || { echo "compilation failed" >&2; exit 1; }
echo "flink-nexmark ready: $CACHE (Flink jars from $LIB)"
