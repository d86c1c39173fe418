# Shared by compare.sh and symbol-order.sh (sourced, not run): the two-namespace
# topology of a benchmark, with PKI, a mesh file and the load generator's
# servers, and how to start this sidecar on both ends.
#
#   client task (netns $C, 10.77.0.1)  <--veth-->  server task (netns $S, 10.77.0.2)
#
# Expects: BIN (where loadgen is), SIDECAR (the binary), root. Sets C, S, WORK,
# PIDS, and an EXIT trap that tears everything down.

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

wait_ready() { # netns [attempts] [interval]: default 10 s
  for _ in $(seq 1 "${2:-200}"); do
    if ip netns exec "$1" env READINESS_ADDR=127.0.0.1:15021 "$SIDECAR" healthcheck >/dev/null 2>&1; then return 0; fi
    sleep "${3:-0.05}"
  done
  echo "proxy in $1 did not become ready; its log:" >&2
  tail -n 20 "$WORK"/*.log >&2 2>/dev/null || true
  return 1
}

# The sidecar runs with the environment its image sets (the ENV lines of
# docker/Dockerfile.scratch other than PATH), as it would in a task.
IMAGE_ENV=()
while read -r kv; do IMAGE_ENV+=("$kv"); done < <(sed -n 's/^ENV \([A-Z_]*=.*\)/\1/p' \
  "$(dirname "${BASH_SOURCE[0]}")/../docker/Dockerfile.scratch" | grep -v '^PATH=')

start_ours() { # -> sets PA PB
  ip netns exec "$C" env -i "${IMAGE_ENV[@]}" PROXY_WORKLOAD_INFO=bench/client/client CERT_DIR="$WORK/pki/bench-client" \
    LOCAL_XDS_PATH="$WORK/mesh.yaml" RUST_LOG=info "$SIDECAR" >"$WORK/ours-c.log" 2>&1 &
  PA=$!; PIDS+=($PA)
  ip netns exec "$S" env -i "${IMAGE_ENV[@]}" PROXY_WORKLOAD_INFO=bench/server/server CERT_DIR="$WORK/pki/bench-server" \
    LOCAL_XDS_PATH="$WORK/mesh.yaml" INBOUND_DELIVERY=task-ip RUST_LOG=info "$SIDECAR" >"$WORK/ours-s.log" 2>&1 &
  PB=$!; PIDS+=($PB)
  wait_ready "$C"; wait_ready "$S"
}

