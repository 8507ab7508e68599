#!/usr/bin/env bash
# The deployment topology as processes on loopback: two broker replicas sharing
# nothing but Redis, redis-server, the CAF simulator served with mutual TLS, and
# Prometheus scraping both replicas with deploy/prometheus/alerts.yaml.
#
#   deploy/local/up.sh                 start, print the addresses, stop on Ctrl-C
#   deploy/local/up.sh --background    start, write $CAF_LOCAL_DIR/env, return;
#                                      stop with deploy/local/down.sh "$CAF_LOCAL_DIR"
#
# Optional settings (environment): CAF_LOCAL_POST_PER_DAY (a post's daily
# quota, 2000), CAF_LOCAL_DISTINCT_DOSSIERS_PER_HOUR (the bulk-lookup rule, 60),
# CAF_LOCAL_SHADOW_FILE (a candidate policy run in shadow mode),
# CAF_LOCAL_AGENT_ERROR_BURST (refusals an agent may cause in a row, 30).
#
# State (configuration copies, audit logs, logs, Prometheus data) goes to
# $CAF_LOCAL_DIR (default: a new directory under /tmp). The broker binary is
# target/release/caf-broker when present, else target/debug/caf-broker (build it
# with `cargo build`). Environment stays `dev`: the development certificates
# of certs-dev/ are used, and refused by the production guards elsewhere.
# Every wait is bounded; a failure prints the log of what failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

background=false
case "${1:-}" in
  --background) background=true ;;
  "") ;;
  *) echo "usage: $0 [--background]" >&2; exit 2 ;;
esac

fail() { echo "up.sh: $*" >&2; exit 1; }

bin=${CAF_BROKER_BIN:-}
if [ -z "$bin" ]; then
  if [ -x target/release/caf-broker ]; then bin=target/release/caf-broker; else bin=target/debug/caf-broker; fi
fi
[ -x "$bin" ] || fail "no broker binary at $bin: run \`cargo build\` first"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
for tool in redis-server prometheus curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing (Debian: apt-get install -y redis-server prometheus curl python3)"
done

dir=${CAF_LOCAL_DIR:-$(mktemp -d /tmp/caf-local.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ ! -e "$dir/env" ] || fail "$dir already holds a topology (stop it with deploy/local/down.sh $dir)"

# Free loopback ports, chosen once (a port could be taken between the choice
# and the bind; the readiness waits below then fail with the log).
read -r port_a port_b ops_a ops_b port_redis port_caf port_prom < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
)

# The state that down.sh and smoke.sh read; pids are appended as processes start.
cat >"$dir/env" <<ENV
CAF_LOCAL_DIR=$dir
CAF_BROKER_BIN=$bin
BROKER_A_URL=http://127.0.0.1:$port_a
BROKER_B_URL=http://127.0.0.1:$port_b
BROKER_A_OPS_URL=http://127.0.0.1:$ops_a
BROKER_B_OPS_URL=http://127.0.0.1:$ops_b
REDIS_PORT=$port_redis
CAF_URL=https://127.0.0.1:$port_caf
PROMETHEUS_URL=http://127.0.0.1:$port_prom
POLICY_FILE=$dir/policy/policy.toml
ENV

stop_all() {
  if [ -f "$dir/env" ]; then "$repo/deploy/local/down.sh" "$dir" || true; fi
}
if ! $background; then
  trap stop_all EXIT
  trap 'exit 130' INT TERM
else
  # In the background mode, only a failed start stops what was started.
  # shellcheck disable=SC2154 # rc is assigned in the trap itself
  trap 'rc=$?; [ $rc -eq 0 ] || stop_all' EXIT
fi

