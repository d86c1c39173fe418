//! The operator-facing side of the sidecar: the admin, metrics and readiness
//! HTTP servers, the readiness health check client, and logging setup, all
//! behaving as upstream ztunnel's do so that what an ambient-mesh operator
//! already uses (Prometheus scrapes, `istioctl ztunnel-config`, log pipelines,
//! health checks) works unchanged.
//!
//! What it is not: it defines no metrics of the data path (the crates that
//! count things register them in the [`prometheus_client`] registry this crate
//! serves), reads no environment variables and binds no sockets. The caller
//! parses configuration, binds the listeners on the addresses it chose
//! (`ADMIN_ADDR`, `STATS_ADDR`, `READINESS_ADDR`) and hands them over; each
//! server runs on whichever Tokio runtime drives its `serve` future, which lets
//! the sidecar keep operator traffic on a small control runtime so a slow
//! scrape never stalls the data path. The sidecar binary is the user.
//!
//! Modules:
//! - [`readiness`]: pending startup tasks, drain, and the `/healthz/ready` server;
//! - [`metrics_server`]: `/stats/prometheus` and `/metrics`, `istio_build`, process gauges;
//! - [`admin_server`]: `/config_dump`, `/quitquitquit`, `/logging`;
//! - [`config_dump`]: the `/config_dump` document in ztunnel's shape;
//! - [`telemetry`]: ztunnel's text and JSON log formats and the runtime filter;
//! - [`healthcheck`]: the client that asks the readiness server;
//! - `istioctl` (feature `testing`): how `istioctl ztunnel-config` reads
//!   `/config_dump`, for tests.
//!
//! All three servers are HTTP/1.1 only, give a client two seconds to send its
//! request headers and read at most 8 KiB per request, like ztunnel's; a
//! malformed request gets a 4xx from the HTTP layer and never reaches a handler.

#![warn(missing_docs)]

pub mod admin_server;
pub mod config_dump;
pub mod healthcheck;
mod http;
#[cfg(feature = "testing")]
pub mod istioctl;
pub mod metrics_server;
pub mod readiness;
pub mod telemetry;

pub use admin_server::Admin;
pub use config_dump::{
    BuildInfo, CertInfo, CertState, CertificateDump, CertificateSource, ConfigDump,
    ConfigDumpError, StaticConfig,
};
pub use healthcheck::HealthError;
pub use http::{HEADER_READ_TIMEOUT, MAX_BUF_SIZE};
pub use readiness::{BlockReady, Readiness};
pub use telemetry::{LogControl, LogFormat, TelemetryError};
