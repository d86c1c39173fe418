//! Real TLS handshakes (over an in-memory duplex pipe) between the client and
//! server configurations, with certificates from real CAs.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zs_tls::testing::TestCa;
use zs_tls::{Identity, TlsError, TlsOptions, WorkloadCertificate};

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";

struct Outcome {
    client: std::io::Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>>,
    server: std::io::Result<tokio_rustls::server::TlsStream<tokio::io::DuplexStream>>,
}

impl Outcome {
    /// With TLS 1.3 the client finishes its handshake before the server has
    /// judged the client certificate; a round trip shows whether both sides agree.
    async fn exchange(self) -> (std::io::Result<()>, std::io::Result<()>) {
        let (Ok(mut c), Ok(mut s)) = (self.client, self.server) else {
            panic!("exchange needs two established sessions");
        };
        let client = async {
            c.write_all(b"ping").await?;
            c.flush().await?;
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"pong");
            Ok(())
        };
        let server = async {
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ping");
            s.write_all(b"pong").await?;
            s.flush().await?;
            Ok(())
        };
        tokio::join!(client, server)
    }
}

async fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
) -> Outcome {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (client, server) = tokio::join!(
        TlsConnector::from(client).connect(zs_tls::hbone_server_name(), a),
        TlsAcceptor::from(server).accept(b),
    );
    Outcome { client, server }
}

async fn hbone_handshake(
    client_cert: &WorkloadCertificate,
    expected: Vec<Identity>,
    server_cert: &WorkloadCertificate,
) -> Outcome {
    let opts = TlsOptions::default();
    handshake(
        zs_tls::client_config(client_cert, expected, &opts).unwrap(),
        zs_tls::server_config(server_cert, &opts).unwrap(),
    )
    .await
}

fn verdict(err: &std::io::Error) -> Option<&TlsError> {
    TlsError::from_handshake_error(err)
}

fn cert_error(err: &std::io::Error) -> Option<&rustls::CertificateError> {
    match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(e) => Some(e),
        _ => None,
    }
}

#[tokio::test]
async fn client_accepts_server_with_expected_identity() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue(&id(CLIENT)),
        vec![id(SERVER)],
        &ca.issue(&id(SERVER)),
    )
    .await;
    let client = outcome.client.as_ref().expect("client handshake");
    let server = outcome.server.as_ref().expect("server handshake");
    assert_eq!(zs_tls::peer_identity(client.get_ref().1), Some(id(SERVER)));
    assert_eq!(zs_tls::peer_identity(server.get_ref().1), Some(id(CLIENT)));
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        client.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(outcome.exchange().await.1.ok(), Some(()));
}

#[tokio::test]
async fn client_sends_no_sni() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue(&id(CLIENT)),
        vec![id(SERVER)],
        &ca.issue(&id(SERVER)),
    )
    .await;
    let server = outcome.server.expect("server handshake");
    assert_eq!(server.get_ref().1.server_name(), None);
}

#[tokio::test]
async fn negotiated_cipher_suite_is_aes_gcm() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue(&id(CLIENT)),
        vec![id(SERVER)],
        &ca.issue(&id(SERVER)),
    )
    .await;
    let suite = outcome
        .client
        .expect("client handshake")
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .unwrap()
        .suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}

/// Upstream ztunnel lists AES-256-GCM first; our server follows the client's
/// order, so that is what such a client gets.
#[tokio::test]
async fn server_follows_a_client_that_prefers_aes_256() {
    use rustls::crypto::ring::cipher_suite as cs;
    let ca = TestCa::new();
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    let client = ca.issue_valid(&id(CLIENT), now - day, now + day);
    let chain: Vec<CertificateDer<'static>> = client.cert.chain_der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_AES_128_GCM_SHA256],
        ..rustls::crypto::ring::default_provider()
    };
    let mut config = trusting_client(provider, &[&rustls::version::TLS13])
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let server = zs_tls::server_config(&ca.issue(&id(SERVER)), &TlsOptions::default()).unwrap();
    let outcome = handshake(Arc::new(config), server).await;
    let suite = outcome
        .server
        .as_ref()
        .expect("server handshake")
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .unwrap()
        .suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    assert_eq!(outcome.exchange().await.1.ok(), Some(()));
}

#[tokio::test]
async fn client_accepts_when_any_expected_identity_matches() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue(&id(CLIENT)),
        vec![id("spiffe://cluster.local/ns/default/sa/other"), id(SERVER)],
        &ca.issue(&id(SERVER)),
    )
    .await;
    assert!(outcome.client.is_ok());
}

#[tokio::test]
async fn client_rejects_server_with_unexpected_identity() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue(&id(CLIENT)),
        vec![id("spiffe://cluster.local/ns/default/sa/expected")],
        &ca.issue(&id(SERVER)),
    )
    .await;
    let err = outcome.client.expect_err("identity mismatch must fail");
    match verdict(&err) {
        Some(TlsError::IdentityMismatch {
            expected,
            presented,
        }) => {
            assert_eq!(
                expected,
                &vec![id("spiffe://cluster.local/ns/default/sa/expected")]
            );
            assert_eq!(presented, &vec![id(SERVER)]);
        }
        other => panic!("expected IdentityMismatch, got {other:?} ({err})"),
    }
    assert!(outcome.server.is_err(), "server sees the client's alert");
}

