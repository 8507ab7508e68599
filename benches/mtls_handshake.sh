#!/usr/bin/env bash
# The cost of mutual TLS on the broker's handshakes: TLS handshakes per second
# with `server.client_auth = "off"` (no certificate asked for) and "required"
# (the client presents certs-dev/client-TN-TUNIS.pem): full TLS 1.3 and TLS 1.2
# handshakes, and resumed TLS 1.2 sessions, measured with `openssl s_time`
# against the real binary on loopback. (`s_time -reuse` does not read TLS 1.3
# tickets, so it would measure full handshakes there; resumption is measured
# over TLS 1.2, where the broker resumes by session id.)
#
# Usage: benches/mtls_handshake.sh [BINARY] [SECONDS] [ROUNDS]
#   BINARY   the caf-broker binary (default target/release/caf-broker; build
#            it first with `cargo build --release`)
#   SECONDS  length of one measurement (default 5)
#   ROUNDS   rounds, alternating the two brokers (default 3)
#
# Needs the openssl command line. Prints one line per measurement and round
# (connections per second), then the median of each. `s_time` opens one
# connection at a time and fetches nothing, so the figures are handshake rates
# of one client, client CPU included; compare them with each other only.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BINARY="${1:-target/release/caf-broker}"
SECONDS_EACH="${2:-5}"
ROUNDS="${3:-3}"
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# A free loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start CLIENT_AUTH: starts a broker, prints its port.
start() {
    local client_auth="$1" port
    port="$(free_port)"
    CAF_BROKER__SERVER__LISTEN="127.0.0.1:$port" \
    CAF_BROKER__SERVER__WORKERS=1 \
    CAF_BROKER__SERVER__CLIENT_AUTH="$client_auth" \
    CAF_BROKER__SERVER__MAX_CONNECTIONS_PER_IP=100000 \
    CAF_BROKER__POLICY__WATCH=false \
    CAF_BROKER__AUDIT__DIR="$TMP/audit-$client_auth" \
    CAF_BROKER__UPSTREAM__RECORDS=100 \
    RUST_LOG=warn \
        "$BINARY" serve >"$TMP/$client_auth.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
        sleep 0.1
    done
    echo "the broker ($client_auth) did not start; see $TMP/$client_auth.log" >&2
    exit 1
}

# rate PORT MODE [IDENTITY...]: handshakes per second. MODE: tls13-new,
# tls12-new or tls12-reuse. A resumed handshake that was not resumed fails.
rate() {
    local port="$1" mode="$2" out
    shift 2
    local version how="-${mode##*-}"
    case "$mode" in
        tls13-*) version=-tls1_3 ;;
        *) version=-tls1_2 ;;
    esac
    out="$(openssl s_time -connect "127.0.0.1:$port" -CAfile certs-dev/ca.pem "$version" "$how" \
        -time "$SECONDS_EACH" "$@" 2>/dev/null)"
    # s_time prints one character per connection: `r` when it was resumed.
    if [[ "$how" == -reuse ]] && ! grep -q '^r' <<<"$out"; then
        echo "the sessions were not resumed" >&2
        exit 1
    fi
    awk '/connections in [0-9.]+ real seconds/ { printf "%.0f\n", $1 / $4; exit }' <<<"$out"
}

off="$(start off)"
required="$(start required)"
identity=(-cert certs-dev/client-TN-TUNIS.pem -key certs-dev/client-TN-TUNIS.key.pem)
declare -A results
for round in $(seq 1 "$ROUNDS"); do
    for mode in tls13-new tls12-new tls12-reuse; do
        # Alternate which broker goes first, so drift in the machine's load
        # does not always favour one.
        if ((round % 2)); then order=(off required); else order=(required off); fi
        for which in "${order[@]}"; do
            if [[ "$which" == off ]]; then
                r="$(rate "$off" "$mode")"
            else
                r="$(rate "$required" "$mode" "${identity[@]}")"
            fi
            echo "round $round  $mode  client_auth=$which  $r handshakes/s"
            results["$which $mode"]+="$r "
        done
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for mode in tls13-new tls12-new tls12-reuse; do
    for which in off required; do
        echo "median  $mode  client_auth=$which  $(echo "${results[$which $mode]}" | median) handshakes/s"
    done
done
