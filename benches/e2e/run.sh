#!/usr/bin/env bash
# The broker side by side with what an operator could put there instead:
# `caf-broker simulate` answering directly, nginx's proxy_cache in front of
# it, and the broker (cache hit, miss through the HTTP connector, hit over
# TLS 1.3), in one run, as the table of the README's "Performance" section.
# Two more rows bound what no change to the broker can win on this machine:
# the cache hit with its audit log on tmpfs (what the disk's flush costs), and
# nginx passing the random lookups to `simulate` without a cache (what one
# proxy hop costs at the least).
#
#   benches/e2e/run.sh
#
# Builds the release binary (cargo build --release), then, in a temporary
# directory under target/ (on the local disk: the audit log is fsync'ed there
# as in production), starts every server pinned to core 0 with one worker and
# loads one at a time with wrk pinned to core 1 (64 keep-alive connections,
# one thread; benches/e2e/request.lua sends the token and headers). Each
# server's CPU time comes from /proc/PID/stat (utime + stime) before and after
# its run. The scenarios run in one order, then in the reverse one, ROUNDS
# times in all, so that each pair of the table alternates; the table shows
# the range over the rounds and the ratios of each round.
#
# Settings (environment):
#   SECONDS_PER_RUN=5  length of each wrk run (throughput and 1-connection latency)
#   ROUNDS=2           rounds, alternating the order of the scenarios
#   CONNECTIONS=64     wrk connections of the throughput runs
#   RECORDS=10000      dossiers of the random scenarios (simulate holds as many)
#   LOG_LEVEL=info     the broker's telemetry.log_level (its request log)
#   SKIP_BUILD=1       use target/release/caf-broker as it is
#   BIN=FILE           measure this caf-broker binary (with this checkout's config/ and certs-dev/)
#   WORK_BASE=DIR      where the temporary directory goes (default: target/)
#
# Needs nginx (Debian's nginx or nginx-light), wrk, taskset (util-linux),
# curl and python3; installs nothing. Traffic stays on 127.0.0.1, and every
# server started here is stopped at the end.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-2}
connections=${CONNECTIONS:-64}
records=${RECORDS:-10000}
log_level=${LOG_LEVEL:-info}

missing=()
nginx=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
[ -n "$nginx" ] || missing+=("nginx (apt-get install nginx-light)")
for tool in wrk taskset curl python3 cargo; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  printf 'benches/e2e/run.sh needs, and will not install:\n' >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 2
fi
if [ "$(nproc --all)" -lt 2 ]; then
  echo "benches/e2e/run.sh needs two cores (servers on core 0, wrk on core 1)" >&2
  exit 2
fi

cd "$root"
if [ -z "${SKIP_BUILD:-}" ] && [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
fi
bin=${BIN:-$root/target/release/caf-broker}
[ -x "$bin" ] || { echo "$bin is missing: cargo build --release" >&2; exit 2; }

mkdir -p "${WORK_BASE:-$root/target}"
work=$(mktemp -d -p "${WORK_BASE:-$root/target}" e2e.XXXXXX)
pids=()
shm=
# Stops every server started here; keeps the logs if something failed.
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -z "$shm" ] || rm -rf "$shm"
  if [ "$status" = 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for URL: until it answers 200, for at most 20 s.
wait_for() {
  for _ in $(seq 200); do
    curl -skf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  exit 1
}

# ---- the servers, all on core 0 -------------------------------------------

sim_port=$(free_port)
taskset -c 0 "$bin" simulate --listen "127.0.0.1:$sim_port" --records "$records" \
  >"$work/simulate.log" 2>&1 &
pids+=($!); sim_pid=$!
wait_for "http://127.0.0.1:$sim_port/dossiers/1000002"

nginx_port=$(free_port)
mkdir -p "$work/nginx/cache" "$work/nginx/temp"
# As root, nginx's worker would run as nobody, which cannot write the cache here.
as_root=$([ "$(id -u)" = 0 ] && echo "user root;" || true)
cat >"$work/nginx/nginx.conf" <<EOF
$as_root
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log $work/nginx/access.log;
  client_body_temp_path $work/nginx/temp/body;
  proxy_temp_path $work/nginx/temp/proxy;
  fastcgi_temp_path $work/nginx/temp/fastcgi;
  uwsgi_temp_path $work/nginx/temp/uwsgi;
  scgi_temp_path $work/nginx/temp/scgi;
  proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=caf:10m max_size=64m;
  upstream simulate { server 127.0.0.1:$sim_port; keepalive 16; }
  server {
    listen 127.0.0.1:$nginx_port;
    location /direct/ {
      proxy_pass http://simulate/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location / {
      proxy_pass http://simulate;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache caf;
      proxy_cache_valid 200 404 60s;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }
}
EOF
taskset -c 0 "$nginx" -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!); nginx_pid=$!
wait_for "http://127.0.0.1:$nginx_port/dossiers/1000002"
if ! curl -si "http://127.0.0.1:$nginx_port/dossiers/1000002" | grep -qi '^X-Cache-Status: HIT'; then
  echo "nginx does not answer from its cache" >&2; exit 1
