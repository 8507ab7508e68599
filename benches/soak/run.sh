#!/usr/bin/env bash
# The soak test (issue 17) and the memory run (issue 16) against the real binary.
#
#   benches/soak/run.sh [--minutes N] [--rate R]        # the soak: 30 min at 200 requests/s
#   benches/soak/run.sh --memory [--lookups N]           # 1,000,000 distinct dossiers at full rate
#
# Builds the release binary (cargo build --release), then benches/soak/soak.py
# starts, in a temporary directory under target/ (the audit log on the local
# disk, fsync'ed as in production), redis-server (the soak's shared quota
# backend), `caf-broker simulate` and `caf-broker serve` with a configuration
# of its own (config/broker.toml plus the run's quotas, the rest from
# CAF_BROKER__* variables), mints its agents' tokens with `caf-broker token`,
# drives the traffic over 127.0.0.1 and prints:
#   - per minute: answers, p50/p90/p99/max latency, the broker's VmRSS;
#   - resident memory after the warm-up: first vs last, and the slope;
#   - the checks: every answered data request in the audit log exactly once
#     (by request id, with its status), `audit verify` of the chain and the
#     signed checkpoints, the error budget's refusals in the summaries, no
#     quota over-granted (daily counts and the GCRA bound n <= burst + rate x
#     span, per post and per agent), the policy reload and the JWKS rotation as
#     documented.
# Exits 1 when a check fails. Any other option goes to soak.py (--help lists them).
#
# Settings (environment):
#   SKIP_BUILD=1   use target/release/caf-broker as it is
#   BIN=FILE       run this caf-broker binary (with this checkout's config/ and certs-dev/)
#   SIM_BIN=FILE   run `simulate` from this binary instead (a release one beside a debug broker)
#   NICE=10        niceness of the load generator and the servers (the machine may be shared)
#   WORK_BASE=DIR  where the temporary directory goes (default: target/)
#   KEEP=1         keep the temporary directory (audit log, logs) after a passing run
#
# Needs python3 (3.9 or later, standard library only), openssl, and for the
# soak redis-server and redis-cli; installs nothing.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
missing=()
for tool in python3 openssl redis-server redis-cli; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  printf 'benches/soak/run.sh needs, and will not install: %s\n' "${missing[*]}" >&2
  exit 2
fi

mode=soak
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --memory) mode=memory ;;
    *) args+=("$1") ;;
  esac
  shift
done

cd "$root"
if [ -z "${SKIP_BUILD:-}" ] && [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
fi
bin=${BIN:-$root/target/release/caf-broker}
[ -x "$bin" ] || { echo "$bin is missing: cargo build --release" >&2; exit 2; }

mkdir -p "${WORK_BASE:-$root/target}"
work=$(mktemp -d -p "${WORK_BASE:-$root/target}" "soak-$mode.XXXXXX")
status=0
nice -n "${NICE:-10}" python3 "$root/benches/soak/soak.py" --bin "$bin" --work "$work" \
  --mode "$mode" ${SIM_BIN:+--sim-bin "$SIM_BIN"} ${args[@]+"${args[@]}"} | tee "$work/report.md" || status=$?
if [ "$status" = 0 ] && [ -z "${KEEP:-}" ]; then
  rm -rf "$work"
else
  echo "kept: $work (report.md, audit/, the servers' logs)" >&2
fi
exit "$status"
