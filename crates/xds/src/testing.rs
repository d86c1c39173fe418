//! Helpers for tests and for a local control plane (feature `testing`).
//!
//! They play the other side of every conversation this crate has, speaking
//! the real wire formats over real sockets on loopback:
//!
//! * [`pki`]: a throw-away root CA issuing server certificates (for istiod);
//! * [`server`]: a TLS gRPC server that records the SNI each connection
//!   arrived with and can be "killed" to simulate istiod going away;
//! * [`ads`]: a scripted delta ADS server: the test reads the requests the
//!   client sent and decides each response;
//! * [`ca`]: an `IstioCertificateService` signing CSRs with a `zs-tls` CA,
//!   recording request metadata, and able to fail or misbehave on demand;
//! * [`aws`]: an ECS container credentials endpoint, an STS stand-in that
//!   verifies SigV4 signatures with its own implementation (not the signer's),
//!   and istiod's side of IAM authentication (decode, replay, map the role).
//!
//! Nothing here is meant for production traffic.

pub mod ads;
pub mod aws;
pub mod ca;
mod http;
pub mod pki;
pub mod server;
