#!/usr/bin/env bash
# A soak run, not part of CI: the payment filter and the windowed count of
# jobs/ on a local cluster (a job manager, two task managers) fed a steady
# stream for WEIR_SOAK_MINUTES (default 30) while a task manager running
# their tasks is killed with SIGKILL every WEIR_SOAK_KILL_EVERY seconds
# (default 120). It fails unless both outputs are exact and the memory of
# the processes and the size of the checkpoint storage stay flat; it prints
# the figures. Kafka's jars come from Maven Central as for the test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
scripts/libclang.sh
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jdk-headless maven
fi
WEIR_KAFKA_LIBS="$(scripts/kafka.sh fetch | tail -n 1)"
export WEIR_KAFKA_LIBS
# The same build as the test command's (every workspace member's features).
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --test kafka -- --ignored --exact soak_two_jobs_through_a_kill_every_two_minutes --nocapture
