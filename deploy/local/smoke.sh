#!/usr/bin/env bash
# Drives the local topology of deploy/local/up.sh (started here, in a new
# directory, and stopped on exit) and checks what a deployment promises:
#   1. requests through both replicas share one post quota (held in Redis);
#   2. the bulk-lookup detector fires, the error budget stops a refusing agent,
#      a shadow candidate policy counts its differences, a bad token is counted;
#   3. each replica writes its own audit log, and each log verifies;
#   4. a policy change reaches both replicas by hot reload;
#   5. Prometheus scrapes both replicas' operations listeners and counts every
#      data request; the API listener does not serve the metrics;
#   6. killing one replica leaves the other serving;
#   7. with Redis gone, the survivor still serves (quota decided locally) and says so;
#   8. every metric the alert rules and the dashboard use is exposed by the broker.
# Loopback only; every wait is bounded. On failure the state directory (logs,
# audit logs) is kept and named. Needs: the broker built (`cargo build`),
# redis-server, prometheus (promtool), curl, python3.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir=$(mktemp -d /tmp/caf-smoke.XXXXXX)
passed=0
finish() {
  local rc=$?
  [ -f "$dir/env" ] && deploy/local/down.sh "$dir" >/dev/null
  if [ $rc -eq 0 ]; then
    rm -rf "$dir"
  else
    echo "smoke: FAILED after $passed checks; logs and audit logs kept in $dir" >&2
  fi
}
trap finish EXIT
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
ok() { passed=$((passed + 1)); echo "smoke: ok: $*"; }

# A post may make 6 data requests a day, whichever replica answers; an agent
# looking up more than 3 distinct dossiers in an hour raises an alert.
# An agent may cause 3 refusals in a row. The shadow candidate withholds one
# field that the live policy releases for verification_radiation.
post_per_day=6
candidate=$dir/candidate.toml
sed '0,/^  "caf_organisme",$/{/^  "caf_organisme",$/d}' config/policy.toml >"$candidate"
cmp -s config/policy.toml "$candidate" && fail "the shadow candidate does not differ from the policy"
CAF_LOCAL_DIR=$dir CAF_LOCAL_POST_PER_DAY=$post_per_day CAF_LOCAL_DISTINCT_DOSSIERS_PER_HOUR=3 \
  CAF_LOCAL_SHADOW_FILE=$candidate CAF_LOCAL_AGENT_ERROR_BURST=3 \
  deploy/local/up.sh --background >/dev/null
# shellcheck disable=SC1091
. "$dir/env"
bin=$CAF_BROKER_BIN
: "${PID_broker_b:?up.sh recorded no pid for broker b}" "${PID_redis:?up.sh recorded no pid for redis}"

token() { "$bin" --config config/broker.toml token --post "$1" --role "${3:-agent_consulaire}" --sub "$2"; }
# GET a dossier (for $PURPOSE, by default verification_radiation): prints the
# status; the body and headers go to $dir/last.body and $dir/last.headers.
lookup() {
  local url=$1 token=$2 numero=$3
  curl -sS -o "$dir/last.body" -D "$dir/last.headers" -w '%{http_code}' --max-time 10 \
    -H "Authorization: Bearer $token" -H "X-Purpose: ${PURPOSE:-verification_radiation}" \
    -H "X-Case-Reference: TN-2026/0042" "$url/v1/allocataires/$numero"
}
# Polls (at most 30 s) until the command succeeds.
# `eventually is VALUE COMMAND...` polls until COMMAND prints VALUE.
is() { [ "$("${@:2}")" = "$1" ]; }
eventually() {
  for _ in $(seq 150); do
    "$@" && return 0
    sleep 0.2
  done
  return 1
}
# The operations listener of the replica whose API is at $1.
ops_of() {
  case $1 in
    "$BROKER_A_URL") echo "$BROKER_A_OPS_URL" ;;
    "$BROKER_B_URL") echo "$BROKER_B_OPS_URL" ;;
    *) fail "no replica at $1" ;;
  esac
}
metric() { curl -fsS --max-time 5 "$(ops_of "$1")/metrics"; }
# Whether replica $1's /metrics has a line matching the basic regex $2 (read
# whole first: grep -q closing the pipe early would fail curl under pipefail).
metric_has() { grep -q -- "$2" <<<"$(metric "$1")"; }
data_requests=0

# --- 1. One post quota for both replicas.
tunis=$(token TN-TUNIS agent-42)
for i in $(seq "$post_per_day"); do
  if [ $((i % 2)) -eq 1 ]; then url=$BROKER_A_URL; else url=$BROKER_B_URL; fi
  status=$(lookup "$url" "$tunis" 1000002)
  data_requests=$((data_requests + 1))
  [ "$status" = 200 ] || fail "request $i of $post_per_day for TN-TUNIS through $url got $status, want 200: $(cat "$dir/last.body")"
