#!/usr/bin/env bash
# The test suite: unit, property and end-to-end tests (real sidecar processes,
# real TLS, real sockets). End-to-end tests that need network namespaces or
# iptables run when the caller is root and skip (saying so) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
# The e2e tests start the workspace binaries; build them once up front so the
# first tests do not pay for it inside their own timeouts.
cargo build --workspace --bins --locked
if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi
