#!/usr/bin/env bash
# Stops the processes that deploy/local/up.sh started in DIR (by the pids it
# recorded), waits for them (at most 10 s each, then SIGKILL), and keeps DIR
# (logs, audit logs) for inspection; remove it by hand.
set -uo pipefail
dir=${1:-${CAF_LOCAL_DIR:-}}
if [ -z "$dir" ] || [ ! -f "$dir/env" ]; then
  echo "usage: $0 DIR (a directory written by up.sh)" >&2
  exit 2
fi
# Brokers first, so that they do not count Redis's departure as an outage.
for name in prometheus broker_a broker_b caf redis; do
  sed -n "s/^PID_$name=//p" "$dir/env" | while read -r pid; do
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
done
mv "$dir/env" "$dir/env.stopped"
echo "stopped the topology of $dir"
