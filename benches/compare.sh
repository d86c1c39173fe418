#!/usr/bin/env bash
# Side-by-side data-plane benchmark on a two-namespace topology:
#
#   client task (netns, 10.77.0.1)  <--veth-->  server task (netns, 10.77.0.2)
#   loadgen client + proxy A                    proxy B + loadgen echo/sink server
#
# Runs the same loadgen suite for: direct TCP (no proxy), ztunnel-sidecar on
# both ends, and — when a ztunnel binary is given — upstream ztunnel on both
# ends (dedicated mode, FAKE_CA, SOCKS5 on), in --repeat interleaved rounds. Prints a table with ratios
# against the other rows of the same run (machines are noisy: compare within a
# run, never across runs) and writes raw JSON lines next to it.
#
# Unless --no-floors, it also runs two reference rows in the proxies' places:
# plain TCP relays (a floor for any proxy pair that copies through user space)
# and mutually authenticated TLS relays without HTTP/2 (loadgen relay; a plain
# tokio copy, so a reference point rather than a bound), so a ratio against
# ztunnel can be read against what the topology itself allows.
#
# usage: sudo benches/compare.sh [--ztunnel PATH] [--sidecar PATH] [--duration SECS] [--repeat N] [--out DIR] [--no-floors]
#                                [--ztunnel-env VAR=VALUE ...]
#
# --sidecar runs that ztunnel-sidecar binary instead of target/release's, e.g.
# the static one the image ships (docker/build-local.sh --profile release). It
# runs with the environment its image sets (benches/topology.sh); --ztunnel-env
# adds variables to upstream ztunnel's, e.g. the same GLIBC_TUNABLES, to see
# what they are worth to it.
# needs: root, ip(8) (iproute2), python3.
set -euo pipefail

ZTUNNEL=""
SIDECAR=""
DURATION=8
REPEAT=3
OUT="bench-results"
IDLE_CONNS=2000
FLOORS=1
ZTUNNEL_ENV=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ztunnel) ZTUNNEL="$2"; shift 2 ;;
    --sidecar) SIDECAR="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --idle-connections) IDLE_CONNS="$2"; shift 2 ;;
    --no-floors) FLOORS=0; shift ;;
    --ztunnel-env) ZTUNNEL_ENV+=("$2"); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "compare.sh needs root (network namespaces)" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=benches/bins.sh
. "$ROOT/benches/bins.sh"
build_bins "$SIDECAR"
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW="$OUT/compare-$STAMP.jsonl"
: > "$RAW"

# shellcheck source=benches/topology.sh
. "$ROOT/benches/topology.sh"

start_ztunnel() { # -> sets PA PB
  for side in c s; do mkdir -p "$WORK/zt-$side"; done
  (cd "$WORK/zt-c" && ip netns exec "$C" env -i "${ZTUNNEL_ENV[@]}" FAKE_CA=true XDS_ADDRESS="" LOCAL_XDS_PATH="$WORK/mesh.yaml" \
    PROXY_MODE=dedicated PROXY_WORKLOAD_INFO=bench/client/client UNSTABLE_ENABLE_SOCKS5=true ENABLE_ORIG_SRC=false \
    RUST_LOG=info "$ZTUNNEL" >"$WORK/zt-c.log" 2>&1) &
  PA=$!; PIDS+=($PA)
  (cd "$WORK/zt-s" && ip netns exec "$S" env -i "${ZTUNNEL_ENV[@]}" FAKE_CA=true XDS_ADDRESS="" LOCAL_XDS_PATH="$WORK/mesh.yaml" \
    PROXY_MODE=dedicated PROXY_WORKLOAD_INFO=bench/server/server UNSTABLE_ENABLE_SOCKS5=true ENABLE_ORIG_SRC=false \
    RUST_LOG=info "$ZTUNNEL" >"$WORK/zt-s.log" 2>&1) &
  PB=$!; PIDS+=($PB)
  wait_ready "$C"; wait_ready "$S"
  # The subshell's pid is not the proxy's: find the real ones for RSS.
  PA=$(pgrep -f -n "PROXY_WORKLOAD_INFO=bench/client/client" || pgrep -n -x ztunnel || echo "$PA")
  PB=$(ip netns pids "$S" | while read -r p; do [ "$(cat /proc/$p/comm 2>/dev/null)" = ztunnel ] && echo "$p"; done | head -1)
  PA=$(ip netns pids "$C" | while read -r p; do [ "$(cat /proc/$p/comm 2>/dev/null)" = ztunnel ] && echo "$p"; done | head -1)
}

stop_proxies() { kill "$PA" "$PB" 2>/dev/null || true; wait "$PA" "$PB" 2>/dev/null || true; sleep 0.5; }

record() { # label json...
  local label="$1"; shift
  while read -r line; do
    [ -n "$line" ] && echo "{\"proxy\":\"$label\",${line#\{}" >> "$RAW"
  done
}

