# Sourced by scripts/hdfs.sh and scripts/opensearch.sh, which run a server
# from its jars through a small launcher of their own. Expects CACHE, LIBS
# (the jars), CLASSES and LAUNCHER (the launcher's source).
#
# compile_launcher STAMP CLASS [HOOK] compiles LAUNCHER against the jars into
# CLASSES, again only when STAMP (what the classes are built from: the pom,
# the launcher, ...) changed or CLASS.class is missing; HOOK, a function, is
# called with the new classes directory to add files to it. CLASSES is
# replaced in one move, so a half-compiled launcher is never used.
compile_launcher() {
  local stamp="$1" class="$2" hook="${3:-}" tmp
  if [ -f "$CLASSES/stamp" ] && [ "$(cat "$CLASSES/stamp")" = "$stamp" ] && [ -f "$CLASSES/$class.class" ]; then
    return
  fi
  command -v javac >/dev/null || { echo "javac is required (apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
  tmp="$(mktemp -d "$CACHE/classes.XXXXXX")"
  chmod 755 "$tmp"
  if ! javac -nowarn -cp "$LIBS/*" -d "$tmp" "$LAUNCHER" >&2; then
    rm -rf "$tmp"
    exit 1
  fi
  [ -z "$hook" ] || "$hook" "$tmp"
  printf '%s' "$stamp" >"$tmp/stamp"
  rm -rf "$CLASSES"
  mv "$tmp" "$CLASSES"
}
