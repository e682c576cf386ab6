#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft) on 127.0.0.1 for tests, CI and demos.
#   scripts/kafka.sh start|stop|status|bootstrap
# The broker's jars come from Maven Central (tools/kafka/pom.xml, cached in var/kafka/libs);
# Java 17 and Maven must be installed. Port: RTINDEX_KAFKA_PORT (default 19092; the
# controller listens on the next port). Data and logs: var/kafka/ (ignored by git).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="$root/var/kafka"
port="${RTINDEX_KAFKA_PORT:-19092}"
controller_port=$((port + 1))
pidfile="$home/broker.pid"

die() { echo "kafka.sh: $*" >&2; exit 1; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() {  # the broker answers a metadata request (not just a TCP connection)
  [ -x "$root/.venv/bin/python" ] || die "no .venv: run scripts/test.sh (or scripts/bootstrap.sh) first"
  "$root/.venv/bin/python" - "$port" >/dev/null 2>&1 <<'PY'
import sys
from confluent_kafka.admin import AdminClient
AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"}).list_topics(timeout=3)
PY
}

fetch_jars() {
  [ -f "$home/libs/.complete" ] && return
  command -v java >/dev/null || die "java not found: install Java 17 (e.g. apt-get install openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "mvn not found: install Maven (e.g. apt-get install maven)"
  echo "kafka.sh: fetching the broker's jars from Maven Central (once) ..."
  rm -rf "$home/libs"
  mvn -q -B -f "$root/tools/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$home/libs" -DincludeScope=runtime || die "mvn could not fetch the Kafka jars (is Maven Central reachable?)"
  touch "$home/libs/.complete"
}

write_config() {
  mkdir -p "$home/data"
  cat > "$home/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$home/data
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS
  cat > "$home/log4j2.yaml" <<'LOG'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaServer
        level: INFO
LOG
}

start() {
  if running; then
    answers && { echo "kafka.sh: broker already running on 127.0.0.1:$port"; return; }
  fi
  fetch_jars
  write_config
  if [ ! -f "$home/data/meta.properties" ]; then
    cluster_id="$(java -cp "$home/libs/*" kafka.tools.StorageTool random-uuid)"
    java -cp "$home/libs/*" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$home/server.properties" >/dev/null || die "could not format $home/data"
  fi
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Dlog4j2.configurationFile="$home/log4j2.yaml" \
    -cp "$home/libs/*" kafka.Kafka "$home/server.properties" >"$home/broker.log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 120); do
    if answers; then echo "kafka.sh: broker up on 127.0.0.1:$port (pid $(cat "$pidfile"))"; return; fi
    running || die "the broker exited during start-up; see $home/broker.log"
    sleep 0.5
  done
  die "the broker did not answer within 60 s; see $home/broker.log"
}

stop() {
  if ! running; then echo "kafka.sh: broker not running"; rm -f "$pidfile"; return; fi
  pid="$(cat "$pidfile")"
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$pidfile"
  echo "kafka.sh: broker stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running && answers; then echo "running on 127.0.0.1:$port"; else echo "not running"; exit 1; fi ;;
  bootstrap) echo "127.0.0.1:$port" ;;
  *) echo "usage: scripts/kafka.sh start|stop|status|bootstrap" >&2; exit 2 ;;
esac
