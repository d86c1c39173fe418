//! End-to-end test harness for ztunnel-sidecar.
//!
//! Tests start real `ztunnel-sidecar` processes (and, where needed, the local
//! control plane) with certificates from a throwaway CA, real applications on
//! ephemeral ports, and real clients. Each test gets its own block of loopback
//! addresses (`127.A.B.x`), so tests run in parallel without port clashes.
//!
//! Binaries are built on first use (once per test run, across nextest's
//! processes) so `cargo test` and `cargo nextest run` always test current code.

pub mod apps;
pub mod bins;
pub mod clusters;
pub mod dns;
pub mod docker;
pub mod gateway;
pub mod http_app;
pub mod istiod;
pub mod logs;
pub mod mesh;
pub mod net;
pub mod netns;
pub mod networks;
pub mod pair;
pub mod prom;
pub mod seed;
pub mod sidecar;
pub mod socks;
pub mod task_metadata;
pub mod tls;
pub mod topology;
pub mod waypoint;

pub use apps::*;
pub use http_app::*;
pub use mesh::*;
pub use net::*;
pub use pair::*;
pub use sidecar::*;
pub use socks::*;
