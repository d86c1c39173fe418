#!/usr/bin/env bash
# Regenerates docker/sidecar.symbol-order, the function order the release
# image's linker uses (docker/build-local.sh, docker/Dockerfile).
#
# Why: an idle sidecar's memory is mostly its own code pages, and the kernel
# maps code in 64 KiB windows around each page fault. Scattered over the whole
# text, the ~2 MiB of functions a sidecar actually runs touch nearly every
# window of its 7 MiB; listed first, they touch a third as many.
#
# How: a release build with symbols runs under gdb with a one-shot breakpoint
# on every function (benches/symbol-order/trace.py), on the benchmark's
# two-namespace topology, twice: configured from files (LOCAL_XDS_PATH,
# CERT_DIR) and through local-istiod (BOOTSTRAP_TOKEN: delta xDS and the CA).
# Each time: start-up, SOCKS5 and HBONE both ways (request/response, many short
# connections, bulk, idle connections), a metrics scrape, config_dump,
# readiness, keepalives, shutdown. The functions hit, in the order first hit,
# become the file.
#
# The names are the binary's mangled symbols: a different toolchain or
# dependency set renames some, and the linker skips names it does not know, so
# a stale file costs memory, never correctness. Regenerate after upgrading Rust
# or Cargo.lock.
#
# usage: sudo benches/symbol-order.sh
# needs: root, ip(8), gdb, nm (binutils), curl, python3.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "symbol-order.sh needs root (network namespaces)" >&2; exit 2; }
for tool in gdb nm curl python3 ip; do
  command -v "$tool" >/dev/null || { echo "symbol-order.sh needs $tool" >&2; exit 2; }
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
target=x86_64-unknown-linux-gnu
# The image's build (the release profile keeps the symbol table), linked in the
# current order: the names are what matters, and they do not depend on it.
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  ZTUNNEL_SIDECAR_SYMBOL_ORDER="$(ls "$ROOT/docker/sidecar.symbol-order" 2>/dev/null || true)" \
  cargo build --locked --release --target "$target" -p ztunnel-sidecar --bin ztunnel-sidecar
cargo build --locked --release --quiet -p zs-benches --bin loadgen
cargo build --locked --quiet -p local-istiod --bin local-istiod
BIN="$ROOT/target/release"
ISTIOD="$ROOT/target/debug/local-istiod"

SIDECAR="$ROOT/target/$target/release/ztunnel-sidecar"
# shellcheck source=benches/topology.sh
. "$ROOT/benches/topology.sh"
cp "$SIDECAR" "$WORK/ztunnel-sidecar"
SIDECAR="$WORK/ztunnel-sidecar"
nm --defined-only "$SIDECAR" | awk '$2 ~ /^[tTwW]$/ {print $1}' | sort -u > "$WORK/funcs"
echo "tracing $(wc -l < "$WORK/funcs") functions" >&2

traced() { # netns name -- env...: runs the sidecar under the tracer
  local ns="$1" name="$2"; shift 3
  ip netns exec "$ns" env -i RUST_LOG=info "$@" FUNCS="$WORK/funcs" OUT="$WORK/hits-$name" \
    gdb -batch -nx -x "$ROOT/benches/symbol-order/trace.py" --args "$SIDECAR" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}

ready() { wait_ready "$1" 600 0.5; } # long: every first call stops in the tracer

drive() { # the traffic every configuration sees
  local L=(ip netns exec "$C" "$BIN/loadgen")
  "${L[@]}" rr --target 10.77.0.2:9000 --socks5 127.0.0.1:15080 --size 1024 --count 200 >/dev/null
  "${L[@]}" crr --target 10.77.0.2:9000 --socks5 127.0.0.1:15080 --concurrency 4 --duration 2 >/dev/null
  "${L[@]}" throughput --target 10.77.0.2:9001 --socks5 127.0.0.1:15080 --connections 2 --duration 2 >/dev/null
  "${L[@]}" idle --target 10.77.0.2:9000 --socks5 127.0.0.1:15080 --connections 50 --hold 2 >/dev/null
  for ns in "$C" "$S"; do
    ip netns exec "$ns" curl -s -o /dev/null http://127.0.0.1:15020/stats/prometheus
    ip netns exec "$ns" curl -s -o /dev/null http://127.0.0.1:15000/config_dump
    ip netns exec "$ns" curl -s -o /dev/null http://127.0.0.1:15021/healthz/ready
  done
  sleep 12 # HBONE keepalive pings, timers
}

stop_traced() {
  pkill -TERM -f "^$SIDECAR" || true
  for _ in $(seq 1 60); do pgrep -f "^$SIDECAR" >/dev/null || break; sleep 0.5; done
  pkill -KILL -f "gdb -batch -nx -x $ROOT/benches/symbol-order/trace.py" || true
  sleep 1
}

echo "== configured from files" >&2
traced "$C" files-c -- PROXY_WORKLOAD_INFO=bench/client/client CERT_DIR="$WORK/pki/bench-client" \
  LOCAL_XDS_PATH="$WORK/mesh.yaml"
traced "$S" files-s -- PROXY_WORKLOAD_INFO=bench/server/server CERT_DIR="$WORK/pki/bench-server" \
  LOCAL_XDS_PATH="$WORK/mesh.yaml" INBOUND_DELIVERY=task-ip
ready "$C"; ready "$S"
drive
stop_traced

echo "== through local-istiod" >&2
ip netns exec "$S" "$ISTIOD" --config "$WORK/mesh.yaml" --listen 10.77.0.2:15012 --san 10.77.0.2 \
  --state-dir "$WORK/istiod" >"$WORK/istiod.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/istiod/root-cert.pem" ] && break; sleep 0.1; done
token() { "$ISTIOD" bootstrap-token --url https://10.77.0.2:15012 --state-dir "$WORK/istiod" --namespace bench --service-account "$1"; }
traced "$C" istiod-c -- PROXY_WORKLOAD_INFO=bench/client/client BOOTSTRAP_TOKEN="$(token client)"
traced "$S" istiod-s -- PROXY_WORKLOAD_INFO=bench/server/server BOOTSTRAP_TOKEN="$(token server)" \
  INBOUND_DELIVERY=task-ip
ready "$C"; ready "$S"
drive
stop_traced

nm --defined-only "$SIDECAR" > "$WORK/symbols"
python3 - "$WORK" "$ROOT/docker/sidecar.symbol-order" "$(rustc --version)" <<'PY'
import sys
work, out, rustc = sys.argv[1:4]
names = {}
for line in open(f"{work}/symbols"):
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        names.setdefault(int(parts[0], 16), []).append(parts[2])
order, seen = [], set()
for run in ["files-c", "files-s", "istiod-c", "istiod-s"]:
    for line in open(f"{work}/hits-{run}"):
        addr = int(line, 16)
        if addr not in seen:
            seen.add(addr)
            order.extend(names.get(addr, []))
with open(out, "w") as f:
    f.write("# Generated by benches/symbol-order.sh; read by the linker (lld --symbol-ordering-file).\n")
    f.write(f"# {len(order)} functions that ran, in the order first run; built with {rustc}.\n")
    f.write("\n".join(order) + "\n")
print(f"{out}: {len(order)} functions", file=sys.stderr)
PY
