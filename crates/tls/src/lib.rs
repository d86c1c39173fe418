//! The mutual-TLS identity layer of HBONE: workload certificates, the rustls
//! configurations both ends of an HBONE connection use, and CSRs for istiod.
//!
//! Istio ambient authenticates workloads by SPIFFE identity
//! (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`) carried as a
//! URI SAN in short-lived certificates. This crate turns such a certificate
//! ([`WorkloadCertificate`], from files or from a CA response) into
//! [`client_config`] and [`server_config`] that verify peers the way ztunnel
//! does: the client accepts a server only if one of its identities is one the
//! caller expected (never by DNS name); the server accepts any client from its
//! own trust domain and leaves finer decisions to authorization, through
//! [`peer_identity`]. Defaults are closed: TLS 1.3 with AES-GCM only, no SNI,
//! no resumption, mandatory client certificates, and an empty expectation list
//! matches nothing.
//!
//! It does no I/O: fetching certificates from istiod is the xDS crate's job, and
//! sockets are the HBONE crate's. [`CertificateHandle`] is how the two meet: the
//! fetcher rotates, the proxy reads. [`ca`] is a minimal issuing CA for the local
//! control plane and tests; with the `testing` feature, `testing::TestCa` makes
//! test certificates (including expired and not-yet-valid ones) in one line.

mod cert;
mod config;
mod csr;
mod error;
mod handle;

pub mod ca;
#[cfg(feature = "testing")]
pub mod testing;

pub use cert::{CertInfo, WorkloadCertificate, first_identity, identities};
pub use config::{
    ALPN_H2, TlsOptions, client_config, hbone_server_name, peer_identity, server_config,
};
pub use csr::generate_csr;
pub use error::TlsError;
pub use handle::CertificateHandle;
pub use zs_identity::Identity;

/// rustls, re-exported so users name the same version this crate configures.
pub use rustls;
