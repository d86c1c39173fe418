//! A small certificate authority that issues workload certificates the way
//! istiod's CA does: the SPIFFE URI SAN from the CSR, an empty subject, client
//! and server auth, and the chain returned as `[leaf, intermediates…, roots]`.
//!
//! It exists for the local control plane used in tests and demos and for this
//! crate's test helpers. It is not a production CA: there is no persistence, no
//! revocation, and no policy beyond "the CSR names exactly one SPIFFE identity";
//! deciding *whether* a caller may have that identity is the caller's job (see
//! [`csr_identity`]).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use time::OffsetDateTime;
use zs_identity::Identity;

use crate::TlsError;

/// An issuing CA: a key and its certificate, plus the certificates above it
/// (intermediates up to and including the root bundle) that go into responses.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// Intermediates between this CA and the root, nearest first (empty when this CA is the root).
    parents_pem: Vec<String>,
    /// The trust anchors, concatenated as istiod's root bundle.
    roots_pem: String,
}

/// A signed leaf together with the chain a CA response carries.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf certificate PEM.
    pub leaf_pem: String,
    /// Intermediate certificate PEMs, nearest to the leaf first.
    pub intermediates_pem: Vec<String>,
    /// The root bundle (one or more concatenated PEM roots).
    pub roots_pem: String,
}

impl Issued {
    /// The `cert_chain` of an istiod `CreateCertificateResponse`: leaf, intermediates, root bundle.
    pub fn ca_response(&self) -> Vec<String> {
        let mut chain = Vec::with_capacity(self.intermediates_pem.len() + 2);
        chain.push(self.leaf_pem.clone());
        chain.extend(self.intermediates_pem.iter().cloned());
        chain.push(self.roots_pem.clone());
        chain
    }

    /// The content of Istio's `cert-chain.pem`: leaf followed by intermediates.
    pub fn cert_chain_pem(&self) -> String {
        let mut out = self.leaf_pem.clone();
        for pem in &self.intermediates_pem {
            out.push_str(pem);
        }
        out
    }
}

impl CertificateAuthority {
    /// A new self-signed root CA (ECDSA P-256) named `common_name`, valid for ten years.
    pub fn new_root(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(signing)?;
        let params = ca_params(common_name, 1)?;
        let cert = params.self_signed(&key).map_err(signing)?;
        let cert_pem = cert.pem();
        Ok(CertificateAuthority {
            issuer: Issuer::new(params, key),
            roots_pem: cert_pem.clone(),
            cert_pem,
            parents_pem: Vec::new(),
        })
    }

    /// A new intermediate CA signed by `self`. Certificates it issues chain through
    /// it to `self`'s roots.
    pub fn new_intermediate(&self, common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(signing)?;
        let params = ca_params(common_name, 0)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(signing)?;
        let mut parents_pem = Vec::with_capacity(self.parents_pem.len() + 1);
        if !self.is_root() {
            parents_pem.push(self.cert_pem.clone());
        }
        parents_pem.extend(self.parents_pem.iter().cloned());
        Ok(CertificateAuthority {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            parents_pem,
            roots_pem: self.roots_pem.clone(),
        })
    }

    /// Loads an existing CA from its certificate and private key PEM. `roots_pem`
    /// is the bundle handed out as trust anchors (for a root CA, its own
    /// certificate); `intermediates_pem` are the certificates between this CA
    /// and the root, if it is not the root itself.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        intermediates_pem: Vec<String>,
        roots_pem: &str,
    ) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Pem {
            what: "CA private key",
            reason: e.to_string(),
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| TlsError::Certificate {
                what: "CA certificate",
                reason: e.to_string(),
            })?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            parents_pem: intermediates_pem,
            roots_pem: roots_pem.to_owned(),
        })
    }

    /// The trust anchors (PEM) relying parties need.
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    /// This CA's own certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// This CA's private key (PKCS#8 PEM), to persist it for [`from_pem`](Self::from_pem).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The intermediates between this CA and the root (PEM, nearest first),
    /// to persist alongside [`key_pem`](Self::key_pem).
    pub fn parents_pem(&self) -> &[String] {
        &self.parents_pem
    }

    /// Signs a PEM CSR, valid from now (minus a minute of clock-skew allowance)
    /// for `ttl`. The CSR's signature must verify and it must name exactly one
    /// SPIFFE identity in its URI SANs; its subject is ignored.
    pub fn sign_csr(&self, csr_pem: &str, ttl: Duration) -> Result<Issued, TlsError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            TlsError::InvalidCsr {
                reason: e.to_string(),
            }
        })?;
        let identity = single_identity(&csr.params)?;
        let now = SystemTime::now();
        let params = leaf_params(&identity, now - Duration::from_secs(60), now + ttl)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(signing)?;
        Ok(self.issued(cert.pem()))
    }

    /// Issues a certificate for `identity` with a fresh P-256 key and exactly the
    /// validity window given (which may lie entirely in the past or future).
    /// Returns the issued chain and the PKCS#8 key PEM.
    pub fn issue(
        &self,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(Issued, String), TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(signing)?;
        let params = leaf_params(identity, not_before, not_after)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(signing)?;
        Ok((self.issued(cert.pem()), key.serialize_pem()))
    }

    fn is_root(&self) -> bool {
        self.cert_pem == self.roots_pem
    }

    fn issued(&self, leaf_pem: String) -> Issued {
        let mut intermediates_pem = Vec::with_capacity(self.parents_pem.len() + 1);
        if !self.is_root() {
            intermediates_pem.push(self.cert_pem.clone());
        }
        intermediates_pem.extend(self.parents_pem.iter().cloned());
        Issued {
            leaf_pem,
            intermediates_pem,
            roots_pem: self.roots_pem.clone(),
        }
    }
}

/// The single SPIFFE identity a PEM CSR asks for. A CA server checks this against
/// what the caller is authorized for before calling [`CertificateAuthority::sign_csr`].
pub fn csr_identity(csr_pem: &str) -> Result<Identity, TlsError> {
    let csr =
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| TlsError::InvalidCsr {
            reason: e.to_string(),
        })?;
    single_identity(&csr.params)
}

fn single_identity(params: &CertificateParams) -> Result<Identity, TlsError> {
    let mut uris = params.subject_alt_names.iter().filter_map(|san| match san {
        SanType::URI(uri) => Some(uri.as_str()),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => uri.parse().map_err(|e| TlsError::InvalidCsr {
            reason: format!("URI SAN {uri:?} is not a SPIFFE identity: {e}"),
        }),
        (None, _) => Err(TlsError::InvalidCsr {
            reason: "no URI SAN".into(),
        }),
        (Some(_), Some(_)) => Err(TlsError::InvalidCsr {
            reason: "more than one URI SAN".into(),
        }),
    }
}

fn ca_params(common_name: &str, path_len: u8) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ztunnel-sidecar");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = OffsetDateTime::from(now - Duration::from_secs(3600));
    params.not_after = OffsetDateTime::from(now + Duration::from_secs(10 * 365 * 24 * 3600));
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn leaf_params(
    identity: &Identity,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, TlsError> {
    let uri = identity.to_string().try_into().map_err(signing)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = OffsetDateTime::from(not_before);
    params.not_after = OffsetDateTime::from(not_after);
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// 128 random bits, top bit clear so the DER INTEGER stays positive without padding.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn signing(e: rcgen::Error) -> TlsError {
    TlsError::Signing {
        reason: e.to_string(),
    }
}
