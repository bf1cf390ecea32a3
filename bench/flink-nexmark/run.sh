#!/usr/bin/env bash
# Runs one Flink SQL script (Nexmark's DDL and a query, placeholders filled
# in) on a local MiniCluster with PARALLELISM slots:
#
#   bash run.sh NAME SCRIPT PARALLELISM
#
# Prints the rows of a `print` sink, then
# `workload=NAME engine=flink parallelism=P seconds=S` (from submitting the
# INSERT until its job finished). Run setup.sh first.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -eq 3 ] || { echo "usage: $0 NAME SCRIPT PARALLELISM" >&2; exit 2; }
CACHE="$HOME/.cache/weir/flink-nexmark"
KAFKA_CACHE="$HOME/.cache/weir/flink-kafka"
if [ ! -f "$CACHE/classes/FlinkNexmark.class" ] || [ ! -f "$KAFKA_CACHE/flink-lib" ]; then
  echo "not set up: run bench/flink-nexmark/setup.sh first" >&2
  exit 1
fi
LIB="$(cat "$KAFKA_CACHE/flink-lib")"
CP="$CACHE/classes:$(ls "$LIB"/*.jar "$KAFKA_CACHE"/libs/*.jar | tr '\n' ':')"

# Module opens as in Flink's default config.yaml (env.java.opts.all).
OPENS=""
for pkg in java.lang java.net java.io java.nio sun.nio.ch java.lang.reflect java.text java.time \
           java.util java.util.concurrent java.util.concurrent.atomic java.util.concurrent.locks; do
  OPENS="$OPENS --add-opens=java.base/$pkg=ALL-UNNAMED"
done

# shellcheck disable=SC2086
exec java ${FLINK_NEXMARK_JAVA_OPTS:--Xms2g -Xmx2g} $OPENS \
  -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
  -cp "$CP" FlinkNexmark "$1" "$2" "$3"
