#!/usr/bin/env bash
# Provision and start a single-node Apache Kafka (KRaft, broker+controller) on 127.0.0.1.
# Usage: start.sh WORKDIR [PORT]   -> prints "127.0.0.1:PORT" when the broker answers; the PID is in WORKDIR/kafka.pid
# Run it again on the same WORKDIR and PORT to restart a stopped broker on its data (the fault tests do).
# Jars come from Maven Central through pom.xml beside this script (cached in ~/.m2 and target/).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$1"; port="${2:-19092}"; ctl=$((port + 1))
mkdir -p "$work/logs" "$work/data"
if ! ls "$here"/target/dependency/kafka_2.13-*.jar >/dev/null 2>&1; then
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime >&2
fi
cp="$here/target/dependency/*"
cat > "$work/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$work/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.cleaner.backoff.ms=1000
PROPS
java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$work/logs")
if [ ! -f "$work/data/meta.properties" ]; then  # a restart keeps the formatted data
  cluster_id="$(java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool random-uuid)"
  java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$work/server.properties" >&2
fi
for log in server.log stdout.log; do  # the readiness check below reads fresh logs only
  if [ -f "$work/logs/$log" ]; then mv "$work/logs/$log" "$work/logs/$log.previous"; fi
done
nohup java -cp "$cp" "${java_opts[@]}" kafka.Kafka "$work/server.properties" >"$work/logs/stdout.log" 2>&1 &
echo $! > "$work/kafka.pid"
for _ in $(seq 1 120); do
  if grep -q "Kafka Server started" "$work/logs/server.log" "$work/logs/stdout.log" 2>/dev/null; then
    echo "127.0.0.1:$port"; exit 0
  fi
  kill -0 "$(cat "$work/kafka.pid")" 2>/dev/null || { echo "kafka died" >&2; tail -30 "$work/logs/stdout.log" "$work/logs/server.log" >&2; exit 1; }
  sleep 0.5
done
echo "kafka did not start within 60 s" >&2; exit 1
