#!/usr/bin/env bash
# The compose broker (apache/kafka image): single-node KRaft with SASL/SCRAM-SHA-512 clients on
# the compose network and the standard authorizer (security.sh). The storage is formatted once,
# with the super user `admin`; ops/kafka/acls.sh then adds the application's principals.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=security.sh
source "$here/security.sh"
: "${KAFKA_ADMIN_PASSWORD:?KAFKA_ADMIN_PASSWORD must be set (.env)}"
bin=/opt/kafka/bin
props=/opt/kafka/config/smartstream.properties
umask 077  # the properties hold the admin password
{
  cat <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093
listeners=CLIENT://:9092,CONTROLLER://localhost:9093
advertised.listeners=CLIENT://kafka:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
log.dirs=/var/lib/kafka/data
num.partitions=8
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  security_properties "$KAFKA_ADMIN_PASSWORD"
} > "$props"
admin_client_properties "$KAFKA_ADMIN_PASSWORD" SASL_PLAINTEXT > /tmp/admin.properties  # healthcheck
"$bin/kafka-storage.sh" format --ignore-formatted -t "$("$bin/kafka-storage.sh" random-uuid)" \
  -c "$props" --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]"
exec "$bin/kafka-server-start.sh" "$props"
