//! Certificate signing requests in the shape istiod expects.
//!
//! istiod signs whatever identity the caller is authorized for and reads it from
//! the CSR's URI SAN; ztunnel sends a CSR with an empty subject and a single
//! critical SubjectAltName holding the SPIFFE URI, signed with a fresh P-256 key.
//! We send exactly that.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use zs_identity::Identity;

use crate::TlsError;

/// Builds a CSR for `identity` with a fresh ECDSA P-256 key (ECDSA-SHA256
/// signature, empty subject, one critical SAN extension with the SPIFFE URI).
/// Returns `(csr_pem, pkcs8_key_pem)`; keep the key for
/// [`WorkloadCertificate::from_ca_response`](crate::WorkloadCertificate::from_ca_response).
pub fn generate_csr(identity: &Identity) -> Result<(String, String), TlsError> {
    let err = |e: rcgen::Error| TlsError::Csr {
        identity: identity.clone(),
        reason: e.to_string(),
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let uri = identity.to_string().try_into().map_err(err)?;
    let mut params = CertificateParams::default();
    // rcgen marks the SAN extension critical exactly when the subject is empty,
    // which is what RFC 5280 requires and what istiod's CSRs look like.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params.serialize_request(&key).map_err(err)?;
    let csr_pem = csr.pem().map_err(err)?;
    Ok((csr_pem, key.serialize_pem()))
}
