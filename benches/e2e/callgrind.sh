#!/usr/bin/env bash
# Instructions per cache-hit request through the whole pipeline, counted by
# valgrind's callgrind: a figure that does not depend on how busy the machine
# is, compared with the one recorded in benches/e2e/BASELINE.md.
#
#   benches/e2e/callgrind.sh
#
# Builds benches/e2e/hit_instructions.rs in release, runs it under
# `valgrind --tool=callgrind` twice, with FEW and with MANY cache hits, and
# divides the difference of the two instruction counts by MANY - FEW: start-up
# and the first (missing) request cancel out. Prints the figure and its ratio
# to the baseline; exits 1 when it is more than MAX_RATIO times the baseline.
#
# Settings (environment): FEW=200, MANY=1200, MAX_RATIO=1.10. Needs valgrind (apt-get install valgrind).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
few=${FEW:-200}
many=${MANY:-1200}
max_ratio=${MAX_RATIO:-1.10}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }

cd "$root"
# The bench's executable, built (or found up to date) by cargo.
executable() {
  cargo build --release --bench hit_instructions --message-format=json --quiet |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "hit_instructions" and m.get("executable"):
        print(m["executable"])'
}
exe=$(executable)
[ -x "$exe" ] || { echo "the hit_instructions bench did not build" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# instructions REQUESTS: the instructions callgrind counts over the whole run.
instructions() {
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$exe" "$1" 2>"$work/valgrind.log" ||
    { cat "$work/valgrind.log" >&2; exit 1; }
  awk '/Collected :/ { print $NF }' "$work/valgrind.log"
}

a=$(instructions "$few")
b=$(instructions "$many")
per_request=$(( (b - a) / (many - few) ))
echo "instructions per cache-hit request: $per_request   (($b - $a) / ($many - $few))"

baseline=$(sed -n 's/^instructions per cache-hit request: \([0-9]*\).*/\1/p' benches/e2e/BASELINE.md 2>/dev/null | head -1)
if [ -z "$baseline" ]; then
  echo "no figure in benches/e2e/BASELINE.md to compare with"
  exit 0
fi
awk -v n="$per_request" -v base="$baseline" -v max="$max_ratio" 'BEGIN {
  printf "baseline %d: %.3fx\n", base, n / base
  if (n > base * max) { printf "more than %.2fx the baseline\n", max; exit 1 }
}'
