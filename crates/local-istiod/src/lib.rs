//! `local-istiod`: a local control plane for tests and demos.
//!
//! **It is not a replacement for istiod.** It knows no Kubernetes, no
//! multi-cluster, no mesh configuration beyond one YAML file, and it trusts
//! whatever that file says. It exists so that the sidecar (and upstream
//! ztunnel) can be exercised against a real control-plane conversation on one
//! machine: in the end-to-end tests, in the benches, and in the local demo.
//!
//! What it serves, on one TLS port (HTTP/2 gRPC, ALPN `h2`), is what a
//! ztunnel-compatible proxy asks istiod for:
//!
//! * delta ADS (`DeltaAggregatedResources`) for `istio.workload.Address` and
//!   `istio.security.Authorization`, built from a file in ztunnel's
//!   local-config format (the same parser the sidecar uses for
//!   `LOCAL_XDS_PATH`). Every resource carries a content hash as its version,
//!   so a reconnecting client that sends `initial_resource_versions` gets only
//!   what changed while it was away. When the file changes (polled, or on
//!   `SIGHUP`), each stream receives only the changed resources and the names
//!   of the removed ones. ACKs and NACKs are recorded per node ([`status`]).
//! * `CreateCertificate`, signing CSRs with a CA it generates (and keeps in a
//!   state directory, so certificates stay valid across restarts) or loads.
//!   Its own serving certificate is signed by the same root, as istiod's is.
//!
//! Callers authenticate with bearer tokens or, as ECS tasks do, with a
//! presigned STS request that is replayed to an STS endpoint ([`auth`]).
//! With authentication on, a CSR must ask for the caller's own identity.
//!
//! For tests it can be paused (every stream dropped, new calls refused with
//! `UNAVAILABLE`) and resumed through a small HTTP admin endpoint ([`admin`]),
//! killed and restarted, and told to serve chosen resources malformed or to
//! issue expired certificates ([`TestKnobs`]).
//!
//! Data flow: [`watch`] turns the file into a [`snapshot::Snapshot`] and
//! publishes it on a `watch` channel; every ADS stream ([`ads`]) diffs the new
//! snapshot against what it has sent that client and pushes the difference.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod ads;
pub mod auth;
pub mod bootstrap;
pub mod ca;
pub mod cli;
pub mod pki;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod watch;

pub use server::{Config, LocalIstiod, ServeError, TestKnobs};
