//! The one error type of this crate.
//!
//! Two families share it: errors building things (parsing PEM, a CA response,
//! a CSR, a rustls configuration) that a caller handles directly, and the
//! identity verdicts of the verifiers, which travel inside
//! `rustls::Error::InvalidCertificate(CertificateError::Other(..))` through the
//! handshake and can be recovered with [`TlsError::from_handshake_error`].

use std::error::Error as StdError;
use std::fmt;

use zs_identity::Identity;

/// Why a certificate, key, CSR or TLS configuration could not be used, or why a
/// peer's certificate was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM input held no `CERTIFICATE` block.
    #[error("no certificate found in {what}")]
    NoCertificate { what: &'static str },
    /// A PEM input could not be decoded.
    #[error("invalid PEM in {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    /// A certificate is not valid X.509 DER.
    #[error("invalid certificate in {what}: {reason}")]
    Certificate { what: &'static str, reason: String },
    /// The key PEM held no private key.
    #[error("no private key found in the key PEM")]
    NoPrivateKey,
    /// istiod responses carry PKCS#8 keys (we generate them); anything else is a bug upstream.
    #[error("private key is not PKCS#8")]
    KeyNotPkcs8,
    /// The private key is not one the crypto provider can sign with.
    #[error("unusable private key: {0}")]
    Key(rustls::Error),
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate")]
    KeyMismatch,
    /// The CA answered with no certificates at all.
    #[error("CA response is empty")]
    EmptyCaResponse,
    /// The CA answered with a leaf only: without roots nothing can be verified.
    #[error("no root certificate present")]
    NoRootCertificate,
    /// The workload certificate carries no SPIFFE URI SAN, so it cannot anchor HBONE identity checks.
    #[error("certificate has no SPIFFE identity in its URI SANs")]
    NoIdentity,
    /// A CSR could not be built.
    #[error("cannot build a CSR for {identity}: {reason}")]
    Csr { identity: Identity, reason: String },
    /// A CSR handed to the CA is unreadable or unacceptable.
    #[error("invalid CSR: {reason}")]
    InvalidCsr { reason: String },
    /// The CA could not sign.
    #[error("signing failed: {reason}")]
    Signing { reason: String },
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Config(rustls::Error),
    /// The server's certificate carries none of the identities the client expected.
    #[error("peer identity mismatch: expected one of [{}], peer presented [{}]", List(.expected), List(.presented))]
    IdentityMismatch {
        expected: Vec<Identity>,
        presented: Vec<Identity>,
    },
    /// The client's certificate is not from the server's trust domain.
    #[error("peer trust domain mismatch: expected {expected}, peer presented [{}]", List(.presented))]
    TrustDomainMismatch {
        expected: String,
        presented: Vec<Identity>,
    },
}

impl TlsError {
    /// Finds the identity verdict of this crate's verifiers in a handshake error
    /// (as returned by tokio-rustls: an `io::Error` wrapping a `rustls::Error`),
    /// so callers can tell "wrong identity" apart from other TLS failures.
    pub fn from_handshake_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a TlsError> {
        let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(tls) = e.downcast_ref::<TlsError>() {
                return Some(tls);
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
                && let Some(found) = Self::from_handshake_error(inner)
            {
                return Some(found);
            }
            if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
                e.downcast_ref::<rustls::Error>()
            {
                return other.0.downcast_ref::<TlsError>();
            }
            cur = e.source();
        }
        None
    }

    /// Wraps this verdict the way rustls carries application verification failures.
    pub(crate) fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(self),
        )))
    }
}

/// Comma-separated display of identities for error messages.
struct List<'a>(&'a [Identity]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            fmt::Display::fmt(id, f)?;
        }
        Ok(())
    }
}