fi

# broker NAME SCHEME EXTRA_ENV...: starts a broker with one worker and the
# audit log under $work, and sets ${NAME}_pid and ${NAME}_url. Every quota is
# raised out of the way, the error budget too: an admitted request holds a
# unit of it until its outcome, and 64 connections of one agent keep more
# requests in flight than its default burst.
broker() {
  local name=$1 scheme=$2 port
  shift 2
  port=$(free_port)
  env CAF_BROKER__SERVER__LISTEN="127.0.0.1:$port" CAF_BROKER__SERVER__WORKERS=1 \
    CAF_BROKER__SERVER__CLIENT_AUTH=off \
    CAF_BROKER__AUDIT__DIR="$work/audit-$name" CAF_BROKER__POLICY__WATCH=false \
    CAF_BROKER__TELEMETRY__LOG_LEVEL="$log_level" \
    CAF_BROKER__QUOTAS__DEFAULT__PER_SECOND=1000000 CAF_BROKER__QUOTAS__DEFAULT__BURST=1000000 \
    CAF_BROKER__QUOTAS__DEFAULT__PER_DAY=1000000000 \
    CAF_BROKER__QUOTAS__AGENT_DEFAULT__PER_SECOND=1000000 \
    CAF_BROKER__QUOTAS__AGENT_DEFAULT__BURST=1000000 \
    CAF_BROKER__QUOTAS__AGENT_DEFAULT__PER_DAY=1000000000 \
    CAF_BROKER__QUOTAS__AGENT_ERROR_BUDGET__PER_SECOND=1000000 \
    CAF_BROKER__QUOTAS__AGENT_ERROR_BUDGET__BURST=1000000 \
    "$@" taskset -c 0 "$bin" serve >"$work/$name.log" 2>&1 &
  pids+=($!)
  printf -v "${name}_pid" %s $!
  printf -v "${name}_url" %s "$scheme://127.0.0.1:$port"
  wait_for "$scheme://127.0.0.1:$port/healthz"
}
broker hit http CAF_BROKER__SERVER__TLS=false
# The same, with the audit log on tmpfs: fsync'ed all the same, but nothing
# reaches a disk.
shm=$(mktemp -d -p /dev/shm e2e.XXXXXX)
broker hit_tmpfs http CAF_BROKER__SERVER__TLS=false CAF_BROKER__AUDIT__DIR="$shm/audit"
broker tls https CAF_BROKER__SERVER__TLS=true
broker miss http CAF_BROKER__SERVER__TLS=false CAF_BROKER__UPSTREAM__KIND=http \
  CAF_BROKER__UPSTREAM__URL="http://127.0.0.1:$sim_port" \
  CAF_BROKER__CACHE__TTL_SECS=0 CAF_BROKER__CACHE__NOT_FOUND_TTL_SECS=0
token=$("$bin" token --post TN-TUNIS --role agent_consulaire --sub bench-agent --ttl-secs 3600)

# ---- the scenarios ----------------------------------------------------------

# Each: NAME|what the table calls it|pid|URL path|random dossiers (0: one)|p50 at 1 connection
scenarios=(
  "sim|\`caf-broker simulate\` answering directly|$sim_pid|http://127.0.0.1:$sim_port/dossiers/1000002|0|yes"
  "nginx|nginx \`proxy_cache\` hit in front of it|$nginx_pid|http://127.0.0.1:$nginx_port/dossiers/1000002|0|yes"
  "hit|caf-broker, cache hit, whole pipeline|$hit_pid|$hit_url/v1/allocataires/1000002|0|yes"
  "hit_tmpfs|caf-broker, cache hit, audit log on tmpfs (no disk flush)|$hit_tmpfs_pid|$hit_tmpfs_url/v1/allocataires/1000002|0|yes"
  "sim_random|\`simulate\` directly, $records distinct dossiers at random|$sim_pid|http://127.0.0.1:$sim_port/dossiers/|$records|no"
  "nginx_pass|nginx passing the same random lookups to \`simulate\` (no cache)|$nginx_pid|http://127.0.0.1:$nginx_port/direct/dossiers/|$records|no"
  "miss|caf-broker, miss through the HTTP connector to \`simulate\` (cache TTL 0)|$miss_pid|$miss_url/v1/allocataires/|$records|no"
  "tls|caf-broker, cache hit over TLS 1.3|$tls_pid|$tls_url/v1/allocataires/1000002|0|no"
)

