# Shared by compare.sh and interop.sh (sourced, not run): builds the load
# generator, and this sidecar unless a binary was given, from the checkout at
# $ROOT. Sets BIN (where loadgen is) and SIDECAR (the sidecar to run).
build_bins() { # [sidecar binary]
  if [ -n "${1:-}" ]; then
    cargo build --release --quiet -p zs-benches --bin loadgen
  else
    cargo build --release --quiet -p ztunnel-sidecar -p zs-benches --bin ztunnel-sidecar --bin loadgen
  fi
  BIN="$ROOT/target/release"
  SIDECAR=$(realpath "${1:-$BIN/ztunnel-sidecar}")
}