# Starts "$@" with its output in $dir/logs/$name.log and records its pid.
start() {
  local name=$1
  shift
  mkdir -p "$dir/logs"
  "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo "PID_${name//-/_}=$!" >>"$dir/env"
}

# Waits (at most 30 s) until `curl $2` succeeds, or the process $1 dies.
wait_for() {
  local name=$1 url=$2 pid
  pid=$(sed -n "s/^PID_${name//-/_}=//p" "$dir/env" | tail -1)
  for _ in $(seq 150); do
    curl -fsS -o /dev/null "${@:3}" "$url" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "up.sh: $name exited; its log:" >&2
      tail -n 40 "$dir/logs/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "up.sh: $name did not answer $url within 30 s; its log:" >&2
  tail -n 40 "$dir/logs/$name.log" >&2
  exit 1
}

# --- Redis: quotas, revocations and alert windows shared by the replicas.
start redis redis-server --bind 127.0.0.1 --port "$port_redis" --save '' --appendonly no \
  --dir "$dir" --protected-mode yes
for _ in $(seq 150); do
  redis-cli -p "$port_redis" ping 2>/dev/null | grep -q PONG && break
  sleep 0.2
done
redis-cli -p "$port_redis" ping 2>/dev/null | grep -q PONG || fail "redis-server did not answer; see $dir/logs/redis.log"

# --- The CAF simulator, HTTPS with client certificates required (mTLS).
start caf "$bin" simulate --listen "127.0.0.1:$port_caf" \
  --tls-cert certs-dev/server.pem --tls-key certs-dev/server.key.pem --client-ca certs-dev/ca.pem
wait_for caf "https://127.0.0.1:$port_caf/dossiers/1000002" --cacert certs-dev/ca.pem \
  --cert certs-dev/client-broker.pem --key certs-dev/client-broker.key.pem

# --- The policy, copied so that a change (smoke.sh) reaches both replicas by hot reload.
mkdir -p "$dir/policy"
cp config/policy.toml "$dir/policy/policy.toml"
cp -r config/policy-tests "$dir/policy/tests"

# --- Two broker replicas: config/broker.toml plus CAF_BROKER__ variables.
# Plain HTTP on loopback (as behind a TLS-terminating proxy): tls = false goes
# with client_auth = "off". /healthz, /readyz and /metrics are on an operations
# listener of their own (server.ops_listen), as Prometheus and probes reach them
# in a deployment. Each replica has its own audit directory; both write their
# signed checkpoints into one witness directory.
# Optional, for smoke.sh: a shadow candidate policy, and a smaller error budget.
extra=()
[ -z "${CAF_LOCAL_SHADOW_FILE:-}" ] || extra+=(CAF_BROKER__POLICY__SHADOW_FILE="$CAF_LOCAL_SHADOW_FILE")
[ -z "${CAF_LOCAL_AGENT_ERROR_BURST:-}" ] || extra+=(CAF_BROKER__QUOTAS__AGENT_ERROR_BUDGET__PER_SECOND=1
  CAF_BROKER__QUOTAS__AGENT_ERROR_BUDGET__BURST="$CAF_LOCAL_AGENT_ERROR_BURST")
replica() {
  local name=$1 port=$2 ops=$3
  mkdir -p "$dir/audit-$name"
  start "broker-$name" env "${extra[@]}" \
    CAF_BROKER__SERVER__LISTEN="127.0.0.1:$port" \
    CAF_BROKER__SERVER__OPS_LISTEN="127.0.0.1:$ops" \
    CAF_BROKER__SERVER__TLS=false \
    CAF_BROKER__SERVER__CLIENT_AUTH=off \
    CAF_BROKER__SERVER__WORKERS=1 \
    CAF_BROKER__UPSTREAM__KIND=http \
    CAF_BROKER__UPSTREAM__URL="https://127.0.0.1:$port_caf" \
    CAF_BROKER__UPSTREAM__CA_FILE=certs-dev/ca.pem \
    CAF_BROKER__UPSTREAM__CLIENT_CERT_FILE=certs-dev/client-broker.pem \
    CAF_BROKER__UPSTREAM__CLIENT_KEY_FILE=certs-dev/client-broker.key.pem \
    CAF_BROKER__QUOTAS__BACKEND=redis \
    CAF_BROKER__QUOTAS__REDIS_URL="redis://127.0.0.1:$port_redis/0" \
    CAF_BROKER__QUOTAS__REPLICAS_HINT=2 \
    CAF_BROKER__QUOTAS__DEFAULT__PER_DAY="${CAF_LOCAL_POST_PER_DAY:-2000}" \
    CAF_BROKER__ALERTS__DISTINCT_DOSSIERS_PER_HOUR="${CAF_LOCAL_DISTINCT_DOSSIERS_PER_HOUR:-60}" \
    CAF_BROKER__POLICY__FILE="$dir/policy/policy.toml" \
    CAF_BROKER__POLICY__TESTS_DIR="$dir/policy/tests" \
    CAF_BROKER__AUDIT__DIR="$dir/audit-$name" \
    CAF_BROKER__AUDIT__REPLICA_ID="$name" \
    CAF_BROKER__AUDIT__WITNESS_DIR="$dir/witness" \
    CAF_BROKER__TELEMETRY__LOG_FORMAT=json \
    "$bin" --config config/broker.toml serve
}
replica a "$port_a" "$ops_a"
replica b "$port_b" "$ops_b"
wait_for broker-a "http://127.0.0.1:$ops_a/readyz"
wait_for broker-b "http://127.0.0.1:$ops_b/readyz"

# --- Prometheus scraping both replicas' /metrics, with the alert rules.
mkdir -p "$dir/prometheus"
cp deploy/prometheus/alerts.yaml "$dir/prometheus/alerts.yaml"
cat >"$dir/prometheus/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 5s
rule_files:
  - alerts.yaml
scrape_configs:
  - job_name: caf-broker
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$ops_a", "127.0.0.1:$ops_b"]
YAML
promtool check config "$dir/prometheus/prometheus.yml" >/dev/null \
  || fail "the generated Prometheus configuration is invalid: promtool check config $dir/prometheus/prometheus.yml"
start prometheus prometheus --config.file="$dir/prometheus/prometheus.yml" \
  --storage.tsdb.path="$dir/prometheus/data" --web.listen-address="127.0.0.1:$port_prom"
wait_for prometheus "http://127.0.0.1:$port_prom/-/ready"

cat <<INFO
caf-broker local topology is up (state in $dir):
  broker a     http://127.0.0.1:$port_a   (operations http://127.0.0.1:$ops_a, audit $dir/audit-a/a)
  broker b     http://127.0.0.1:$port_b   (operations http://127.0.0.1:$ops_b, audit $dir/audit-b/b)
  CAF (mTLS)   https://127.0.0.1:$port_caf
  redis        127.0.0.1:$port_redis
  prometheus   http://127.0.0.1:$port_prom
  policy       $dir/policy/policy.toml (edit it: both replicas reload it)
A token: $bin --config config/broker.toml token --post TN-TUNIS --role agent_consulaire --sub agent-42
INFO
if $background; then
  echo "Stop it with: deploy/local/down.sh $dir"
  exit 0
fi
echo "Ctrl-C stops everything."
# `wait` returns at once on a signal, so the trap stops everything without delay.
while true; do sleep 3600 & wait $!; done
