#!/usr/bin/env bash
# A real OpenSearch node (its REST API is Elasticsearch's) for the tests,
# built from OpenSearch's jars on Maven Central (the only place the machines
# reach that ships OpenSearch) with `mvn`, cached under
# ~/.cache/weir/opensearch/<version>/.
#
#   scripts/opensearch.sh fetch
#       Resolves the server and its Netty transport/HTTP plugin into
#       CACHE/libs and compiles the small launcher scripts/opensearch/WeirNode.java
#       into CACHE/classes; prints CACHE as the last line. Cached: a second
#       run does nothing (a changed launcher or version is rebuilt).
#   scripts/opensearch.sh run DIR HTTP_PORT TRANSPORT_PORT DATA_DIR
#       Execs the node in the foreground, so the caller can kill it by pid,
#       with DIR the directory that `fetch` printed. It listens on 127.0.0.1
#       on both ports; DATA_DIR/data holds the indices and DATA_DIR/home the
#       (empty) home directory the node requires, so starting again on the
#       same DATA_DIR keeps the documents. It logs to standard output; the
#       line "started" (from org.opensearch.node.Node) says it is up, as does
#       `GET http://127.0.0.1:HTTP_PORT/` answering.
#
# The launcher starts the node with OpenSearch's Node class directly, not the
# distribution's launcher: see WeirNode.java for why and for the settings.
#
# Needs a JDK (java and javac 17; OpenSearch 2.19 is the last line that runs
# on Java 17, 3.x needs 21). OPENSEARCH_VERSION overrides the version,
# OPENSEARCH_HEAP the heap (default 512m).
set -euo pipefail

VERSION="${OPENSEARCH_VERSION:-2.19.6}"
CACHE="$HOME/.cache/weir/opensearch/$VERSION"
LIBS="$CACHE/libs"
CLASSES="$CACHE/classes"
SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LAUNCHER="$SCRIPTS/opensearch/WeirNode.java"
# shellcheck source=java-launcher.sh
source "$SCRIPTS/java-launcher.sh"

# The server (org.opensearch:opensearch) and the transport-netty4-client
# plugin, which the distribution ships as a module: without it the node has
# neither a transport nor an HTTP server. log4j-core is an optional
# dependency of the server, so it is named here, in the server's version.
# Nothing else is needed for indexing, bulk, search and counts; scripting
# (lang-painless) and the extra analyzers (analysis-common) are left out.
pom() {
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>weir</groupId>
  <artifactId>weir-opensearch-node</artifactId>
  <version>$VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.opensearch</groupId>
      <artifactId>opensearch</artifactId>
      <version>$VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.opensearch.plugin</groupId>
      <artifactId>transport-netty4-client</artifactId>
      <version>$VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.25.4</version>
    </dependency>
  </dependencies>
</project>
EOF
}

# Warnings and errors only, plus the lines that say where the node listens
# and that it has started. Found by log4j on the classpath (CACHE/classes).
log_config() {
  cat <<'EOF'
status = error
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d{ISO8601}][%-5p][%c{1.}] %m%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.node.name = org.opensearch.node.Node
logger.node.level = info
logger.http.name = org.opensearch.http.AbstractHttpServerTransport
logger.http.level = info
# It warns at every start that a default it does not change is in force.
logger.dangling.name = org.opensearch.gateway.DanglingIndicesState
logger.dangling.level = error
EOF
}

# Compiles the launcher when it, the log configuration or the jars (their
# pom) changed; the log configuration goes next to the classes.
write_log_config() {
  log_config >"$1/log4j2.properties"
}

compile() {
  compile_launcher "$(pom; log_config; cat "$LAUNCHER")" WeirNode write_log_config
}

fetch() {
  echo "resolving OpenSearch $VERSION (cached in $CACHE)" >&2
  pom | "$SCRIPTS/maven-fetch.sh" "$CACHE" >/dev/null
  ls "$LIBS/opensearch-$VERSION.jar" "$LIBS/transport-netty4-client-$VERSION.jar" >/dev/null
  compile
  echo "$CACHE"
}

run() {
  [ $# -eq 4 ] || { echo "usage: $0 run DIR HTTP_PORT TRANSPORT_PORT DATA_DIR" >&2; exit 2; }
  local dir="$1" http="$2" transport="$3" data="$4"
  command -v java >/dev/null || { echo "java is required (apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
  [ -f "$dir/classes/WeirNode.class" ] || { echo "$dir has no launcher: run $0 fetch" >&2; exit 1; }
  mkdir -p "$data"
  data="$(cd "$data" && pwd)"
  # A small heap and the serial collector suit a test node; C1 only
  # (TieredStopAtLevel=1) starts faster. The -D options are those of
  # OpenSearch's own jvm.options that matter here: Netty without Unsafe and
  # without pooled direct buffers (the heap holds them), no log4j shutdown
  # hook (the launcher's own hook closes the node and still logs), no JMX,
  # and the locale data OpenSearch 2.x expects on Java 17 for date formats.
  exec java "-Xms${OPENSEARCH_HEAP:-512m}" "-Xmx${OPENSEARCH_HEAP:-512m}" \
    -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-OmitStackTraceInFastThrow \
    -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Djna.nosys=true \
    -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true \
    -Dio.netty.recycler.maxCapacityPerThread=0 -Dio.netty.allocator.numDirectArenas=0 \
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true \
    -Djava.locale.providers=SPI,COMPAT \
    -cp "$dir/libs/*:$dir/classes" WeirNode "$data/home" "$data/data" "$http" "$transport"
}

case "${1:-}" in
  fetch) fetch ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 fetch | run DIR HTTP_PORT TRANSPORT_PORT DATA_DIR" >&2; exit 2 ;;
esac
