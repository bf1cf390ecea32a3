#!/usr/bin/env bash
# FerretDB, a server speaking MongoDB's wire protocol over SQLite, for the
# MongoDB sink's tests (the tests start it themselves on a free loopback
# port with a throwaway directory).
#
#   scripts/ferretdb.sh install   build it once, cached; prints its path last
#
# It is built from its module source on the Go module proxy: `go install`
# alone gives a binary that refuses to start, because the version file the
# project's release build writes is empty in the module, so the source is
# copied, the version written, and the copy built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FERRETDB_VERSION=1.24.2
# The Go release FerretDB's go.mod asks for (its `go` line).
FERRETDB_GO=1.24.0
MODULE=github.com/FerretDB/FerretDB

TOOLS="$HOME/.cache/weir/tools"
BIN="$TOOLS/bin/ferretdb"

log() { echo "ferretdb.sh: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=scripts/go-env.sh
. scripts/go-env.sh

ferretdb_ok() {
  [ -x "$BIN" ] || return 1
  local v
  # Read whole before matching: `grep -q` in a pipe would close it early, and
  # with pipefail the version command's SIGPIPE would read as a failure.
  v="$("$BIN" --version 2>/dev/null)" || return 1
  grep -q "version: v$FERRETDB_VERSION" <<< "$v"
}

install() {
  ferretdb_ok && return
  local go tmp dir
  go="$(go_cmd "$FERRETDB_GO")"
  log "building FerretDB v$FERRETDB_VERSION with $go (a few minutes on first run)"
  tmp="$(mktemp -d)"
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' RETURN
  (cd "$tmp" && GO111MODULE=on GOFLAGS=-mod=mod "$go" mod download -json "$MODULE@v$FERRETDB_VERSION") > "$tmp/dl.json"
  dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' "$tmp/dl.json")"
  [ -d "$dir" ] || die "downloading $MODULE@v$FERRETDB_VERSION failed"
  cp -r "$dir" "$tmp/src"
  chmod -R u+w "$tmp/src"
  echo "v$FERRETDB_VERSION" > "$tmp/src/build/version/version.txt"
  mkdir -p "$TOOLS/bin"
  (cd "$tmp/src" && GOFLAGS=-mod=mod "$go" build -trimpath -o "$BIN.partial" ./cmd/ferretdb) >&2
  mv "$BIN.partial" "$BIN"
  ferretdb_ok || die "$BIN does not report v$FERRETDB_VERSION after building it"
}

case "${1:-}" in
  install)
    install
    echo "$BIN"
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