# cpu PID: CPU ticks of the process and its children (nginx's worker).
cpu() {
  local total=0 pid
  for pid in "$1" $(ps -o pid= --ppid "$1"); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

# load URL RANDOM CONNECTIONS SECONDS: wrk on core 1; prints its report.
load() {
  local url=$1 random=$2 conns=$3 secs=$4 path
  path=/${url#*://*/}
  E2E_TOKEN=$token E2E_PATH=$path E2E_RANDOM=$([ "$random" = 0 ] || echo "$random") \
    taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$root/benches/e2e/request.lua" "$url"
}

# check REPORT_FILE: every answer must be a 2xx, without socket errors.
check() {
  if grep -q "Non-2xx\|Socket errors" "$1"; then
    echo "errors under load ($1):" >&2; cat "$1" >&2; exit 1
  fi
}

# Warm every server (caches, connections, TLS sessions) before measuring.
for scenario in "${scenarios[@]}"; do
  IFS='|' read -r name _ _ url random _ <<<"$scenario"
  load "$url" "$random" "$connections" 1 >"$work/warm-$name.out"
  check "$work/warm-$name.out"
done

# fdatasync of one 400-byte append on this disk, as the audit writer does:
# the floor of a durable answer at one connection. The probe runs on core 0,
# beside the servers, as the audit writer does: on this machine the disk's
# completion interrupt is taken by the other core, and a waiter on core 0
# pays for waking up across cores, which the audit writer pays too. Samples
# are taken before and after the rounds; core 1 is probed once, for context.
# fsync_probe CORE FILE: appends 300 timings (µs) to FILE.
fsync_probe() {
  taskset -c "$1" python3 - "$work/fsync-probe" >>"$2" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
for _ in range(300):
    start = time.perf_counter()
    os.write(fd, b"x" * 399 + b"\n")
    os.fdatasync(fd)
    print(f"{(time.perf_counter() - start) * 1e6:.0f}")
EOF
}
fsync_probe 0 "$work/fsync-core0.txt"
fsync_probe 1 "$work/fsync-core1.txt"

# One line per scenario and round in $work/results: NAME ROUND REQ/S CPU_US SIM_CPU_US P50_US
: >"$work/results"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order=("${scenarios[@]}"); else
    order=(); for ((i = ${#scenarios[@]} - 1; i >= 0; i--)); do order+=("${scenarios[i]}"); done
  fi
  for scenario in "${order[@]}"; do
    IFS='|' read -r name _ pid url random p50 <<<"$scenario"
    out=$work/$name-$round.out
    before=$(cpu "$pid"); sim_before=$(cpu "$sim_pid")
    load "$url" "$random" "$connections" "$seconds" >"$out"
    after=$(cpu "$pid"); sim_after=$(cpu "$sim_pid")
    check "$out"
    latency=-
    if [ "$p50" = yes ]; then
      load "$url" "$random" 1 "$seconds" >"$out.1"
      check "$out.1"
      latency=$(awk '$1 == "50%" { v = $2; u = v; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u);
        f = (u == "us") ? 1 : (u == "ms") ? 1000 : 1e6; printf "%.0f", v * f }' "$out.1")
    fi
    awk -v name="$name" -v round="$round" -v t=$((after - before)) -v st=$((sim_after - sim_before)) \
      -v hz="$ticks" -v p50="$latency" -v sim="$([ "$name" = miss ] || [ "$name" = nginx_pass ] && echo 1 || echo 0)" '
      / requests in / { n = $1 }
      /^Requests\/sec:/ { rps = $2 }
      END { printf "%s %d %.0f %.1f %s %s\n", name, round, rps, t / hz * 1e6 / n,
              sim ? sprintf("%.1f", st / hz * 1e6 / n) : "-", p50 }' "$out" >>"$work/results"
    printf 'round %d  %-10s done\n' "$round" "$name" >&2
  done
done

fsync_probe 0 "$work/fsync-core0.txt"
# percentiles FILE: "p50 p99" of the timings in FILE.
percentiles() { sort -n "$1" | awk '{ v[NR] = $1 } END { print v[int(NR / 2) + 1], v[int(NR * 0.99)] }'; }
read -r fsync_p50 fsync_p99 < <(percentiles "$work/fsync-core0.txt")
read -r fsync1_p50 fsync1_p99 < <(percentiles "$work/fsync-core1.txt")

# ---- the table --------------------------------------------------------------

python3 - "$work/results" "$fsync_p50" "$fsync_p99" "$fsync1_p50" "$fsync1_p99" \
  "$seconds" "$rounds" "$connections" "${scenarios[@]}" <<'EOF'
import sys
from collections import defaultdict
results, fsync_p50, fsync_p99, fsync1_p50, fsync1_p99, seconds, rounds, connections = sys.argv[1:9]
names = [s.split("|") for s in sys.argv[9:]]
rows = defaultdict(dict)  # name -> round -> (rps, cpu, sim_cpu, p50)
for line in open(results):
    name, rnd, rps, cpu, sim_cpu, p50 = line.split()
    num = lambda v: None if v == "-" else float(v)
    rows[name][int(rnd)] = (float(rps), float(cpu), num(sim_cpu), num(p50))

def span(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return ""
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo} to {hi}" if min(values) < 0 else f"{lo}-{hi}"

k = lambda v: f"{v / 1000:.1f}k"
us = lambda v: f"{v:.0f}"
print(f"\n{rounds} rounds of {seconds} s per scenario, {connections} connections; "
      f"fdatasync of a 400-byte append here, on the servers' core 0: p50 {fsync_p50} µs, "
      f"p99 {fsync_p99} µs (on core 1: p50 {fsync1_p50} µs, p99 {fsync1_p99} µs)\n")
print("| what | requests/s | server CPU µs per request | p50 at 1 connection |")
print("|---|---|---|---|")
for name, what, *_ in names:
    r = rows[name].values()
    cpu = span([v[1] for v in r], us)
    sim = span([v[2] for v in r], us)
    if sim:
        cpu += f" (+{sim} in `simulate`)"
    p50 = span([v[3] for v in r], us)
    print(f"| {what} | {span([v[0] for v in r], k)} | {cpu} | {p50 + ' µs' if p50 else ''} |")

def ratio(a, b, i, label, fmt="{:.2f}x"):
    each = [rows[a][n][i] / rows[b][n][i] for n in rows[a] if rows[a][n][i] and rows[b][n][i]]
    print(f"| {label} | {span(each, fmt.format)} |")

print("\n| ratio, per round | range |")
print("|---|---|")
ratio("hit", "nginx", 0, "broker hit / nginx hit, requests/s (target ≥ 0.4x)")
ratio("hit", "nginx", 1, "broker hit / nginx hit, CPU per request")
ratio("hit", "nginx", 3, "broker hit / nginx hit, p50 at 1 connection")
ratio("hit_tmpfs", "nginx", 3, "broker hit, audit on tmpfs / nginx hit, p50 at 1 connection")
each = [rows["hit"][n][3] - float(fsync_p50) for n in rows["hit"] if rows["hit"][n][3]]
print(f"| broker hit p50 − fdatasync p50 on core 0 (target ≤ 60 µs) | {span(each, lambda v: f'{v:.0f} µs')} |")
each = [rows["hit"][n][3] - float(fsync_p50) - rows["nginx"][n][3]
        for n in rows["hit"] if rows["hit"][n][3] and rows["nginx"][n][3]]
print(f"| broker hit p50 − fdatasync p50 − nginx hit p50 (the broker's own share) | {span(each, lambda v: f'{v:.0f} µs')} |")
ratio("miss", "sim_random", 0, "broker miss / `simulate` direct (random), requests/s (target ≥ 0.5x)")
ratio("nginx_pass", "sim_random", 0, "nginx passing to `simulate` / `simulate` direct (random), requests/s")
ratio("hit_tmpfs", "hit", 1, "broker hit, audit on tmpfs / on disk, CPU per request")
ratio("tls", "hit", 1, "broker hit TLS 1.3 / plain, CPU per request (target ≤ 1.3x)")
ratio("tls", "hit", 0, "broker hit TLS 1.3 / plain, requests/s")
EOF
