//! The CA and the server's own certificate, kept in a state directory.
//!
//! istiod signs both workload certificates and its own serving certificate
//! with one root, and clients verify istiod against that root (the
//! `root-cert.pem` of `XDS_ROOT_CA` / `CA_ROOT_CA`). This module does the same:
//!
//! * a generated CA is written to `ca-cert.pem` / `ca-key.pem` on first start
//!   and loaded on later starts, so certificates issued before a restart stay
//!   valid (and a restarted server is still trusted);
//! * a given CA (`--ca-cert`, `--ca-key`, optionally `--ca-root` when it is an
//!   intermediate) is used as is;
//! * `root-cert.pem` (the trust anchors to give clients) and
//!   `serving-cert.pem` / `serving-key.pem` are (re)written on every start; the
//!   serving certificate names istiod's service (`istiod.istio-system.svc` and
//!   friends), `localhost`, `127.0.0.1`, the listen address and any `--san`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use zs_identity::Identity;
use zs_tls::ca::CertificateAuthority;

/// The names istiod's serving certificate carries, plus loopback.
pub const DEFAULT_SANS: [&str; 5] = [
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod",
    "localhost",
    "127.0.0.1",
];

/// File names in the state directory.
pub mod files {
    /// The generated CA's certificate.
    pub const CA_CERT: &str = "ca-cert.pem";
    /// The generated CA's private key.
    pub const CA_KEY: &str = "ca-key.pem";
    /// The trust anchors clients need (`XDS_ROOT_CA`, `CA_ROOT_CA`).
    pub const ROOT_CERT: &str = "root-cert.pem";
    /// The serving certificate chain.
    pub const SERVING_CERT: &str = "serving-cert.pem";
    /// The serving key.
    pub const SERVING_KEY: &str = "serving-key.pem";
}

/// Where the CA comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// Generated on first start, kept in the state directory.
    Generate,
    /// Loaded from files.
    Files {
        /// The issuing CA certificate (PEM).
        cert: PathBuf,
        /// Its private key (PEM).
        key: PathBuf,
        /// The trust anchors, when the CA is an intermediate (PEM; default: `cert`).
        root: Option<PathBuf>,
    },
}

