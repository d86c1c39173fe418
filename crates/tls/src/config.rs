//! rustls configurations for HBONE, and the two verifiers that make them SPIFFE-aware.
//!
//! Both directions use the same crypto: TLS 1.3 only (1.2 only when configured),
//! AES-GCM suites only, ALPN `h2`. They differ in who is checked and how:
//!
//! * the client ([`client_config`]) sends no SNI and resumes no sessions; it
//!   verifies the server's chain against its own certificate's roots (EKU server
//!   auth) and then requires that some SPIFFE URI SAN of the server equals some
//!   identity the caller expected. DNS names and IPs are never looked at.
//! * the server ([`server_config`]) demands a client certificate, verifies its
//!   chain against the same roots (EKU client auth) and then requires that some
//!   SPIFFE URI SAN of the client is in the server's own trust domain. Finer
//!   decisions are authorization's job, on the identity [`peer_identity`] returns.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use zs_identity::Identity;

use crate::cert::{first_identity, identities};
use crate::{TlsError, WorkloadCertificate};

/// The only application protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// TLS settings that come from configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Also allow TLS 1.2 (`TLS12_ENABLED`). Off by default: HBONE peers speak 1.3.
    pub tls12: bool,
}

/// The server name handed to rustls by HBONE clients. SNI is disabled and the
/// server is verified by SPIFFE identity only, so the value never reaches the
/// wire nor any check; an IP form keeps rustls from treating it as a DNS name.
pub fn hbone_server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
}

/// The crypto provider: ring, with cipher suites restricted to AES-GCM.
///
/// AES-128-GCM comes first, as in BoringSSL (Envoy, so Istio's sidecars and
/// gateways) and Go: it is what those peers negotiate in TLS 1.3, and it is
/// the cheaper of the two on the data path (AES was ~18 % of a sidecar's CPU
/// in a bulk-transfer profile with AES-256). A server honours the client's
/// order, so a peer that prefers AES-256 (upstream ztunnel) still gets it.
pub(crate) fn provider(tls12: bool) -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut cipher_suites = vec![cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384];
    if tls12 {
        cipher_suites.extend([
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ]);
    }
    Arc::new(CryptoProvider {
        cipher_suites,
        ..rustls::crypto::ring::default_provider()
    })
}

fn versions(opts: &TlsOptions) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static TLS13_12: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    if opts.tls12 { TLS13_12 } else { TLS13 }
}

/// Client configuration for one outbound HBONE connection: presents `cert`'s chain,
/// accepts a server only if its chain leads to `cert`'s roots and one of its
/// SPIFFE identities is in `expected`. An empty `expected` never matches.
pub fn client_config(
    cert: &WorkloadCertificate,
    expected: Vec<Identity>,
    opts: &TlsOptions,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider(opts.tls12);
    let verifier = IdentityVerifier {
        roots: cert.root_store().clone(),
        expected,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(opts))
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(FixedCert(cert.certified_key().clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Server configuration for inbound HBONE: presents `cert`'s chain, requires a
/// client certificate chained to `cert`'s roots and carrying an identity in the
/// trust domain of `cert`'s own identity. Fails if `cert` has no identity, since
/// there would be no trust domain to hold clients to.
pub fn server_config(
    cert: &WorkloadCertificate,
    opts: &TlsOptions,
) -> Result<Arc<ServerConfig>, TlsError> {
    let trust_domain = cert
        .identity()
        .ok_or(TlsError::NoIdentity)?
        .trust_domain()
        .to_owned();
    let provider = provider(opts.tls12);
    let base =
        WebPkiClientVerifier::builder_with_provider(cert.root_store().clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let verifier = TrustDomainVerifier { base, trust_domain };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(opts))
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(FixedCert(cert.certified_key().clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Resumption tickets would let a client skip certificate verification on later
    // connections; HBONE clients never resume, so the server keeps no state for it.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The first parseable SPIFFE URI SAN of the peer's leaf certificate, once the
/// handshake has completed.
pub fn peer_identity(conn: &CommonState) -> Option<Identity> {
    conn.peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| first_identity(leaf))
}

/// Always presents the same certificate: the workload has exactly one.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Verifies an HBONE server: chain to our roots for server auth, then SPIFFE identity.
#[derive(Debug)]
struct IdentityVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<Identity>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(webpki_to_rustls)?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(webpki_to_rustls)?;

        let presented = identities(end_entity);
        if presented.iter().any(|id| self.expected.contains(id)) {
            return Ok(ServerCertVerified::assertion());
        }
        tracing::debug!(expected = ?self.expected, ?presented, "HBONE server identity mismatch");
        Err(TlsError::IdentityMismatch {
            expected: self.expected.clone(),
            presented,
        }
        .into_rustls())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies an HBONE client: webpki chain check for client auth, then trust domain.
#[derive(Debug)]
struct TrustDomainVerifier {
    base: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl ClientCertVerifier for TrustDomainVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.base.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .base
            .verify_client_cert(end_entity, intermediates, now)?;
        let presented = identities(end_entity);
        if presented
            .iter()
            .any(|id| id.trust_domain() == self.trust_domain)
        {
            return Ok(verified);
        }
        tracing::debug!(expected = %self.trust_domain, ?presented, "HBONE client trust domain mismatch");
        Err(TlsError::TrustDomainMismatch {
            expected: self.trust_domain.clone(),
            presented,
        }
        .into_rustls())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.base.supported_verify_schemes()
    }
}

/// Maps webpki's verdicts onto rustls' certificate errors, so both verifiers
/// report failures (and send alerts) the same way rustls' own verifiers do.
fn webpki_to_rustls(error: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let cert_error = match error {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        W::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertRevoked => CertificateError::Revoked,
        W::UnknownRevocationStatus => CertificateError::UnknownRevocationStatus,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        #[allow(deprecated)]
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
            CertificateError::InvalidPurpose
        }
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}
