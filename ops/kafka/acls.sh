#!/usr/bin/env bash
# Creates SmartStream's principals (SCRAM-SHA-512 credentials for worker, site and ops) and their
# ACLs (acls.conf) as the super user `admin`. Idempotent: run it again after changing a password
# or the layout. docker-compose.yml runs it as the kafka-init service.
# Environment: KAFKA_BOOTSTRAP, KAFKA_ADMIN_PASSWORD, KAFKA_{WORKER,SITE,OPS}_PASSWORD,
# SMARTSTREAM_TOPIC_PREFIX (prepended to the names), KAFKA_SECURITY_PROTOCOL (SASL_PLAINTEXT),
# KAFKA_BIN (the Kafka tools, /opt/kafka/bin).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=security.sh
source "$here/security.sh"
bin="${KAFKA_BIN:-/opt/kafka/bin}"
bootstrap="${KAFKA_BOOTSTRAP:?KAFKA_BOOTSTRAP must be set}"
prefix="${SMARTSTREAM_TOPIC_PREFIX:-}"
config="$(mktemp)"
trap 'rm -f "$config"' EXIT
admin_client_properties "${KAFKA_ADMIN_PASSWORD:?KAFKA_ADMIN_PASSWORD must be set}" \
  "${KAFKA_SECURITY_PROTOCOL:-SASL_PLAINTEXT}" > "$config"
tool() { "$bin/$1" --bootstrap-server "$bootstrap" --command-config "$config" "${@:2}"; }

for user in worker site ops; do
  var="KAFKA_${user^^}_PASSWORD"
  check_password "$var" "${!var:-}"
  tool kafka-configs.sh --alter --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=${!var}]"
done

while read -r principal operations resource pattern names; do
  if [[ -z "$principal" || "$principal" == \#* ]]; then continue; fi
  args=(--add --allow-principal "User:$principal" --resource-pattern-type "$pattern")
  for operation in ${operations//,/ }; do args+=(--operation "$operation"); done
  for name in $names; do args+=("--$resource" "$prefix$name"); done
  tool kafka-acls.sh "${args[@]}"
done < "$here/acls.conf"
echo "principals worker, site, ops and their ACLs are in place"