/// Why the PKI could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The CA files are unusable.
    #[error("CA {path}: {reason}")]
    BadCa {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate could not be made.
    #[error("issuing {what}: {reason}")]
    Issue {
        /// What was being issued.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

/// The serving certificate.
#[derive(Clone, Debug)]
pub struct ServingCert {
    /// Leaf, then intermediates (PEM).
    pub chain_pem: String,
    /// PKCS#8 key (PEM).
    pub key_pem: String,
}

/// The CA, its issuer key for the test-only signing paths, and the serving certificate.
pub struct Pki {
    authority: CertificateAuthority,
    issuer: Issuer<'static, KeyPair>,
    serving: ServingCert,
    root_path: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("root_path", &self.root_path)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, content: &str, private: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Write next to the target and rename, so a reader never sees half a file.
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, content).map_err(io)?;
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

impl Pki {
    /// Loads or creates the CA, then writes `root-cert.pem` and a fresh serving
    /// certificate for [`DEFAULT_SANS`] plus `extra_sans` into `state_dir`.
    pub fn prepare(
        state_dir: &Path,
        source: &CaSource,
        extra_sans: &[String],
    ) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(state_dir).map_err(|source| PkiError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let (authority, cert_path) = match source {
            CaSource::Files { cert, key, root } => {
                let cert_pem = read(cert)?;
                let key_pem = read(key)?;
                let roots_pem = match root {
                    Some(r) => read(r)?,
                    None => cert_pem.clone(),
                };
                let ca =
                    CertificateAuthority::from_pem(&cert_pem, &key_pem, Vec::new(), &roots_pem)
                        .map_err(|e| PkiError::BadCa {
                            path: cert.clone(),
                            reason: e.to_string(),
                        })?;
                (ca, cert.clone())
            }
            CaSource::Generate => {
                let cert_path = state_dir.join(files::CA_CERT);
                let key_path = state_dir.join(files::CA_KEY);
                if cert_path.exists() && key_path.exists() {
                    let cert_pem = read(&cert_path)?;
                    let ca = CertificateAuthority::from_pem(
                        &cert_pem,
                        &read(&key_path)?,
                        Vec::new(),
                        &cert_pem,
                    )
                    .map_err(|e| PkiError::BadCa {
                        path: cert_path.clone(),
                        reason: e.to_string(),
                    })?;
                    (ca, cert_path)
                } else {
                    let ca = CertificateAuthority::new_root("local-istiod CA").map_err(|e| {
                        PkiError::Issue {
                            what: "the CA",
                            reason: e.to_string(),
                        }
                    })?;
                    write(&key_path, &ca.key_pem(), true)?;
                    write(&cert_path, ca.cert_pem(), false)?;
                    (ca, cert_path)
                }
            }
        };
        let key = KeyPair::from_pem(&authority.key_pem()).map_err(|e| PkiError::BadCa {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(authority.cert_pem(), key).map_err(|e| PkiError::BadCa {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;

        let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
        for s in extra_sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        let serving = serving_cert(&issuer, &authority, sans)?;
        let root_path = state_dir.join(files::ROOT_CERT);
        write(&root_path, authority.roots_pem(), false)?;
        write(
            &state_dir.join(files::SERVING_CERT),
            &serving.chain_pem,
            false,
        )?;
        write(&state_dir.join(files::SERVING_KEY), &serving.key_pem, true)?;
        Ok(Pki {
            authority,
            issuer,
            serving,
            root_path,
        })
    }

    /// The CA that signs workload certificates.
    pub fn authority(&self) -> &CertificateAuthority {
        &self.authority
    }

    /// The serving certificate.
    pub fn serving(&self) -> &ServingCert {
        &self.serving
    }

    /// Where `root-cert.pem` was written.
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// Test only: signs the CSR's key for `identity` with a validity window
    /// that ended an hour ago, as a CA with a broken clock would.
    pub fn sign_expired(
        &self,
        csr_pem: &str,
        identity: &Identity,
    ) -> Result<Vec<String>, PkiError> {
        let issue = |reason: String| PkiError::Issue {
            what: "an expired test certificate",
            reason,
        };
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| issue(e.to_string()))?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| issue(e.to_string()))?;
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
        params.not_before = OffsetDateTime::from(now - Duration::from_secs(2 * 3600));
        params.not_after = OffsetDateTime::from(now - Duration::from_secs(3600));
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| issue(e.to_string()))?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.intermediates());
        chain.push(self.authority.roots_pem().to_string());
        Ok(chain)
    }

    /// The CA certificate itself when it is an intermediate (it goes into chains).
    fn intermediates(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.authority.cert_pem() != self.authority.roots_pem() {
            out.push(self.authority.cert_pem().to_string());
        }
        out.extend(self.authority.parents_pem().iter().cloned());
        out
    }

    /// A rustls server configuration presenting the serving certificate, ALPN `h2`.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, PkiError> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |reason: String| PkiError::Issue {
            what: "the TLS server configuration",
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(self.serving.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.serving.key_pem.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn serving_cert(
    issuer: &Issuer<'static, KeyPair>,
    authority: &CertificateAuthority,
    sans: Vec<String>,
) -> Result<ServingCert, PkiError> {
    let issue = |reason: String| PkiError::Issue {
        what: "the serving certificate",
        reason,
    };
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| issue(e.to_string()))?;
    let mut params = CertificateParams::new(sans).map_err(|e| issue(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "istiod.istio-system.svc");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = OffsetDateTime::from(now - Duration::from_secs(3600));
    params.not_after = OffsetDateTime::from(now + Duration::from_secs(365 * 24 * 3600));
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| issue(e.to_string()))?;
    let mut chain_pem = cert.pem();
    if authority.cert_pem() != authority.roots_pem() {
        chain_pem.push_str(authority.cert_pem());
    }
    for p in authority.parents_pem() {
        chain_pem.push_str(p);
    }
    Ok(ServingCert {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls_pki_types::pem::PemObject as _;
    use x509_parser::prelude::*;

    fn sans_of(pem: &str) -> Vec<String> {
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        cert.subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                    Ok(v4) => std::net::IpAddr::from(v4).to_string(),
                    Err(_) => format!("{b:?}"),
                },
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn generated_ca_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::prepare(dir.path(), &CaSource::Generate, &[]).unwrap();
        let second = Pki::prepare(dir.path(), &CaSource::Generate, &[]).unwrap();
        assert_eq!(first.authority().cert_pem(), second.authority().cert_pem());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(files::ROOT_CERT)).unwrap(),
            first.authority().roots_pem()
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(files::CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn serving_certificate_names_istiod_loopback_and_extras() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::prepare(
            dir.path(),
            &CaSource::Generate,
            &["127.9.9.9".into(), "istiod.example".into()],
        )
        .unwrap();
        assert_eq!(
            sans_of(&pki.serving().chain_pem),
            [
                "istiod.istio-system.svc",
                "istiod.istio-system.svc.cluster.local",
                "istiod",
                "localhost",
                "127.0.0.1",
                "127.9.9.9",
                "istiod.example"
            ]
        );
    }

    #[test]
    fn given_ca_files_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::new_root("given").unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, ca.cert_pem()).unwrap();
        std::fs::write(&key, ca.key_pem()).unwrap();
        let state = dir.path().join("state");
        let pki = Pki::prepare(
            &state,
            &CaSource::Files {
                cert,
                key,
                root: None,
            },
            &[],
        )
        .unwrap();
        assert_eq!(pki.authority().roots_pem(), ca.cert_pem());
        assert!(!state.join(files::CA_KEY).exists());
    }

    #[test]
    fn expired_test_certificates_are_expired() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::prepare(dir.path(), &CaSource::Generate, &[]).unwrap();
        let id: Identity = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let (csr, key) = zs_tls::generate_csr(&id).unwrap();
        let chain = pki.sign_expired(&csr, &id).unwrap();
        let cert = zs_tls::WorkloadCertificate::from_ca_response(&chain, &key).unwrap();
        assert!(cert.is_expired(SystemTime::now()));
        assert_eq!(cert.identity(), Some(&id));
    }
}
