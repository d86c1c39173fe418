#!/usr/bin/env bash
# Interoperability with upstream ztunnel, both directions, on the benchmark's
# two-namespace topology (benches/topology.sh):
#
#   1. ztunnel (client task, SOCKS5) -> HBONE -> this sidecar (server task)
#   2. this sidecar (client task, SOCKS5) -> HBONE -> ztunnel (server task)
#
# Each direction: 50 MiB of random bytes through SOCKS5 to an echo server with
# the echo's SHA-256 checked, 20 round trips, 2,000 1 KiB request/response
# round trips and 2 s of connect-request-close at concurrency 8 (failures are
# counted by loadgen). ztunnel runs in dedicated mode with FAKE_CA; this sidecar
# gets certificates issued by ztunnel's test root (from the ztunnel source tree:
# src/tls/root-cert.pem and ca-key.pem), so each trusts the other's chain.
#
# usage: sudo benches/interop.sh --ztunnel PATH --ztunnel-src DIR [--sidecar PATH]
# needs: root, ip(8), openssl, python3; a ztunnel built with --features testing.
set -euo pipefail
ZT=""; ZSRC=""; SIDECAR_ARG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ztunnel) ZT="$2"; shift 2 ;;
    --ztunnel-src) ZSRC="$2"; shift 2 ;;
    --sidecar) SIDECAR_ARG="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$ZT" ] && [ -n "$ZSRC" ] || { echo "usage: $0 --ztunnel PATH --ztunnel-src DIR [--sidecar PATH]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "interop.sh needs root (network namespaces)" >&2; exit 2; }
ZT=$(realpath "$ZT")
ZTLS=$(realpath "$ZSRC")/src/tls
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=benches/bins.sh
. "$ROOT/benches/bins.sh"
build_bins "$SIDECAR_ARG"
CHECK="$ROOT/benches/socks-check.py"
# shellcheck source=benches/topology.sh
. "$ROOT/benches/topology.sh"
# certificates for our sidecar from ztunnel's test root
for who in client server; do
  d="$WORK/ztpki/bench-$who"; mkdir -p "$d"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/key.pem" 2>/dev/null
  openssl req -new -key "$d/key.pem" -subj "/O=cluster.local" -out "$d/csr.pem" 2>/dev/null
  printf "subjectAltName=critical,URI:spiffe://cluster.local/ns/bench/sa/%s\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n" "$who" > "$d/ext.cnf"
  openssl x509 -req -in "$d/csr.pem" -CA "$ZTLS/root-cert.pem" -CAkey "$ZTLS/ca-key.pem" -CAcreateserial \
    -days 2 -sha256 -extfile "$d/ext.cnf" -out "$d/cert-chain.pem" 2>/dev/null
  cp "$ZTLS/root-cert.pem" "$d/root-cert.pem"
done
zt() { # netns who
  mkdir -p "$WORK/zt-$2"
  (cd "$WORK/zt-$2" && ip netns exec "$1" env -i FAKE_CA=true XDS_ADDRESS="" LOCAL_XDS_PATH="$WORK/mesh.yaml" \
    PROXY_MODE=dedicated PROXY_WORKLOAD_INFO=bench/$2/$2 UNSTABLE_ENABLE_SOCKS5=true ENABLE_ORIG_SRC=false \
    RUST_LOG=info "$ZT" >"$WORK/zt-$2.log" 2>&1) &
  PIDS+=($!)
}
ours() { # netns who [extra env]
  local ns=$1 who=$2; shift 2
  ip netns exec "$ns" env -i "${IMAGE_ENV[@]}" PROXY_WORKLOAD_INFO=bench/$who/$who CERT_DIR="$WORK/ztpki/bench-$who" \
    LOCAL_XDS_PATH="$WORK/mesh.yaml" RUST_LOG=info "$@" "$SIDECAR" >"$WORK/ours-$who.log" 2>&1 &
  PIDS+=($!)
}
wait_port() { for _ in $(seq 1 100); do ip netns exec "$1" bash -c "echo > /dev/tcp/$2/$3" 2>/dev/null && return 0; sleep 0.1; done; echo "no $2:$3 in $1"; return 1; }
check() {
  ip netns exec "$C" python3 "$CHECK" 127.0.0.1 15080 10.77.0.2 9000 $((50*1024*1024))
  ip netns exec "$C" "$BIN/loadgen" rr --target 10.77.0.2:9000 --socks5 127.0.0.1:15080 --size 1024 --count 2000
  local crr
  crr=$(ip netns exec "$C" "$BIN/loadgen" crr --target 10.77.0.2:9000 --socks5 127.0.0.1:15080 --concurrency 8 --duration 2)
  echo "$crr"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(1 if r["failed"] or not r["connections"] else 0)' "$crr" \
    || { echo "FAIL: connect-request-close had failures" >&2; exit 1; }
}
echo "== ztunnel (client) -> this sidecar (server)"
ours "$S" server INBOUND_DELIVERY=task-ip
zt "$C" client
wait_port "$C" 127.0.0.1 15080; wait_port "$S" 10.77.0.2 15008; sleep 1
check
echo "this sidecar served $(grep -c 'direction="inbound"' "$WORK/ours-server.log" || true) inbound connections"
pkill -f "^$ZT( |$)" || true; pkill -f "^$SIDECAR( |$)" || true; sleep 1
echo "== this sidecar (client) -> ztunnel (server)"
zt "$S" server
ours "$C" client
wait_port "$C" 127.0.0.1 15080; wait_port "$S" 10.77.0.2 15008; sleep 1
check
echo "ztunnel served $(grep -c 'direction="inbound"' "$WORK/zt-server.log" || true) inbound connections"
echo "PASS: both directions"