#[tokio::test]
async fn client_with_empty_expected_list_rejects_every_server() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(&ca.issue(&id(CLIENT)), vec![], &ca.issue(&id(SERVER))).await;
    let err = outcome.client.expect_err("empty expectation must fail");
    assert!(matches!(
        verdict(&err),
        Some(TlsError::IdentityMismatch { .. })
    ));
}

#[tokio::test]
async fn client_rejects_server_from_another_root() {
    let ours = TestCa::named("our root");
    let theirs = TestCa::named("their root");
    let outcome = hbone_handshake(
        &ours.issue(&id(CLIENT)),
        vec![id(SERVER)],
        &theirs.issue(&id(SERVER)),
    )
    .await;
    let err = outcome.client.expect_err("foreign root must fail");
    assert_eq!(
        cert_error(&err),
        Some(&rustls::CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn client_rejects_server_from_a_foreign_root_with_the_same_name() {
    let ours = TestCa::named("root");
    let impostor = TestCa::named("root");
    let outcome = hbone_handshake(
        &ours.issue(&id(CLIENT)),
        vec![id(SERVER)],
        &impostor.issue(&id(SERVER)),
    )
    .await;
    let err = outcome
        .client
        .expect_err("same-named foreign root must fail");
    assert_eq!(
        cert_error(&err),
        Some(&rustls::CertificateError::BadSignature)
    );
}

#[tokio::test]
async fn client_rejects_expired_server_cert() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue(&id(CLIENT)),
        vec![id(SERVER)],
        &ca.issue_expired(&id(SERVER)),
    )
    .await;
    let err = outcome.client.expect_err("expired server must fail");
    assert!(matches!(
        cert_error(&err),
        Some(rustls::CertificateError::ExpiredContext { .. })
    ));
}

#[tokio::test]
async fn client_rejects_not_yet_valid_server_cert() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue(&id(CLIENT)),
        vec![id(SERVER)],
        &ca.issue_not_yet_valid(&id(SERVER)),
    )
    .await;
    let err = outcome.client.expect_err("not-yet-valid server must fail");
    assert!(matches!(
        cert_error(&err),
        Some(rustls::CertificateError::NotValidYetContext { .. })
    ));
}

#[tokio::test]
async fn server_rejects_expired_client_cert() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue_expired(&id(CLIENT)),
        vec![id(SERVER)],
        &ca.issue(&id(SERVER)),
    )
    .await;
    let err = outcome.server.expect_err("expired client must fail");
    assert!(matches!(
        cert_error(&err),
        Some(rustls::CertificateError::ExpiredContext { .. })
    ));
}

#[tokio::test]
async fn server_rejects_client_from_another_trust_domain() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue(&id("spiffe://other.domain/ns/default/sa/client")),
        vec![id(SERVER)],
        &ca.issue(&id(SERVER)),
    )
    .await;
    let err = outcome.server.expect_err("foreign trust domain must fail");
    match verdict(&err) {
        Some(TlsError::TrustDomainMismatch {
            expected,
            presented,
        }) => {
            assert_eq!(expected, "cluster.local");
            assert_eq!(
                presented,
                &vec![id("spiffe://other.domain/ns/default/sa/client")]
            );
        }
        other => panic!("expected TrustDomainMismatch, got {other:?} ({err})"),
    }
}

#[tokio::test]
async fn server_accepts_any_client_identity_in_its_trust_domain() {
    let ca = TestCa::new();
    let outcome = hbone_handshake(
        &ca.issue(&id("spiffe://cluster.local/ns/elsewhere/sa/anyone")),
        vec![id(SERVER)],
        &ca.issue(&id(SERVER)),
    )
    .await;
    let (client, server) = outcome.exchange().await;
    assert!(client.is_ok() && server.is_ok());
}

#[tokio::test]
async fn server_rejects_client_from_another_root() {
    let ours = TestCa::named("our root");
    let theirs = TestCa::named("their root");
    // The client trusts our root (so it accepts the server) but its own
    // certificate was issued by another CA.
    let foreign = theirs.issue_valid(
        &id(CLIENT),
        std::time::SystemTime::now() - std::time::Duration::from_secs(60),
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    let client_cert = WorkloadCertificate::from_pem(
        foreign.issued.cert_chain_pem().as_bytes(),
        foreign.key_pem.as_bytes(),
        ours.roots_pem().as_bytes(),
    )
    .unwrap();
    let outcome = hbone_handshake(&client_cert, vec![id(SERVER)], &ours.issue(&id(SERVER))).await;
    let err = outcome.server.expect_err("foreign client chain must fail");
    assert_eq!(
        cert_error(&err),
        Some(&rustls::CertificateError::UnknownIssuer)
    );
}

/// Trusts any server, presents no client certificate: a client that skips mTLS.
#[derive(Debug)]
struct TrustAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration that accepts any server, up to the client-auth choice.
fn trusting_client(
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    let provider = Arc::new(provider);
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything(provider)))
}

