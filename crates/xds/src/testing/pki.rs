//! A throw-away PKI for istiod's serving certificate.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// A root CA that issues server certificates.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
}

/// A server certificate and its key.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The leaf certificate (PEM).
    pub cert_pem: String,
    /// The PKCS#8 private key (PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

impl TestPki {
    /// A fresh root named `common_name`.
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().expect("generate root key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-sign root");
        TestPki {
            root_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The root certificate (PEM): what `XDS_ROOT_CA` should hold.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server_cert(&self, names: &[&str]) -> ServerCert {
        let key = KeyPair::generate().expect("generate server key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = CertificateParams::new(names).expect("server certificate names");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server certificate");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls server configuration (ALPN `h2`) presenting a certificate for `names`.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        self.server_cert(names).server_config()
    }
}

impl ServerCert {
    /// A rustls server configuration (ALPN `h2`) presenting this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain = vec![
            CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("parse server cert"),
        ];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("parse server key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate and key");
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }
}
