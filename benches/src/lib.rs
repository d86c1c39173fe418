//! Benchmarks for ztunnel-sidecar: Criterion benches (`benches/benches/`), the
//! `loadgen` tool, and `compare.sh`, which runs it side by side on two network
//! namespaces against direct TCP, relay floors and upstream ztunnel.
