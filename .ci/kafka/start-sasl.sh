#!/usr/bin/env bash
# Provision and start a single-node Apache Kafka (KRaft) on 127.0.0.1 with SmartStream's security:
# a SASL_SSL client listener (SCRAM-SHA-512, a certificate for 127.0.0.1/localhost signed by a CA
# made here), the standard authorizer denying by default, and only the super user `admin`
# (created when the storage is formatted). The properties come from ops/kafka/security.sh, the
# ones docker-compose.yml deploys. Principals and ACLs are added by the caller as admin.
# Usage: KAFKA_ADMIN_PASSWORD=... start-sasl.sh WORKDIR PORT CONTROLLER_PORT
#   -> prints "127.0.0.1:PORT" when the broker answers; the CA is WORKDIR/tls/ca.crt and the
#      PID is in WORKDIR/kafka.pid.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$1"; port="$2"; ctl="$3"
: "${KAFKA_ADMIN_PASSWORD:?KAFKA_ADMIN_PASSWORD must be set}"
# shellcheck source=../../ops/kafka/security.sh
source "$here/../../ops/kafka/security.sh"
mkdir -p "$work/logs" "$work/data" "$work/tls"
if ! ls "$here"/target/dependency/kafka_2.13-*.jar >/dev/null 2>&1; then
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime >&2
fi
cp="$here/target/dependency/*"

tls="$work/tls"
store_password="$(openssl rand -hex 16)"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=SmartStream test CA" \
  -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$tls/broker.key" -out "$tls/broker.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
  > "$tls/broker.ext"
openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
  -CAcreateserial -days 2 -extfile "$tls/broker.ext" -out "$tls/broker.crt" 2>/dev/null
openssl pkcs12 -export -name broker -in "$tls/broker.crt" -inkey "$tls/broker.key" \
  -certfile "$tls/ca.crt" -passout "pass:$store_password" -out "$tls/broker.p12"

umask 077  # the properties hold the admin password
{
  cat <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl
listeners=CLIENT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=CLIENT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$store_password
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.crt
log.dirs=$work/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  security_properties "$KAFKA_ADMIN_PASSWORD"
} > "$work/server.properties"

java_opts=(-Xms128m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$work/logs")
cluster_id="$(java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool random-uuid)"
java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
  -c "$work/server.properties" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]" >&2
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