done
for url in "$BROKER_A_URL" "$BROKER_B_URL"; do
  status=$(lookup "$url" "$tunis" 1000002)
  data_requests=$((data_requests + 1))
  [ "$status" = 429 ] || fail "past the post's $post_per_day a day, $url answered $status, want 429 (is the quota shared through Redis?)"
  grep -qi '^ratelimit:.*"daily";r=0' "$dir/last.headers" || fail "$url's 429 does not name the spent daily window: $(grep -i ratelimit "$dir/last.headers")"
  metric_has "$url" 'caf_broker_quota_refusals_total{post="TN-TUNIS",window="daily"} 1' \
    || fail "$url does not count its daily quota refusal for TN-TUNIS"
done
ok "$post_per_day requests alternating between the replicas spent TN-TUNIS's daily quota; both then refuse (429 daily)"

# --- 2. The bulk-lookup detector (3 distinct dossiers an hour; the 4th raises it).
rabat=$(token MA-RABAT agent-7)
for numero in 1000001 1000003 1000004 1000005; do
  status=$(lookup "$BROKER_A_URL" "$rabat" "$numero")
  data_requests=$((data_requests + 1))
  [ "$status" = 200 ] || fail "MA-RABAT's lookup of dossier $numero got $status: $(cat "$dir/last.body")"
done
metric_has "$BROKER_A_URL" '^caf_broker_alerts_total{rule="distinct_dossiers"} 1$' \
  || fail "4 distinct dossiers in an hour did not raise one distinct_dossiers alert: $(metric "$BROKER_A_URL" | grep alerts_total || true)"
ok "the 4th distinct dossier in an hour raised one distinct_dossiers alert"
cp "$dir/last.body" "$dir/released.json"

# A social worker asking for a purpose of control is refused 403; after 3
# refusals in a row, its next request is refused 429 at once.
brussels=$(token BE-BRUXELLES agent-9 assistant_social)
statuses=""
for _ in 1 2 3 4; do
  statuses="$statuses $(PURPOSE=controle_fraude lookup "$BROKER_A_URL" "$brussels" 1000002)"
  data_requests=$((data_requests + 1))
done
[ "$statuses" = " 403 403 403 429" ] || fail "an agent refused 3 times in a row got$statuses, want 403 403 403 429"
metric_has "$BROKER_A_URL" '^caf_broker_error_budget_refusals_total{post="BE-BRUXELLES"} 1$' \
  || fail "the error-budget refusal is not counted for BE-BRUXELLES"
ok "an agent past its 3 refusals in a row is refused 429 at once, and counted"

metric_has "$BROKER_A_URL" '^caf_broker_policy_shadow_diff_total{purpose="verification_radiation",kind="withhold"} [1-9]' \
  || fail "the shadow candidate's withheld field is not counted: $(metric "$BROKER_A_URL" | grep shadow_diff || true)"
grep -q '"caf_organisme"' "$dir/released.json" || fail "the answer did not follow the live policy (caf_organisme withheld)"
ok "the shadow candidate policy counts the field it would withhold; answers follow the live policy"

status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer not-a-token" \
  -H "X-Purpose: verification_radiation" -H "X-Case-Reference: TN-2026/0042" "$BROKER_A_URL/v1/allocataires/1000002")
data_requests=$((data_requests + 1))
[ "$status" = 401 ] || fail "a malformed token got $status, want 401"
metric_has "$BROKER_A_URL" '^caf_broker_auth_failures_total{' || fail "the 401 is not counted by cause"
ok "a malformed token is refused 401 and counted by cause"