fn anonymous_client(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut config =
        trusting_client(rustls::crypto::ring::default_provider(), versions).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn server_rejects_client_without_cert() {
    let ca = TestCa::new();
    let server = zs_tls::server_config(&ca.issue(&id(SERVER)), &TlsOptions::default()).unwrap();
    let outcome = handshake(anonymous_client(&[&rustls::version::TLS13]), server).await;
    let err = outcome
        .server
        .expect_err("client without certificate must fail");
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(rustls_err, Some(&rustls::Error::NoCertificatesPresented));
}

#[tokio::test]
async fn server_refuses_tls12_by_default() {
    let ca = TestCa::new();
    let server = zs_tls::server_config(&ca.issue(&id(SERVER)), &TlsOptions::default()).unwrap();
    let outcome = handshake(anonymous_client(&[&rustls::version::TLS12]), server).await;
    let err = outcome.server.expect_err("TLS 1.2 client must fail");
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            rustls_err,
            Some(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered
                    | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
                    | rustls::PeerIncompatible::SupportedVersionsExtensionRequired
            ))
        ),
        "{err}"
    );
}

/// A server that only speaks TLS 1.2 and presents `cert` (no client auth).
fn tls12_only_server(cert: &zs_tls::testing::TestCert) -> Arc<rustls::ServerConfig> {
    let chain = cert.cert.chain_der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

fn valid_for_an_hour(ca: &TestCa, who: &str) -> zs_tls::testing::TestCert {
    let now = std::time::SystemTime::now();
    ca.issue_valid(
        &id(who),
        now - std::time::Duration::from_secs(60),
        now + std::time::Duration::from_secs(3600),
    )
}

#[tokio::test]
async fn client_refuses_tls12_server_by_default() {
    let ca = TestCa::new();
    let client = zs_tls::client_config(
        &ca.issue(&id(CLIENT)),
        vec![id(SERVER)],
        &TlsOptions::default(),
    )
    .unwrap();
    let outcome = handshake(client, tls12_only_server(&valid_for_an_hour(&ca, SERVER))).await;
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn client_speaks_tls12_when_enabled() {
    let ca = TestCa::new();
    let opts = TlsOptions { tls12: true };
    let client = zs_tls::client_config(&ca.issue(&id(CLIENT)), vec![id(SERVER)], &opts).unwrap();
    let outcome = handshake(client, tls12_only_server(&valid_for_an_hour(&ca, SERVER))).await;
    let client = outcome.client.as_ref().expect("TLS 1.2 handshake");
    assert_eq!(
        client.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(zs_tls::peer_identity(client.get_ref().1), Some(id(SERVER)));
}

#[tokio::test]
async fn chain_with_intermediate_verifies_both_ways() {
    let ca = TestCa::with_intermediate();
    let client_cert = ca.issue(&id(CLIENT));
    assert_eq!(client_cert.chain_der().len(), 2, "leaf + intermediate");
    let outcome = hbone_handshake(&client_cert, vec![id(SERVER)], &ca.issue(&id(SERVER))).await;
    let (c, s) = outcome.exchange().await;
    assert!(c.is_ok(), "{c:?}");
    assert!(s.is_ok(), "{s:?}");
}

#[tokio::test]
async fn every_root_of_a_bundle_is_a_trust_anchor() {
    let ca_a = TestCa::new();
    let ca_b = TestCa::new();
    let bundle = format!("{}{}", ca_a.roots_pem(), ca_b.roots_pem());
    let with_bundle = |ca: &TestCa, who: &str| {
        let now = std::time::SystemTime::now();
        let c = ca.issue_valid(
            &id(who),
            now - std::time::Duration::from_secs(60),
            now + std::time::Duration::from_secs(3600),
        );
        WorkloadCertificate::from_pem(
            c.issued.cert_chain_pem().as_bytes(),
            c.key_pem.as_bytes(),
            bundle.as_bytes(),
        )
        .unwrap()
    };
    // Client issued by root A, server by root B; both trust the A+B bundle.
    let client_cert = with_bundle(&ca_a, CLIENT);
    let server_cert = with_bundle(&ca_b, SERVER);
    assert_eq!(client_cert.roots_der().len(), 2);
    let outcome = hbone_handshake(&client_cert, vec![id(SERVER)], &server_cert).await;
    let (c, s) = outcome.exchange().await;
    assert!(c.is_ok(), "{c:?}");
    assert!(s.is_ok(), "{s:?}");
}

#[test]
fn server_config_requires_an_identity() {
    // A leaf whose only URI SAN is not SPIFFE: nothing to take a trust domain from.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["example.com".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "https://example.com/not-spiffe".try_into().unwrap(),
    ));
    let cert = params.self_signed(&key).unwrap();
    let wc = WorkloadCertificate::from_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        cert.pem().as_bytes(),
    )
    .unwrap();
    assert_eq!(wc.identity(), None);
    let err = zs_tls::server_config(&wc, &TlsOptions::default()).unwrap_err();
    assert!(matches!(err, TlsError::NoIdentity));
}
