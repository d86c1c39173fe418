//! Test helpers (feature `testing`): a CA that issues real workload certificates
//! with whatever validity a test needs, and writes Istio-style certificate
//! directories so end-to-end tests can start real processes with them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use zs_identity::Identity;

use crate::ca::{CertificateAuthority, Issued};
use crate::{TlsError, WorkloadCertificate};

/// File names of Istio's file-mounted workload certificates.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// See [`CERT_CHAIN_FILE`].
pub const KEY_FILE: &str = "key.pem";
/// See [`CERT_CHAIN_FILE`].
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// A test certificate authority: a fresh root, optionally with an intermediate
/// that does the issuing.
pub struct TestCa {
    issuer: CertificateAuthority,
}

/// A certificate issued by a [`TestCa`], parsed and as PEM.
pub struct TestCert {
    /// The parsed certificate, ready for TLS configs.
    pub cert: WorkloadCertificate,
    /// The issued chain (leaf, intermediates, roots) as PEM.
    pub issued: Issued,
    /// The PKCS#8 private key PEM.
    pub key_pem: String,
}

impl TestCa {
    /// A CA whose root issues directly.
    pub fn new() -> Self {
        TestCa {
            issuer: CertificateAuthority::new_root("test root").expect("generate test root CA"),
        }
    }

    /// A CA whose root issues directly, with `name` as the root's common name
    /// (CAs with the same name are told apart only by their keys).
    pub fn named(name: &str) -> Self {
        TestCa {
            issuer: CertificateAuthority::new_root(name).expect("generate test root CA"),
        }
    }

    /// A CA whose root signs an intermediate that issues, so chains have three links.
    pub fn with_intermediate() -> Self {
        let root = CertificateAuthority::new_root("test root").expect("generate test root CA");
        TestCa {
            issuer: root
                .new_intermediate("test intermediate")
                .expect("generate test intermediate CA"),
        }
    }

    /// The underlying CA (e.g. to sign CSRs).
    pub fn authority(&self) -> &CertificateAuthority {
        &self.issuer
    }

    /// The root bundle PEM.
    pub fn roots_pem(&self) -> &str {
        self.issuer.roots_pem()
    }

    /// A certificate for `identity`, valid from an hour ago for a day.
    pub fn issue(&self, identity: &Identity) -> WorkloadCertificate {
        let now = SystemTime::now();
        self.issue_valid(identity, now - HOUR, now + DAY).cert
    }

    /// A certificate for `identity` valid exactly from `not_before` to `not_after`.
    pub fn issue_valid(
        &self,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> TestCert {
        let (issued, key_pem) = self
            .issuer
            .issue(identity, not_before, not_after)
            .expect("issue test certificate");
        let cert = WorkloadCertificate::from_ca_response(&issued.ca_response(), &key_pem)
            .expect("parse freshly issued test certificate");
        TestCert {
            cert,
            issued,
            key_pem,
        }
    }

    /// A certificate for `identity` that expired an hour ago.
    pub fn issue_expired(&self, identity: &Identity) -> WorkloadCertificate {
        let now = SystemTime::now();
        self.issue_valid(identity, now - DAY, now - HOUR).cert
    }

    /// A certificate for `identity` that becomes valid in an hour.
    pub fn issue_not_yet_valid(&self, identity: &Identity) -> WorkloadCertificate {
        let now = SystemTime::now();
        self.issue_valid(identity, now + HOUR, now + DAY).cert
    }

    /// Writes `cert-chain.pem`, `key.pem` and `root-cert.pem` for `identity` into
    /// `dir` (as Istio mounts them) and returns the certificate.
    pub fn write_cert_dir(
        &self,
        identity: &Identity,
        dir: &Path,
    ) -> std::io::Result<WorkloadCertificate> {
        let now = SystemTime::now();
        let issued = self.issue_valid(identity, now - HOUR, now + DAY);
        issued.write_to(dir)?;
        Ok(issued.cert)
    }

    /// Signs a CSR the way istiod would, returning the CA response chain.
    pub fn sign_csr(&self, csr_pem: &str, ttl: Duration) -> Result<Vec<String>, TlsError> {
        Ok(self.issuer.sign_csr(csr_pem, ttl)?.ca_response())
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCert {
    /// Writes the Istio file trio into `dir`.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(CERT_CHAIN_FILE), self.issued.cert_chain_pem())?;
        std::fs::write(dir.join(KEY_FILE), &self.key_pem)?;
        std::fs::write(dir.join(ROOT_CERT_FILE), &self.issued.roots_pem)?;
        Ok(())
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
