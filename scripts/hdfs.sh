#!/usr/bin/env bash
# A real HDFS for the tests: a NameNode and a DataNode in one JVM, Hadoop's
# MiniDFSCluster from the hadoop-client-minicluster jars on Maven Central,
# resolved with `mvn` and cached under ~/.cache/weir/hdfs/<version>/.
#
#   scripts/hdfs.sh fetch
#       Resolves the jars into CACHE/libs and compiles the small launcher
#       scripts/hdfs/WeirDfs.java into CACHE/classes; prints CACHE as the
#       last line. Cached: a second run does nothing (a changed launcher or
#       version is rebuilt).
#   scripts/hdfs.sh run DIR NAMENODE_PORT BASE_DIR
#       Execs the cluster in the foreground, so the caller can kill it by
#       pid, with DIR the directory that `fetch` printed. The NameNode
#       listens on 127.0.0.1:NAMENODE_PORT (hdfs://127.0.0.1:NAMENODE_PORT),
#       every other port is free-chosen on 127.0.0.1. BASE_DIR holds the
#       metadata and the blocks; starting again on the same BASE_DIR keeps
#       the files. The line "WEIR-DFS-READY" on standard output says it is up.
#
# Needs a JDK (java and javac 17). HADOOP_VERSION overrides the version,
# HDFS_HEAP the heap (default 512m).
set -euo pipefail

VERSION="${HADOOP_VERSION:-3.4.2}"
CACHE="$HOME/.cache/weir/hdfs/$VERSION"
LIBS="$CACHE/libs"
CLASSES="$CACHE/classes"
SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LAUNCHER="$SCRIPTS/hdfs/WeirDfs.java"
# shellcheck source=java-launcher.sh
source "$SCRIPTS/java-launcher.sh"

# The minicluster jar holds the NameNode and DataNode (Hadoop's own
# third-party dependencies shaded inside); hadoop-client-runtime and
# hadoop-client-api, which it depends on, hold the rest of Hadoop.
pom() {
  cat <<EOF2
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>weir</groupId>
  <artifactId>weir-hdfs</artifactId>
  <version>$VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.hadoop</groupId>
      <artifactId>hadoop-client-minicluster</artifactId>
      <version>$VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.hadoop</groupId>
      <artifactId>hadoop-client-runtime</artifactId>
      <version>$VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF2
}

# Compiles the launcher when it or the jars (their pom) changed.
compile() {
  compile_launcher "$(pom; cat "$LAUNCHER")" WeirDfs
}

fetch() {
  echo "resolving Hadoop's minicluster $VERSION (cached in $CACHE)" >&2
  pom | "$SCRIPTS/maven-fetch.sh" "$CACHE" >/dev/null
  ls "$LIBS/hadoop-client-minicluster-$VERSION.jar" >/dev/null
  compile
  echo "$CACHE"
}

run() {
  [ $# -eq 3 ] || { echo "usage: $0 run DIR NAMENODE_PORT BASE_DIR" >&2; exit 2; }
  local dir="$1" port="$2" base="$3"
  command -v java >/dev/null || { echo "java is required (apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
  [ -f "$dir/classes/WeirDfs.class" ] || { echo "$dir has no launcher: run $0 fetch" >&2; exit 1; }
  mkdir -p "$base"
  base="$(cd "$base" && pwd)"
  # A small heap and the serial collector suit a test cluster; C1 only
  # (TieredStopAtLevel=1) starts faster.
  exec java "-Xms${HDFS_HEAP:-512m}" "-Xmx${HDFS_HEAP:-512m}" \
    -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true -Dfile.encoding=UTF-8 \
    -cp "$dir/libs/*:$dir/classes" WeirDfs "$base" "$port"
}

case "${1:-}" in
  fetch) fetch ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 fetch | run DIR NAMENODE_PORT BASE_DIR" >&2; exit 2 ;;
esac
