#!/usr/bin/env bash
# Side-by-side data-plane benchmark on a two-namespace topology:
#
#   client task (netns, 10.77.0.1)  <--veth-->  server task (netns, 10.77.0.2)
#   loadgen client + proxy A                    proxy B + loadgen echo/sink server
#
# Runs the same loadgen suite for: direct TCP (no proxy), ztunnel-sidecar on
# both ends, and — when a ztunnel binary is given — upstream ztunnel on both
# ends (dedicated mode, FAKE_CA, SOCKS5 on). Prints a table with ratios
# against the other rows of the same run (machines are noisy: compare within a
# run, never across runs) and writes raw JSON lines next to it.
#
# usage: sudo benches/compare.sh [--ztunnel PATH] [--sidecar PATH] [--duration SECS] [--repeat N] [--out DIR]
#
# --sidecar runs that ztunnel-sidecar binary instead of target/release's, e.g.
# the static one the image ships (docker/build-local.sh --profile release).
# needs: root, ip(8) (iproute2), python3.
set -euo pipefail

ZTUNNEL=""
SIDECAR=""
DURATION=8
REPEAT=3
OUT="bench-results"
IDLE_CONNS=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --ztunnel) ZTUNNEL="$2"; shift 2 ;;
    --sidecar) SIDECAR="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --idle-connections) IDLE_CONNS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "compare.sh needs root (network namespaces)" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ -n "$SIDECAR" ]; then
  cargo build --release --quiet -p zs-benches --bin loadgen
else
  cargo build --release --quiet -p ztunnel-sidecar -p zs-benches --bin ztunnel-sidecar --bin loadgen
fi
BIN="$ROOT/target/release"
SIDECAR=$(realpath "${SIDECAR:-$BIN/ztunnel-sidecar}")
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW="$OUT/compare-$STAMP.jsonl"
: > "$RAW"

# shellcheck source=benches/topology.sh
. "$ROOT/benches/topology.sh"

start_ztunnel() { # -> sets PA PB
  for side in c s; do mkdir -p "$WORK/zt-$side"; done
  (cd "$WORK/zt-c" && ip netns exec "$C" env -i FAKE_CA=true XDS_ADDRESS="" LOCAL_XDS_PATH="$WORK/mesh.yaml" \
    PROXY_MODE=dedicated PROXY_WORKLOAD_INFO=bench/client/client UNSTABLE_ENABLE_SOCKS5=true ENABLE_ORIG_SRC=false \
    RUST_LOG=info "$ZTUNNEL" >"$WORK/zt-c.log" 2>&1) &
  PA=$!; PIDS+=($PA)
  (cd "$WORK/zt-s" && ip netns exec "$S" env -i FAKE_CA=true XDS_ADDRESS="" LOCAL_XDS_PATH="$WORK/mesh.yaml" \
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

suite() { # label [socks5]
  local label="$1" socks="${2:-}"
  local via=()
  [ -n "$socks" ] && via=(--socks5 "$socks")
  for _ in $(seq 1 "$REPEAT"); do
    ip netns exec "$C" "$BIN/loadgen" throughput --target 10.77.0.2:9001 "${via[@]}" --connections 1 --duration "$DURATION" | record "$label"
    ip netns exec "$C" "$BIN/loadgen" throughput --target 10.77.0.2:9001 "${via[@]}" --connections 4 --duration "$DURATION" | record "$label"
    ip netns exec "$C" "$BIN/loadgen" rr --target 10.77.0.2:9000 "${via[@]}" --size 1024 --count 20000 | record "$label"
    ip netns exec "$C" "$BIN/loadgen" crr --target 10.77.0.2:9000 "${via[@]}" --concurrency 8 --duration "$DURATION" | record "$label"
  done
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

echo "== direct TCP" >&2
suite direct

echo "== ztunnel-sidecar" >&2
start_ours
memory ztunnel-sidecar
suite ztunnel-sidecar 127.0.0.1:15080
after_load ztunnel-sidecar
stop_proxies

if [ -n "$ZTUNNEL" ]; then
  echo "== upstream ztunnel" >&2
  start_ztunnel
  memory ztunnel
  suite ztunnel 127.0.0.1:15080
  after_load ztunnel
  stop_proxies
fi

python3 "$ROOT/benches/summarize.py" "$RAW" | tee "$OUT/compare-$STAMP.md"
