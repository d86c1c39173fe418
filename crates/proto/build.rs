//! Compiles the project's `.proto` files with `protox` (a pure-Rust protobuf
//! compiler, so no `protoc` binary is needed) and generates prost messages
//! plus tonic stubs. The stubs are wrapped in `cfg(feature = "grpc")` so that
//! pure-logic crates can use the messages without pulling in tonic.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "istio/workload/workload.proto",
    "istio/security/authorization.proto",
    "istio/v1/auth/ca.proto",
    "envoy/service/discovery/v3/discovery.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .server_mod_attribute(".", "#[cfg(feature = \"grpc\")]")
        .client_mod_attribute(".", "#[cfg(feature = \"grpc\")]")
        // Raw IP bytes are copied into the mesh state; Bytes avoids a second copy
        // of every workload's addresses while decoding large pushes.
        .bytes(".istio.workload.Workload.addresses")
        .disable_comments(["."])
        .compile_fds(fds)?;
    Ok(())
}
