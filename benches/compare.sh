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

SUF=$$
C="zsb-c-$SUF"
S="zsb-s-$SUF"
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true
  ip netns del "$S" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$C"
ip netns add "$S"
ip -n "$C" link set lo up
ip -n "$S" link set lo up
ip link add "zsbc$SUF" netns "$C" type veth peer name "zsbs$SUF" netns "$S"
ip -n "$C" addr add 10.77.0.1/24 dev "zsbc$SUF"
ip -n "$S" addr add 10.77.0.2/24 dev "zsbs$SUF"
ip -n "$C" link set "zsbc$SUF" up
ip -n "$S" link set "zsbs$SUF" up
# Connection-rate runs open tens of thousands of connections; without these, the
# kernel's search for a free ephemeral port among TIME_WAIT sockets becomes the
# thing being measured. The range stays above the proxies' ports (150xx): a
# TIME_WAIT left on 15020 by the direct run would keep a proxy from binding it.
for ns in "$C" "$S"; do
  ip netns exec "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="16000 65000"
done

"$BIN/loadgen" pki --dir "$WORK/pki" --identity bench/client --identity bench/server >/dev/null
cat > "$WORK/mesh.yaml" <<EOF
workloads:
- uid: bench//Pod/bench/client
  name: client
  namespace: bench
  serviceAccount: client
  trustDomain: cluster.local
  workloadIps: ["10.77.0.1"]
  protocol: HBONE
  services: {}
- uid: bench//Pod/bench/server
  name: server
  namespace: bench
  serviceAccount: server
  trustDomain: cluster.local
  workloadIps: ["10.77.0.2"]
  protocol: HBONE
  services: {}
policies: []
services: []
EOF

ip netns exec "$S" "$BIN/loadgen" server --echo 0.0.0.0:9000 --sink 0.0.0.0:9001 2>/dev/null &
PIDS+=($!)
sleep 0.3

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

wait_ready() { # netns
  for _ in $(seq 1 200); do
    if ip netns exec "$1" env READINESS_ADDR=127.0.0.1:15021 "$SIDECAR" healthcheck >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "proxy in $1 did not become ready; its log:" >&2
  tail -n 20 "$WORK"/*.log >&2 2>/dev/null || true
  return 1
}

start_ours() { # -> sets PA PB
  ip netns exec "$C" env -i PROXY_WORKLOAD_INFO=bench/client/client CERT_DIR="$WORK/pki/bench-client" \
    LOCAL_XDS_PATH="$WORK/mesh.yaml" RUST_LOG=info "$SIDECAR" >"$WORK/ours-c.log" 2>&1 &
  PA=$!; PIDS+=($PA)
  ip netns exec "$S" env -i PROXY_WORKLOAD_INFO=bench/server/server CERT_DIR="$WORK/pki/bench-server" \
    LOCAL_XDS_PATH="$WORK/mesh.yaml" INBOUND_DELIVERY=task-ip RUST_LOG=info "$SIDECAR" >"$WORK/ours-s.log" 2>&1 &
  PB=$!; PIDS+=($PB)
  wait_ready "$C"; wait_ready "$S"
}

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

echo "== direct TCP" >&2
suite direct

echo "== ztunnel-sidecar" >&2
start_ours
memory ztunnel-sidecar
suite ztunnel-sidecar 127.0.0.1:15080
stop_proxies

if [ -n "$ZTUNNEL" ]; then
  echo "== upstream ztunnel" >&2
  start_ztunnel
  memory ztunnel
  suite ztunnel 127.0.0.1:15080
  stop_proxies
fi

python3 "$ROOT/benches/summarize.py" "$RAW" | tee "$OUT/compare-$STAMP.md"
