# shellcheck shell=bash
# Kafka's security settings, sourced by the compose broker (ops/kafka/broker.sh), the compose
# init (ops/kafka/acls.sh) and the test broker (.ci/kafka/start-sasl.sh), so the tests run the
# configuration compose deploys.
# Clients authenticate with SCRAM-SHA-512 on the CLIENT listener (credentials live in the
# cluster's metadata); the CONTROLLER listener takes PLAIN with one static admin login (SCRAM
# credentials cannot authenticate the quorum that stores them). Every request is authorized by
# the standard authorizer: without an ACL, nobody but the super user `admin` may do anything.

# Passwords go into JAAS strings, --add-scram lists and Redis URLs: URL-safe characters only.
check_password() {
  local name="$1" value="$2"
  if [[ ! "$value" =~ ^[A-Za-z0-9._~-]{12,}$ ]]; then
    echo "$name: at least 12 characters among A-Z a-z 0-9 . _ ~ - (openssl rand -hex 24)" >&2
    return 1
  fi
}

# The broker's authorizer and SASL settings; $1 = the admin password.
security_properties() {
  check_password KAFKA_ADMIN_PASSWORD "$1" || return 1
  cat <<PROPS
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
inter.broker.listener.name=CLIENT
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$1";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$1" user_admin="$1";
PROPS
}

# A Kafka tool's login as admin; $1 = the admin password, $2 = the CLIENT listener's protocol.
admin_client_properties() {
  check_password KAFKA_ADMIN_PASSWORD "$1" || return 1
  cat <<PROPS
security.protocol=$2
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$1";
PROPS
}
