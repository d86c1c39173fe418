//! The workload certificate: what this proxy presents and what it trusts.
//!
//! A certificate arrives either as Istio's file-mounted trio (`cert-chain.pem`,
//! `key.pem`, `root-cert.pem`) or as an istiod `CreateCertificate` response. Both
//! are parsed once, here, into a [`WorkloadCertificate`] that holds everything a
//! handshake needs ready to use (the rustls `CertifiedKey`, the root store) plus
//! what the admin `config_dump` shows (serials, validity, PEM). The roots that
//! come with the certificate are the only trust anchors for that workload's mTLS,
//! in both directions.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zs_identity::Identity;

use crate::TlsError;

/// A workload's certificate: leaf, intermediates, private key and the trust roots
/// that came with it. Immutable; rotation replaces the whole value (see
/// [`CertificateHandle`](crate::CertificateHandle)).
pub struct WorkloadCertificate {
    key: Arc<CertifiedKey>,
    roots: Vec<CertificateDer<'static>>,
    root_store: Arc<RootCertStore>,
    identity: Option<Identity>,
    chain_info: Vec<CertInfo>,
    root_info: Vec<CertInfo>,
}

/// What the admin interface shows about one certificate of a chain or bundle.
#[derive(Clone, Debug)]
pub struct CertInfo {
    der: CertificateDer<'static>,
    serial: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl CertInfo {
    fn parse(der: &CertificateDer<'static>, what: &'static str) -> Result<Self, TlsError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| TlsError::Certificate {
            what,
            reason: e.to_string(),
        })?;
        Ok(CertInfo {
            der: der.clone(),
            serial: cert.tbs_certificate.serial.to_string(),
            not_before: to_system_time(cert.validity().not_before.timestamp()),
            not_after: to_system_time(cert.validity().not_after.timestamp()),
        })
    }

    /// The certificate's serial number in decimal, as ztunnel's `config_dump` prints it.
    pub fn serial_number(&self) -> &str {
        &self.serial
    }

    /// Start of the validity period.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the validity period.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The certificate in DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The certificate as a PEM `CERTIFICATE` block.
    pub fn pem(&self) -> String {
        der_to_pem(&self.der)
    }
}

impl WorkloadCertificate {
    /// Parses Istio's file-mounted certificates: `cert-chain.pem` (leaf first, then
    /// intermediates), `key.pem` (PKCS#8, SEC1 or PKCS#1) and `root-cert.pem` (one or
    /// more roots, all trust anchors).
    pub fn from_pem(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        roots_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = parse_certs(cert_chain_pem, "certificate chain")?;
        let roots = parse_certs(roots_pem, "root certificates")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(key_pem_error)?;
        Self::build(chain, key, roots)
    }

