#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft, no ZooKeeper) for the end-to-end tests,
# installed from Maven Central (the only place the machines reach that ships
# Kafka) with `mvn`, cached under ~/.cache/weir/kafka/<version>/.
#
#   scripts/kafka.sh fetch
#       Resolves the broker, its tools and a log4j2 binding into the cache;
#       prints the libs directory as the last line. Cached: a second run does
#       nothing.
#   scripts/kafka.sh start DATA_DIR PORT CONTROLLER_PORT
#       Writes DATA_DIR/server.properties for a single combined
#       broker+controller node on 127.0.0.1, formats DATA_DIR/log (only the
#       first time, so a restart keeps the data) and execs the broker in the
#       foreground, so the caller can kill it by pid. Uses the jars in
#       $WEIR_KAFKA_LIBS if set, else fetches.
#
# KAFKA_VERSION overrides the version; KAFKA_HEAP the heap (default 512m).
# With KAFKA_SASL_SSL_PORT set, the broker also listens there for SASL over
# TLS: KAFKA_SSL_KEYSTORE is a PEM file holding its key and certificate
# chain, KAFKA_SSL_TRUSTSTORE the PEM CA, and KAFKA_SASL_USERS space-separated
# `name=password` pairs, each a PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 user.
set -euo pipefail

VERSION="${KAFKA_VERSION:-4.1.2}"
CACHE="$HOME/.cache/weir/kafka/$VERSION"
LIBS="$CACHE/libs"

# The broker (kafka_2.13 holds kafka.Kafka and kafka.tools.StorageTool), the
# command-line tools (org.apache.kafka.tools.TopicCommand) without Kafka
# Connect, which they pull in but the topic tool does not use, and log4j2 as
# the SLF4J 1.7 binding, as in Kafka's own distribution.
pom() {
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>weir</groupId>
  <artifactId>weir-kafka-broker</artifactId>
  <version>$VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
EOF
}

# Warnings and errors only, plus the line that says the broker is up (the
# tests wait for it: "[KafkaRaftServer nodeId=1] Kafka Server started").
log_config() {
  cat <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
EOF
}

fetch() {
  echo "resolving Kafka $VERSION (cached in $CACHE)" >&2
  pom | "$(dirname "${BASH_SOURCE[0]}")/maven-fetch.sh" "$CACHE" >/dev/null
  ls "$LIBS"/kafka_2.13-"$VERSION".jar >/dev/null
  echo "$LIBS"
}

start() {
  [ $# -eq 3 ] || { echo "usage: $0 start DATA_DIR PORT CONTROLLER_PORT" >&2; exit 2; }
  local data="$1" port="$2" cport="$3"
  command -v java >/dev/null || { echo "java is required (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
  local libs="${WEIR_KAFKA_LIBS:-}"
  [ -n "$libs" ] || libs="$(fetch | tail -n 1)"
  mkdir -p "$data"
  data="$(cd "$data" && pwd)"
  log_config >"$data/log4j2.properties"
  # One node that is both broker and controller, sized for a small test
  # machine: internal topics with one partition and one replica, no
  # automatic topic creation (tests create what they use), no rebalance delay.
  # A short broker session: after a kill -9 the restarted node waits for its
  # previous registration to expire before it serves (9 s by default).
  cat >"$data/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data/log
num.network.threads=2
num.io.threads=2
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=2000
EOF
  local scram=()
  if [ -n "${KAFKA_SASL_SSL_PORT:-}" ]; then
    local sport="$KAFKA_SASL_SSL_PORT" plain="" user name pw
    for user in ${KAFKA_SASL_USERS:-}; do
      name="${user%%=*}" pw="${user#*=}"
      plain="$plain user_$name=\"$pw\""
      scram+=(--add-scram "SCRAM-SHA-256=[name=$name,password=$pw]" --add-scram "SCRAM-SHA-512=[name=$name,password=$pw]")
    done
    sed -i -e "s|^listeners=.*|listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_SSL://127.0.0.1:$sport|" \
      -e "s|^advertised.listeners=.*|advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sport|" \
      -e "s|^listener.security.protocol.map=.*|listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL|" \
      "$data/server.properties"
    cat >>"$data/server.properties" <<EOF
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=${KAFKA_SSL_KEYSTORE:?KAFKA_SSL_KEYSTORE is needed with KAFKA_SASL_SSL_PORT}
ssl.truststore.type=PEM
ssl.truststore.location=${KAFKA_SSL_TRUSTSTORE:?KAFKA_SSL_TRUSTSTORE is needed with KAFKA_SASL_SSL_PORT}
ssl.client.auth=none
EOF
  fi
  local java=(java "-Xms128m" "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseSerialGC -XX:TieredStopAtLevel=1
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$data/log4j2.properties" -cp "$libs/*")
  if [ ! -f "$data/log/meta.properties" ]; then
    local id
    # A random cluster id (16 bytes, URL-safe base64); its first character
    # must not be '-', which the tool would read as an option.
    id="A$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c 2-22)"
    "${java[@]}" kafka.tools.StorageTool format --config "$data/server.properties" \
      --cluster-id "$id" --ignore-formatted ${scram[@]+"${scram[@]}"} >&2
  fi
  exec "${java[@]}" kafka.Kafka "$data/server.properties"
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  *) echo "usage: $0 fetch | start DATA_DIR PORT CONTROLLER_PORT" >&2; exit 2 ;;
esac
