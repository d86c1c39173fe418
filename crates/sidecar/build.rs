//! Optional function layout for the release image.
//!
//! With `ZTUNNEL_SIDECAR_SYMBOL_ORDER=<file>` set (docker/build-local.sh and
//! docker/Dockerfile set it for the `release` profile), the binary is linked
//! with lld's `--symbol-ordering-file`: the functions a running sidecar uses
//! (listed by benches/symbol-order.sh) are placed together, so an idle
//! sidecar maps a third of the code pages it otherwise would. Names the file
//! lists but the build does not have are skipped, so a stale file only costs
//! memory. Only the final link changes: nothing else is rebuilt.

fn main() {
    println!("cargo:rerun-if-env-changed=ZTUNNEL_SIDECAR_SYMBOL_ORDER");
    let Ok(path) = std::env::var("ZTUNNEL_SIDECAR_SYMBOL_ORDER") else {
        return;
    };
    if path.is_empty() {
        return;
    }
    let path = std::fs::canonicalize(&path)
        .unwrap_or_else(|e| panic!("ZTUNNEL_SIDECAR_SYMBOL_ORDER={path}: {e}"));
    println!("cargo:rerun-if-changed={}", path.display());
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}
