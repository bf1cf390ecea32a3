#!/usr/bin/env bash
# Usage: run.sh BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC N P
#   BOOTSTRAP    Kafka bootstrap servers, e.g. 127.0.0.1:9092
#   INPUT_TOPIC  pre-loaded with the N generator events as JSON, P partitions
#   OUTPUT_TOPIC must exist; the job's window results are appended to it
#   N            number of events in the input topic (for the result line)
#   P            parallelism
# Prints one result line on stdout; logging (errors only) goes to stderr.
# Environment: FLINK_KAFKA_JAVA_OPTS (JVM options, default -Xms2g -Xmx2g),
# FLINK_KAFKA_TXN_PREFIX (transactional id prefix, default weir-w4-flink).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -eq 5 ] || { echo "usage: run.sh BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC N P" >&2; exit 2; }
CACHE="$HOME/.cache/weir/flink-kafka"

if [ ! -f "$CACHE/classes/FlinkKafkaW4.class" ] || [ ! -f "$CACHE/flink-lib" ]; then
  echo "not set up: run bench/flink-kafka/setup.sh first" >&2
  exit 1
fi
LIB="$(cat "$CACHE/flink-lib")"
[ -d "$LIB" ] || { echo "Flink jars missing at $LIB: rerun setup.sh" >&2; exit 1; }
CP="$CACHE/classes:$(ls "$LIB"/*.jar "$CACHE"/libs/*.jar | tr '\n' ':')"

# Checkpoints go to a fresh local directory, removed afterwards.
CKPT="$(mktemp -d "$CACHE/checkpoints.XXXXXX")"
trap 'rm -rf "$CKPT"' EXIT

# Module opens as in Flink's default config.yaml (env.java.opts.all).
OPENS=""
for pkg in java.lang java.net java.io java.nio sun.nio.ch java.lang.reflect java.text java.time \
           java.util java.util.concurrent java.util.concurrent.atomic java.util.concurrent.locks; do
  OPENS="$OPENS --add-opens=java.base/$pkg=ALL-UNNAMED"
done

# shellcheck disable=SC2086
java ${FLINK_KAFKA_JAVA_OPTS:--Xms2g -Xmx2g} $OPENS \
  -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
  -cp "$CP" FlinkKafkaW4 "$1" "$2" "$3" "$4" "$5" "$CKPT" "${FLINK_KAFKA_TXN_PREFIX:-weir-w4-flink}"