suite() { # label [socks5 | relay] [host]: targets are host:9000 (echo) and host:9001 (sink)
  local label="$1" via_arg="${2:-}" host="${3:-10.77.0.2}"
  local via=() tests=(rr throughput crr)
  case "$via_arg" in
    "") ;;
    relay) tests=(rr throughput) ;; # a relay dials per connection: its crr is no floor
    *) via=(--socks5 "$via_arg") ;;
  esac
  # rr first: right after a bulk transfer both proxies answer slower for a while
  # (their sockets and allocators still sized for it), which is not latency.
  ip netns exec "$C" "$BIN/loadgen" rr --target "$host:9000" "${via[@]}" --size 1024 --count 20000 | record "$label"
  [[ " ${tests[*]} " == *" throughput "* ]] || return 0
  ip netns exec "$C" "$BIN/loadgen" throughput --target "$host:9001" "${via[@]}" --connections 1 --duration "$DURATION" | record "$label"
  ip netns exec "$C" "$BIN/loadgen" throughput --target "$host:9001" "${via[@]}" --connections 4 --duration "$DURATION" | record "$label"
  [[ " ${tests[*]} " == *" crr "* ]] || return 0
  ip netns exec "$C" "$BIN/loadgen" crr --target "$host:9000" "${via[@]}" --concurrency 8 --duration "$DURATION" | record "$label"
}

# The floors: two minimal relays in the proxies' places (client side 127.0.0.2,
# server side 10.77.0.2:1510x), plain TCP between them or mutual TLS with the
# sidecar's own rustls settings. No proxy pair that copies through user space
# beats the plain floor here; the TLS relay is what a straightforward TLS
# tunnel without HTTP/2 reaches (a tuned proxy can beat it on throughput).
relay_floor() { # label [tls]
  local label="$1" tls_c=() tls_s=()
  if [ "${2:-}" = tls ]; then
    tls_c=(--tls-connect "$WORK/pki/bench-client" --peer bench/server)
    tls_s=(--tls-accept "$WORK/pki/bench-server")
  fi
  ip netns exec "$S" "$BIN/loadgen" relay --route 10.77.0.2:15100=127.0.0.1:9000 \
    --route 10.77.0.2:15101=127.0.0.1:9001 "${tls_s[@]}" 2>"$WORK/relay-s.log" &
  PB=$!; PIDS+=($PB)
  ip netns exec "$C" "$BIN/loadgen" relay --route 127.0.0.2:9000=10.77.0.2:15100 \
    --route 127.0.0.2:9001=10.77.0.2:15101 "${tls_c[@]}" 2>"$WORK/relay-c.log" &
  PA=$!; PIDS+=($PA)
  sleep 0.3
  suite "$label" relay 127.0.0.2
  stop_proxies
}

memory() { # label
  local label="$1"
  local a0 b0 a1 b1
  a0=$(rss_kib "$PA"); b0=$(rss_kib "$PB")
  echo "{\"test\":\"rss_idle\",\"client_kib\":$a0,\"server_kib\":$b0}" | record "$label"
  ip netns exec "$C" "$BIN/loadgen" idle --target 10.77.0.2:9000 --socks5 127.0.0.1:15080 --connections "$IDLE_CONNS" --hold 6 >/dev/null &
  local lp=$!
  sleep 5
  a1=$(rss_kib "$PA"); b1=$(rss_kib "$PB")
  wait "$lp" || true
  echo "{\"test\":\"idle_connections\",\"connections\":$IDLE_CONNS,\"client_kib_before\":$a0,\"client_kib_during\":$a1,\"server_kib_before\":$b0,\"server_kib_during\":$b1,\"client_bytes_per_conn\":$(( (a1 - a0) * 1024 / IDLE_CONNS )),\"server_bytes_per_conn\":$(( (b1 - b0) * 1024 / IDLE_CONNS ))}" | record "$label"
}

after_load() { # label: what the proxies hold once the suite is over and its connections closed
  sleep 2
  echo "{\"test\":\"rss_after_load\",\"client_kib\":$(rss_kib "$PA"),\"server_kib\":$(rss_kib "$PB")}" | record "$1"
}

# Rounds interleave the rows (direct, floors, this sidecar, ztunnel, then again)
# rather than running each row's repeats back to back: the machine's speed
# drifts over minutes, and a drift must not land on one row only. Memory is
# measured on the first round's fresh proxies.
for round in $(seq 1 "$REPEAT"); do
  echo "== round $round/$REPEAT: direct TCP" >&2
  suite direct
  if [ "$FLOORS" = 1 ]; then
    echo "== round $round/$REPEAT: floors (plain relays, TLS relays)" >&2
    relay_floor relay
    relay_floor tls-relay tls
  fi
  echo "== round $round/$REPEAT: ztunnel-sidecar" >&2
  start_ours
  [ "$round" = 1 ] && memory ztunnel-sidecar
  suite ztunnel-sidecar 127.0.0.1:15080
  after_load ztunnel-sidecar
  stop_proxies
  if [ -n "$ZTUNNEL" ]; then
    echo "== round $round/$REPEAT: upstream ztunnel" >&2
    start_ztunnel
    [ "$round" = 1 ] && memory ztunnel
    suite ztunnel 127.0.0.1:15080
    after_load ztunnel
    stop_proxies
  fi
done

python3 "$ROOT/benches/summarize.py" "$RAW" | tee "$OUT/compare-$STAMP.md"
