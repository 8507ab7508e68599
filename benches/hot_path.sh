#!/usr/bin/env bash
# The whole broker on a cache hit: CPU per request of two builds of the broker,
# measured side by side, as a ratio.
#
#   benches/hot_path.sh OLD_CHECKOUT NEW_CHECKOUT [ROUNDS] [SECONDS]
#
# Each checkout is a work tree with its release build done (`cargo build
# --release`), e.g. the base revision in a `git worktree` and this one:
#   git worktree add /tmp/base <rev> && (cd /tmp/base && cargo build --release)
#   cargo build --release && benches/hot_path.sh /tmp/base .
#
# Each round, both builds run at the same time, each from its own checkout (its own
# embedded default config/broker.toml and certs-dev/), on plain HTTP, one
# worker, on loopback, with quotas raised out of the way; one wrk each sends
# the same cache-hit request (one dossier, one token, 8 connections) for
# SECONDS. Running them together puts both under the same machine noise,
# which on a shared 2-core machine varies more between seconds than the
# builds differ. Each broker's CPU time comes from /proc/PID/stat. Every
# answer must be a 200, and each one is audited and fsync'ed as in production,
# but on tmpfs (/dev/shm) by default: a disk's fsync time is noise of the same
# kind, and the same work for both. AUDIT_BASE=DIR puts the logs on DIR
# instead (e.g. a real disk, to see the whole cost). Needs wrk.
#
# NEW_ENV and OLD_ENV may carry extra CAF_BROKER__* settings for one build
# (space-separated NAME=VALUE), e.g. to raise limits that only the new build
# has, or to compare one build with a stage turned off.
set -euo pipefail

old=$(cd "${1:?old checkout}" && pwd)
new=$(cd "${2:?new checkout}" && pwd)
rounds=${3:-6}
seconds=${4:-8}
for checkout in "$old" "$new"; do
  [ -x "$checkout/target/release/caf-broker" ] ||
    { echo "$checkout/target/release/caf-broker is missing: cargo build --release there" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }

work=$(mktemp -d)
audit_base=${AUDIT_BASE:-/dev/shm}
[ -d "$audit_base" ] || audit_base=$work
audit_base=$(mktemp -d -p "$audit_base")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work" "$audit_base"' EXIT
ticks=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME CHECKOUT EXTRA_ENV: starts a broker, warms its caches, and writes
# its pid, URL and token to $work/NAME.*
start() {
  local name=$1 checkout=$2 extra=$3 bin port
  bin="$checkout/target/release/caf-broker"
  port=$(free_port)
  # shellcheck disable=SC2086
  (cd "$checkout" && exec env CAF_BROKER__SERVER__LISTEN="127.0.0.1:$port" \
    CAF_BROKER__SERVER__TLS=false CAF_BROKER__SERVER__CLIENT_AUTH=off \
    CAF_BROKER__SERVER__WORKERS=1 \
    CAF_BROKER__AUDIT__DIR="$audit_base/$name-$RANDOM" \
    CAF_BROKER__POLICY__WATCH=false CAF_BROKER__TELEMETRY__LOG_LEVEL=warn \
    CAF_BROKER__QUOTAS__DEFAULT__PER_SECOND=1000000 CAF_BROKER__QUOTAS__DEFAULT__BURST=1000000 \
    CAF_BROKER__QUOTAS__DEFAULT__PER_DAY=100000000 \
    CAF_BROKER__QUOTAS__AGENT_DEFAULT__PER_SECOND=1000000 \
    CAF_BROKER__QUOTAS__AGENT_DEFAULT__BURST=1000000 \
    CAF_BROKER__QUOTAS__AGENT_DEFAULT__PER_DAY=100000000 \
    $extra "$bin" serve) >"$work/$name.log" 2>&1 &
  echo $! >"$work/$name.pid"
  echo "http://127.0.0.1:$port/v1/allocataires/1000002" >"$work/$name.url"
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
  done
  (cd "$checkout" && "$bin" token --post TN-TUNIS --role agent_consulaire --sub bench-agent) >"$work/$name.token"
  load "$name" 1 >/dev/null
}

# load NAME SECONDS: wrk against broker NAME; prints wrk's report.
load() {
  local name=$1 secs=$2
  wrk -t1 -c8 -d"${secs}s" -H "Authorization: Bearer $(cat "$work/$name.token")" \
    -H "X-Purpose: verification_radiation" -H "X-Case-Reference: BENCH-1" "$(cat "$work/$name.url")"
}

cpu() { awk '{print $14 + $15}' "/proc/$(cat "$work/$1.pid")/stat"; }

# per_request NAME BEFORE AFTER: µs of CPU per request from wrk's report in $work/NAME.out
per_request() {
  local name=$1 before=$2 after=$3 requests
  if grep -q "Non-2xx" "$work/$name.out"; then
    echo "$name answered errors under load:" >&2; cat "$work/$name.out" >&2; exit 1
  fi
  requests=$(awk '/requests in/ {print $1}' "$work/$name.out")
  awk -v t=$((after - before)) -v hz="$ticks" -v n="$requests" \
    'BEGIN { printf "%.1f %d\n", t / hz * 1e6 / n, n }'
}

stop() { kill "$(cat "$work/$1.pid")" 2>/dev/null || true; wait "$(cat "$work/$1.pid")" 2>/dev/null || true; }

printf 'round  first  old µs/req  new µs/req  new/old\n'
ratios=()
for round in $(seq "$rounds"); do
  # Which build starts (and is loaded) first alternates: on two cores, the
  # order alone can shift one process's cost by several per cent.
  if [ $((round % 2)) = 1 ]; then first=old; else first=new; fi
  if [ "$first" = old ]; then
    start old "$old" "${OLD_ENV:-}"; start new "$new" "${NEW_ENV:-}"
  else
    start new "$new" "${NEW_ENV:-}"; start old "$old" "${OLD_ENV:-}"
  fi
  second=$([ "$first" = old ] && echo new || echo old)
  old_before=$(cpu old); new_before=$(cpu new)
  load "$first" "$seconds" >"$work/$first.out" &
  first_load=$!
  load "$second" "$seconds" >"$work/$second.out"
  wait "$first_load"
  old_after=$(cpu old); new_after=$(cpu new)
  stop old; stop new
  read -r o on < <(per_request old "$old_before" "$old_after")
  read -r n nn < <(per_request new "$new_before" "$new_after")
  ratio=$(awk -v a="$o" -v b="$n" 'BEGIN { printf "%.3f", b / a }')
  ratios+=("$ratio")
  printf '%5d  %5s  %10s  %10s  %7s   (%d / %d requests)\n' "$round" "$first" "$o" "$n" "$ratio" "$on" "$nn"
done
# The geometric mean, so that the two orders weigh alike.
printf 'new/old (geometric mean of %d rounds): %s\n' "$rounds" \
  "$(printf '%s\n' "${ratios[@]}" | awk '{s += log($1)} END {printf "%.3f", exp(s / NR)}')"
