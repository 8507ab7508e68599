#!/usr/bin/env bash
# The whole broker on a cache hit: CPU per request of two builds of the broker,
# measured side by side in one run (A B A B ...), as a ratio.
#
#   benches/hot_path.sh OLD_CHECKOUT NEW_CHECKOUT [ROUNDS] [SECONDS]
#
# Each checkout is a work tree with its release build done (`cargo build
# --release`), e.g. the base revision in a `git worktree` and this one:
#   git worktree add /tmp/base <rev> && (cd /tmp/base && cargo build --release)
#   cargo build --release && benches/hot_path.sh /tmp/base .
#
# Each build runs from its own checkout (its own embedded default
# config/broker.toml and certs-dev/) on plain HTTP, one worker, on loopback,
# with quotas raised out of the way; wrk sends the same cache-hit request (one
# dossier, one token, 16 connections) for SECONDS; the broker's CPU time comes
# from /proc/PID/stat before and after. Every answer must be a 200 (each one is
# audited and fsync'ed, as in production). Needs wrk.
#
# NEW_ENV may carry extra CAF_BROKER__* settings that only the new binary knows
# (space-separated NAME=VALUE), e.g. to raise the per-agent limits.
set -euo pipefail

old=$(cd "${1:?old checkout}" && pwd)
new=$(cd "${2:?new checkout}" && pwd)
for checkout in "$old" "$new"; do
  [ -x "$checkout/target/release/caf-broker" ] ||
    { echo "$checkout/target/release/caf-broker is missing: cargo build --release there" >&2; exit 2; }
done
rounds=${3:-3}
seconds=${4:-8}
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ticks=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# cpu_per_request CHECKOUT EXTRA_ENV -> prints "µs_per_request requests"
cpu_per_request() {
  local checkout=$1 extra=$2 bin port dir pid before after out requests
  bin="$checkout/target/release/caf-broker"
  cd "$checkout"
  port=$(free_port)
  dir="$work/audit-$RANDOM"
  # shellcheck disable=SC2086
  env CAF_BROKER__SERVER__LISTEN="127.0.0.1:$port" CAF_BROKER__SERVER__TLS=false \
    CAF_BROKER__SERVER__WORKERS=1 CAF_BROKER__AUDIT__DIR="$dir" \
    CAF_BROKER__POLICY__WATCH=false CAF_BROKER__TELEMETRY__LOG_LEVEL=warn \
    CAF_BROKER__QUOTAS__DEFAULT__PER_SECOND=1000000 CAF_BROKER__QUOTAS__DEFAULT__BURST=1000000 \
    CAF_BROKER__QUOTAS__DEFAULT__PER_DAY=100000000 \
    $extra "$bin" serve >"$work/broker.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
  done
  local token
  token=$("$bin" token --post TN-TUNIS --role agent_consulaire --sub bench-agent)
  local headers=(-H "Authorization: Bearer $token" -H "X-Purpose: verification_radiation"
    -H "X-Case-Reference: BENCH-1")
  local url="http://127.0.0.1:$port/v1/allocataires/1000002"
  # Warm the cache and the token cache.
  curl -sf "${headers[@]}" "$url" >/dev/null
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(wrk -t1 -c16 -d"${seconds}s" "${headers[@]}" "$url")
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$bin answered errors under load:" >&2; echo "$out" >&2; exit 1
  fi
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v t=$((after - before)) -v hz="$ticks" -v n="$requests" \
    'BEGIN { printf "%.1f %d\n", t / hz * 1e6 / n, n }'
}

printf 'round  old µs/req  new µs/req  new/old\n'
ratios=()
for round in $(seq "$rounds"); do
  read -r o on < <(cpu_per_request "$old" "")
  read -r n nn < <(cpu_per_request "$new" "${NEW_ENV:-}")
  ratio=$(awk -v a="$o" -v b="$n" 'BEGIN { printf "%.3f", b / a }')
  ratios+=("$ratio")
  printf '%5d  %10s  %10s  %7s   (%d / %d requests)\n' "$round" "$o" "$n" "$ratio" "$on" "$nn"
done
printf 'median new/old: %s\n' "$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
