//! Benchmarks for ztunnel-sidecar. See `benches/README.md`.
