//! Raw HBONE clients for tests that must misbehave (no certificate, wrong
//! trust domain, bad authority).

use std::net::SocketAddr;
use std::sync::Arc;

use zs_tls::rustls;

use crate::Pair;

/// A client config with the pair's roots but no client certificate.
pub fn client_without_cert(pair: &Pair) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let cert = pair
        .pki
        .ca
        .issue(&"spiffe://cluster.local/ns/x/sa/y".parse().unwrap());
    for r in cert.roots_der() {
        roots.add(r.clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAny))
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// A proper HBONE client config for `identity`, from the pair's CA, accepting any server.
pub fn client_with_identity(pair: &Pair, identity: &str) -> Arc<rustls::ClientConfig> {
    let id = identity.parse().unwrap();
    let cert = pair.pki.ca.issue(&id);
    let server_ids = vec![
        "spiffe://cluster.local/ns/ecs-demo-1/sa/echo"
            .parse()
            .unwrap(),
    ];
    zs_tls::client_config(&cert, server_ids, &Default::default()).unwrap()
}

/// TLS + HTTP/2 handshake only; the error text on failure.
pub async fn hbone_connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let conn = zs_hbone::connect(tcp, tls, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    // The server may accept the handshake and close right after; a request tells.
    conn.send_connect(zs_hbone::ConnectRequest {
        authority: "127.0.0.1:1".into(),
        headers: Default::default(),
    })
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// Sends one CONNECT with `authority` and returns the HTTP status.
pub async fn hbone_connect_status(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    authority: &str,
) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let conn = zs_hbone::connect(tcp, tls, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    match conn
        .send_connect(zs_hbone::ConnectRequest {
            authority: authority.into(),
            headers: Default::default(),
        })
        .await
    {
        Ok(_) => Ok(200),
        Err(e) => e.status().map(|s| s.as_u16()).ok_or_else(|| e.to_string()),
    }
}

#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
