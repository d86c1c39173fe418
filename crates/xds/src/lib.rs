//! Everything a ztunnel-compatible sidecar needs to talk to istiod.
//!
//! istiod is reached over gRPC with TLS, usually through an east-west gateway
//! that passes TLS through to it on port 15012. Two conversations run over
//! that path:
//!
//! * [`ads`]: the delta Aggregated Discovery Service stream. The client
//!   subscribes to workloads/services and authorization policies, hands every
//!   response to an [`ads::XdsHandler`] (which owns the mesh state and decodes
//!   the resources), ACKs or NACKs, reconnects with backoff, and reports
//!   readiness once every type has been applied.
//! * [`ca`]: `CreateCertificate` against istiod's CA, and a [`ca::CertManager`]
//!   that keeps the workload certificate fresh (rotation at half-life, retry
//!   with jittered backoff, the old certificate serving while it is valid).
//!
//! Around them: [`channel`] builds the TLS channel (root certificates from a
//! file, inline PEM or the system store; server-name rules for east-west
//! gateways), [`auth`] produces the per-call metadata (bearer token, cluster
//! id, static headers, AWS IAM), [`aws`] fetches task-role credentials and
//! presigns STS `GetCallerIdentity`, and [`bootstrap`] decodes the
//! `BOOTSTRAP_TOKEN` written by `istioctl ecs add-service`.
//!
//! What this crate is not: it does not read the environment (the binary parses
//! configuration once and passes typed values in), it does not decode xDS
//! resource bodies (the mesh state crate does, through the handler), and it
//! holds no TLS certificates of its own beyond what `zs-tls` gives it.
//!
//! The `testing` feature exports what tests and a local control plane need to
//! play istiod's and AWS's side: a test PKI, a TLS gRPC server that records the
//! SNI it was reached with, an ECS credentials endpoint and an STS stand-in that
//! verifies SigV4 signatures with an implementation independent of the signer.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ads;
pub mod auth;
pub mod aws;
pub mod backoff;
pub mod bootstrap;
pub mod ca;
pub mod channel;
mod http1;
#[cfg(feature = "testing")]
pub mod testing;
