#!/usr/bin/env bash
# Resolves the dependencies of a pom (read from standard input) from Maven
# Central into CACHE_DIR/libs with `mvn`, once: CACHE_DIR/fetched keeps the
# pom the jars came from, so the same pom is a no-op and a changed one
# refetches. Prints the libs directory.
#
#   some-pom-generator | scripts/maven-fetch.sh CACHE_DIR
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 CACHE_DIR < pom.xml" >&2; exit 2; }
CACHE="$1"
LIBS="$CACHE/libs"
# Pinned so that the build does not depend on whatever plugin version is newest.
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

POM="$(cat)"
if [ -f "$CACHE/fetched" ] && [ "$(cat "$CACHE/fetched")" = "$POM" ] && [ -d "$LIBS" ]; then
  echo "$LIBS"
  exit 0
fi
command -v mvn >/dev/null || { echo "mvn is required (apt-get install maven)" >&2; exit 1; }
mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$POM" >"$work/pom.xml"
# -DincludeScope=runtime copies compile and runtime dependencies. Maven's
# output is shown only on failure (with -q it still prints colour codes).
if ! mvn -q -B -f "$work/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
  -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
  cat "$work/mvn.log" >&2
  exit 1
fi
rm -rf "$LIBS"
mv "$work/libs" "$LIBS"
printf '%s' "$POM" >"$CACHE/fetched"
echo "$LIBS"
