#!/usr/bin/env bash
# Weir's quick start: builds the `weir` binary (installing libclang, perl
# and make first if the machine lacks them) and runs jobs/quickstart.yaml on an embedded job
# manager and task manager in one process. Extra arguments go to
# `weir local` (e.g. `--output json`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/libclang.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
exec cargo run --quiet -p weir --bin weir -- local jobs/quickstart.yaml "$@"