    /// Parses an istiod `CreateCertificate` response: element 0 is the leaf, the
    /// last element is the root bundle (possibly several concatenated roots, all
    /// trust anchors), anything in between are intermediates. The key is the
    /// PKCS#8 PEM generated with the CSR.
    pub fn from_ca_response(cert_chain: &[String], key_pem: &str) -> Result<Self, TlsError> {
        let (roots_pem, leaf_and_intermediates) = match cert_chain {
            [] => return Err(TlsError::EmptyCaResponse),
            [_leaf_only] => return Err(TlsError::NoRootCertificate),
            [rest @ .., roots] => (roots, rest),
        };
        let mut chain = Vec::with_capacity(leaf_and_intermediates.len());
        for pem in leaf_and_intermediates {
            chain.extend(parse_certs(
                pem.as_bytes(),
                "CA response certificate chain",
            )?);
        }
        let roots = parse_certs(roots_pem.as_bytes(), "CA response root bundle")?;
        let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
            Ok(key @ PrivateKeyDer::Pkcs8(_)) => key,
            Ok(_) => return Err(TlsError::KeyNotPkcs8),
            Err(e) => return Err(key_pem_error(e)),
        };
        Self::build(chain, key, roots)
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TlsError> {
        let chain_info = chain
            .iter()
            .map(|c| CertInfo::parse(c, "certificate chain"))
            .collect::<Result<Vec<_>, _>>()?;
        let root_info = roots
            .iter()
            .map(|c| CertInfo::parse(c, "root certificates"))
            .collect::<Result<Vec<_>, _>>()?;
        let identity = chain.first().and_then(|leaf| first_identity(leaf));

        let mut root_store = RootCertStore::empty();
        for root in &roots {
            root_store
                .add(root.clone())
                .map_err(|e| TlsError::Certificate {
                    what: "root certificates",
                    reason: e.to_string(),
                })?;
        }

        let key = CertifiedKey::from_der(chain, key, &crate::config::provider(false)).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    TlsError::KeyMismatch
                }
                other => TlsError::Key(other),
            },
        )?;

        Ok(WorkloadCertificate {
            key: Arc::new(key),
            roots,
            root_store: Arc::new(root_store),
            identity,
            chain_info,
            root_info,
        })
    }

    /// The first parseable SPIFFE URI SAN of the leaf: the identity this workload
    /// presents. `None` if the leaf carries no Istio-form SPIFFE URI.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Start of the leaf's validity period.
    pub fn not_before(&self) -> SystemTime {
        self.leaf_info().not_before
    }

    /// End of the leaf's validity period.
    pub fn not_after(&self) -> SystemTime {
        self.leaf_info().not_after
    }

    /// When to fetch a replacement: halfway through the leaf's validity, as istio-agent and ztunnel do.
    pub fn refresh_at(&self) -> SystemTime {
        let (nb, na) = (self.not_before(), self.not_after());
        nb + na.duration_since(nb).unwrap_or(Duration::ZERO) / 2
    }

    /// Whether the leaf is past its `notAfter` at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now > self.not_after()
    }

    /// Leaf first, then intermediates: what is sent in the handshake.
    pub fn chain_der(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    /// The trust anchors that came with this certificate.
    pub fn roots_der(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Serial and validity of each certificate in [`chain_der`](Self::chain_der), for `config_dump`.
    pub fn chain_info(&self) -> &[CertInfo] {
        &self.chain_info
    }

    /// Serial and validity of each root, for `config_dump`.
    pub fn roots_info(&self) -> &[CertInfo] {
        &self.root_info
    }

    /// The leaf's serial number in decimal.
    pub fn serial_number(&self) -> &str {
        &self.leaf_info().serial
    }

    pub(crate) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    pub(crate) fn root_store(&self) -> &Arc<RootCertStore> {
        &self.root_store
    }

    fn leaf_info(&self) -> &CertInfo {
        // `build` never accepts an empty chain (`parse_certs` requires one certificate
        // and `CertifiedKey::from_der` checks the leaf), so index 0 always exists.
        &self.chain_info[0]
    }
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity)
            .field("serial", &self.serial_number())
            .field("not_after", &self.not_after())
            .field("chain_len", &self.chain_info.len())
            .field("roots", &self.root_info.len())
            .finish_non_exhaustive()
    }
}

/// The SPIFFE identities among a certificate's URI SANs, in order; other URIs and
/// non-URI names are skipped. An unparseable certificate has none.
pub fn identities(cert_der: &[u8]) -> Vec<Identity> {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.parse::<Identity>().ok(),
            _ => None,
        })
        .collect()
}

/// The first SPIFFE identity among a certificate's URI SANs.
pub fn first_identity(cert_der: &[u8]) -> Option<Identity> {
    identities(cert_der).into_iter().next()
}

fn parse_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

fn key_pem_error(e: rustls_pki_types::pem::Error) -> TlsError {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey,
        other => TlsError::Pem {
            what: "private key",
            reason: other.to_string(),
        },
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

pub(crate) fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