# --- 3. Each replica its own audit log, each verified.
for name in a b; do
  audit=$CAF_LOCAL_DIR/audit-$name/$name  # audit.dir/<replica id>
  lines=$(cat "$audit"/*.jsonl 2>/dev/null | wc -l)
  [ "$lines" -gt 0 ] || fail "replica $name wrote no audit record in $audit: $(ls -la "$audit")"
  "$bin" --config config/broker.toml audit verify "$audit" >"$dir/verify-$name.txt" 2>&1 \
    || fail "audit verify of replica $name's log failed: $(cat "$dir/verify-$name.txt")"
done
if cmp -s "$CAF_LOCAL_DIR"/audit-a/a/*.jsonl "$CAF_LOCAL_DIR"/audit-b/b/*.jsonl; then
  fail "the two replicas' audit logs are the same"
fi
ok "each replica wrote its own audit log and audit verify accepts both ($(head -c 200 "$dir/verify-a.txt" | tr '\n' ' '))"

# --- 4. A policy change reaches both replicas by hot reload (the file watch).
before=$(curl -fsS "$BROKER_A_OPS_URL/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["checks"]["policy"]["version"])')
printf '\n# Reviewed for the local smoke test.\n' >>"$POLICY_FILE"
want="sha256:$(sha256sum "$POLICY_FILE" | cut -d' ' -f1)"
[ "$want" != "$before" ] || fail "the policy change did not change its hash"
live_version() {
  curl -fsS --max-time 5 "$(ops_of "$1")/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["checks"]["policy"]["version"])'
}
for url in "$BROKER_A_URL" "$BROKER_B_URL"; do
  eventually is "$want" live_version "$url" \
    || fail "$url still serves policy $(live_version "$url") 30 s after the change to $want"
  metric_has "$url" 'caf_broker_policy_reload_total{result="applied"} 1' \
    || fail "$url does not count one applied reload"
done
status=$(lookup "$BROKER_B_URL" "$rabat" 1000005)
data_requests=$((data_requests + 1))
[ "$status" = 200 ] || [ "$status" = 404 ] || fail "a lookup after the reload got $status"
grep -qi "^x-policy-version: $want" "$dir/last.headers" || fail "the answer after the reload names another policy: $(grep -i x-policy-version "$dir/last.headers")"
ok "the policy change reached both replicas by hot reload (${before:0:15}... -> ${want:0:15}...)"

# --- 5. Prometheus scrapes both replicas and counts every data request.
targets_up() {
  curl -fsS --max-time 5 "$PROMETHEUS_URL/api/v1/query" --data-urlencode 'query=sum(up{job="caf-broker"})' \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'
}
requests_seen() {
  curl -fsS --max-time 5 "$PROMETHEUS_URL/api/v1/query" \
    --data-urlencode 'query=sum(caf_broker_http_requests_total{job="caf-broker",route="/v1/allocataires/{numero}"})' \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'
}
eventually is 2 targets_up || fail "Prometheus reports $(targets_up) of 2 targets up"
eventually is "$data_requests" requests_seen \
  || fail "Prometheus counts $(requests_seen) data requests, want $data_requests"
ok "Prometheus reports both targets up and counts the $data_requests data requests"
status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$BROKER_A_URL/metrics")
[ "$status" = 404 ] || fail "the API listener answers /metrics with $status; it belongs to the operations listener"
ok "the metrics are on the operations listener only (the API listener answers /metrics 404)"
metric "$BROKER_B_URL" >"$dir/metrics-b.txt"

# --- 6. Killing one replica leaves the other serving.
kill -KILL "$PID_broker_b"
eventually bash -c "! kill -0 $PID_broker_b 2>/dev/null" || fail "replica b did not die"
curl -s --max-time 2 -o /dev/null "$BROKER_B_OPS_URL/healthz" && fail "replica b still answers after SIGKILL"
status=$(lookup "$BROKER_A_URL" "$rabat" 1000001)
data_requests=$((data_requests + 1))
[ "$status" = 200 ] || fail "replica a answered $status once b was killed: $(cat "$dir/last.body")"
curl -fsS --max-time 5 -o /dev/null "$BROKER_A_OPS_URL/readyz" || fail "replica a is not ready once b was killed"
b_up() {
  curl -fsS --max-time 5 "$PROMETHEUS_URL/api/v1/query" \
    --data-urlencode "query=up{job=\"caf-broker\",instance=\"${BROKER_B_OPS_URL#http://}\"}" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'
}
eventually is 0 b_up || fail "Prometheus still reports replica b up ($(b_up))"
ok "with replica b killed, replica a serves and is ready; Prometheus reports b down"

# --- 7. Redis down: the survivor decides quotas locally, serves, and counts it.
kill -TERM "$PID_redis"
eventually bash -c "! kill -0 $PID_redis 2>/dev/null" || fail "redis-server did not stop"
dakar=$(token SN-DAKAR agent-1)
status=$(lookup "$BROKER_A_URL" "$dakar" 1000002)
[ "$status" = 200 ] || fail "with Redis down, replica a answered $status (quotas.on_redis_failure = local): $(cat "$dir/last.body")"
metric_has "$BROKER_A_URL" '^caf_broker_quota_redis_fallback_total [1-9]' \
  || fail "replica a does not count its quota decisions without Redis"
ok "with Redis down, replica a still serves and counts the decision taken without Redis"

# --- 8. The alert rules and the dashboard use only metrics the broker exposes.
metric "$BROKER_A_URL" >"$dir/metrics-a.txt"
python3 deploy/local/check-metric-names.py --metrics "$dir/metrics-a.txt" --metrics "$dir/metrics-b.txt" \
  --rules deploy/prometheus/alerts.yaml --dashboard deploy/grafana/caf-broker.json \
  || fail "the alert rules or the dashboard name a metric the broker does not expose"
ok "every metric of the alert rules and the dashboard is exposed by the broker"

echo "smoke: $passed passed, 0 failed"
