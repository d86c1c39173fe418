//! The TLS gRPC channel to istiod (for xDS and for the CA).
//!
//! From an ECS task istiod is reached through the east-west gateway's load
//! balancer, whose DNS name is not in istiod's certificate. Two things make
//! that work:
//!
//! * server-name verification accepts the certificate when it is valid for
//!   the URL's host, for the configured alternate hostname (`ALT_XDS_HOSTNAME`
//!   / `ALT_CA_HOSTNAME`), or, when enabled, for istiod's own service names
//!   ([`ISTIOD_SERVICE_NAMES`]); the chain is always verified against the
//!   configured roots;
//! * with service names enabled, the TLS SNI is `istiod.istio-system.svc`, so
//!   that a gateway passing TLS through by SNI routes the connection to istiod.
//!
//! The channel connects lazily and reconnects on demand; every (re)connect
//! re-reads a root file, so a rotated root certificate is picked up without a
//! restart. Connection failures are typed [`ChannelError`]s that say what to
//! change; they travel inside tonic's `Status` and [`find_channel_error`]
//! digs them out.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// The names in istiod's serving certificate, accepted whenever
/// [`ChannelConfig::istiod_server_name`] is set.
pub const ISTIOD_SERVICE_NAMES: [&str; 3] = [
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod.istio-system",
];

/// Connect (TCP + TLS) timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PING interval on the connection.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a PING may stay unanswered before the connection is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive: idle time, probe interval, probe count (Envoy's bootstrap values).
pub const TCP_KEEPALIVE: (Duration, Duration, u32) =
    (Duration::from_secs(300), Duration::from_secs(75), 9);

/// Which conversation a channel carries; it only selects the variable names
/// that error messages point the user to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The xDS stream (`XDS_ADDRESS`, `XDS_ROOT_CA`, `ALT_XDS_HOSTNAME`).
    Xds,
    /// The CA (`CA_ADDRESS`, `CA_ROOT_CA`, `ALT_CA_HOSTNAME`).
    Ca,
}

impl Purpose {
    fn root_var(self) -> &'static str {
        match self {
            Purpose::Xds => "XDS_ROOT_CA",
            Purpose::Ca => "CA_ROOT_CA",
        }
    }

    fn alt_var(self) -> &'static str {
        match self {
            Purpose::Xds => "ALT_XDS_HOSTNAME",
            Purpose::Ca => "ALT_CA_HOSTNAME",
        }
    }

    fn address_var(self) -> &'static str {
        match self {
            Purpose::Xds => "XDS_ADDRESS",
            Purpose::Ca => "CA_ADDRESS",
        }
    }
}

/// Where the roots that istiod's certificate must chain to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A PEM file, re-read on every (re)connect.
    File(PathBuf),
    /// PEM text given directly (e.g. from the bootstrap token).
    InlinePem(String),
    /// The operating system's trust store.
    System,
}

impl RootSource {
    /// Interprets an `XDS_ROOT_CA` / `CA_ROOT_CA` value: `SYSTEM` is the OS
    /// store, an existing path is a file, PEM text is inline PEM. Anything else
    /// is taken as a (missing) file, so that the error names the path.
    pub fn parse(value: &str) -> RootSource {
        if value == "SYSTEM" {
            RootSource::System
        } else if Path::new(value).is_file() {
            RootSource::File(PathBuf::from(value))
        } else if value.contains("-----BEGIN") {
            RootSource::InlinePem(value.to_string())
        } else {
            RootSource::File(PathBuf::from(value))
        }
    }

    async fn load(&self) -> Result<RootCertStore, String> {
        let pem = match self {
            RootSource::System => {
                let result = rustls_native_certs::load_native_certs();
                let mut store = RootCertStore::empty();
                let (added, _) = store.add_parsable_certificates(result.certs);
                if added == 0 {
                    let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
                    return Err(format!(
                        "no usable certificates in the system trust store ({})",
                        errors.join("; ")
                    ));
                }
                return Ok(store);
            }
            RootSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            RootSource::InlinePem(pem) => pem.as_bytes().to_vec(),
        };
        let certs = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("malformed PEM: {e}"))?;
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err("no usable PEM certificate found".to_string());
        }
        Ok(store)
    }
}

impl fmt::Display for RootSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSource::File(p) => write!(f, "file {}", p.display()),
            RootSource::InlinePem(_) => f.write_str("inline PEM"),
            RootSource::System => f.write_str("the system trust store"),
        }
    }
}

/// How to reach istiod.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// istiod's URL; `https://` is prepended when there is no scheme.
    pub address: String,
    /// The roots istiod's certificate must chain to.
    pub roots: RootSource,
    /// An extra accepted server name (`ALT_XDS_HOSTNAME` / `ALT_CA_HOSTNAME`).
    pub alt_hostname: Option<String>,
    /// The name istiod's certificate carries when the URL names something
    /// else (an east-west gateway's load balancer): sent as SNI, so a gateway
    /// that passes TLS through by SNI can route the connection, and accepted
    /// as the certificate's name, together with [`ISTIOD_SERVICE_NAMES`].
    pub istiod_server_name: Option<String>,
    /// Which variables error messages refer to.
    pub purpose: Purpose,
}

impl ChannelConfig {
    /// A configuration with only the address and roots set.
    pub fn new(address: impl Into<String>, roots: RootSource, purpose: Purpose) -> Self {
        ChannelConfig {
            address: address.into(),
            roots,
            alt_hostname: None,
            istiod_server_name: None,
            purpose,
        }
    }
}

/// Why the channel to istiod could not be set up or connected.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The address is not a usable `https://host[:port]` URL.
    #[error("{var}={address:?} is not a valid istiod address: {reason}")]
    InvalidAddress {
        /// The variable the address came from.
        var: &'static str,
        /// The address as configured.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The alternate hostname is not a DNS name.
    #[error("{var}={value:?} is not a valid DNS name")]
    InvalidAltHostname {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The root certificates could not be loaded.
    #[error("cannot load istiod's root certificate from {var} ({source_desc}): {reason}")]
    Roots {
        /// The variable the roots came from.
        var: &'static str,
        /// Where they were read from.
        source_desc: String,
        /// What went wrong.
        reason: String,
    },
    /// The host name did not resolve.
    #[error("cannot resolve istiod host {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// No TCP connection could be made.
    #[error("cannot connect to istiod at {address}: {source}")]
    Connect {
        /// The URL.
        address: String,
        /// The socket error (of the last address tried).
        #[source]
        source: io::Error,
    },
    /// TCP connect and TLS handshake did not finish in time.
    #[error("connecting to istiod at {address} timed out after {CONNECT_TIMEOUT:?}")]
    Timeout {
        /// The URL.
        address: String,
    },
    /// The certificate chains to the roots but names none of the accepted names.
    #[error(
        "istiod's certificate at {address} is not valid for any of [{}] (it names [{}]); set {alt_var} \
         to one of the names in the certificate{}",
        accepted.join(", "),
        presented.join(", "),
        if *service_names_enabled { "" } else { ", or accept istiod's service names when going through an east-west gateway" }
    )]
    NameMismatch {
        /// The URL.
        address: String,
        /// The names that would have been accepted.
        accepted: Vec<String>,
        /// The names in the certificate.
        presented: Vec<String>,
        /// The variable that sets an alternate hostname.
        alt_var: &'static str,
        /// Whether istiod's service names were already accepted.
        service_names_enabled: bool,
    },
    /// The certificate does not verify against the configured roots.
    #[error(
        "istiod's certificate at {address} does not verify against {var} ({source_desc}): {reason}; \
         {var} must hold the root of istiod's certificate (ConfigMap istio-ca-root-cert)"
    )]
    UntrustedCertificate {
        /// The URL.
        address: String,
        /// The roots variable.
        var: &'static str,
        /// Where the roots came from.
        source_desc: String,
        /// rustls' reason.
        reason: String,
    },
    /// The TLS handshake failed for another reason.
    #[error("TLS handshake with istiod at {address} failed: {source}")]
    Handshake {
        /// The URL.
        address: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Searches an error's source chain (e.g. a tonic `Status` from a failed call)
/// for the [`ChannelError`] that caused it.
pub fn find_channel_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ChannelError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<ChannelError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The most useful text for a failed call: the [`ChannelError`] that caused
/// it when there is one (it says what to fix), else the gRPC status.
pub fn describe_status(status: &tonic::Status) -> String {
    match find_channel_error(status) {
        Some(e) => e.to_string(),
        None => format!("{}: {}", status.code(), status.message()),
    }
}

/// The parsed, validated target of a channel.
#[derive(Debug)]
struct Target {
    address: String,
    host: String,
    port: u16,
    authority: String,
    sni: ServerName<'static>,
    accepted: Vec<ServerName<'static>>,
    roots: RootSource,
    purpose: Purpose,
    service_names: bool,
}

impl Target {
    fn new(config: &ChannelConfig) -> Result<Target, ChannelError> {
        let purpose = config.purpose;
        let invalid = |reason| ChannelError::InvalidAddress {
            var: purpose.address_var(),
            address: config.address.clone(),
            reason,
        };
        let address = if config.address.contains("://") {
            config.address.clone()
        } else {
            format!("https://{}", config.address)
        };
        let uri: http::Uri = address.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid("only https:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = authority.port_u16().unwrap_or(443);
        let host_name = ServerName::try_from(host.clone()).map_err(|_| invalid("bad host"))?;

        let mut accepted = vec![host_name.clone()];
        if let Some(alt) = config.alt_hostname.as_deref().filter(|s| !s.is_empty()) {
            let name = ServerName::try_from(alt.to_string()).map_err(|_| {
                ChannelError::InvalidAltHostname {
                    var: purpose.alt_var(),
                    value: alt.to_string(),
                }
            })?;
            accepted.push(name);
        }
        let service_name = config
            .istiod_server_name
            .as_deref()
            .filter(|s| !s.is_empty());
        let sni = match service_name {
            Some(name) => {
                let sni = ServerName::try_from(name.to_string())
                    .map_err(|_| invalid("the istiod server name is not a DNS name"))?;
                let standard = ISTIOD_SERVICE_NAMES
                    .iter()
                    // Constant, valid DNS names.
                    .filter_map(|name| ServerName::try_from(*name).ok());
                for n in std::iter::once(sni.clone()).chain(standard) {
                    if !accepted.contains(&n) {
                        accepted.push(n);
                    }
                }
                sni
            }
            None => host_name,
        };
        Ok(Target {
            address: format!("https://{authority}"),
            host,
            port,
            authority: authority.to_string(),
            sni,
            accepted,
            roots: config.roots.clone(),
            purpose,
            service_names: service_name.is_some(),
        })
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ChannelError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner()).await {
            Ok(result) => result,
            Err(_) => Err(ChannelError::Timeout {
                address: self.address.clone(),
            }),
        }
    }

    async fn connect_inner(
        &self,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ChannelError> {
        let roots = self
            .roots
            .load()
            .await
            .map_err(|reason| ChannelError::Roots {
                var: self.purpose.root_var(),
                source_desc: self.roots.to_string(),
                reason,
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(IstiodVerifier {
            roots: Arc::new(roots),
            accepted: self.accepted.clone(),
            provider: provider.clone(),
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.handshake_error(io::Error::other(e)))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];

        let tcp = self.dial().await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        connector
            .connect(self.sni.clone(), tcp)
            .await
            .map_err(|e| self.handshake_error(e))
    }

    async fn dial(&self) -> Result<TcpStream, ChannelError> {
        let addrs =
            resolve(&self.host, self.port)
                .await
                .map_err(|source| ChannelError::Resolve {
                    host: self.host.clone(),
                    source,
                })?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let (time, interval, retries) = TCP_KEEPALIVE;
                    let keepalive = socket2::TcpKeepalive::new()
                        .with_time(time)
                        .with_interval(interval)
                        .with_retries(retries);
                    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                        tracing::debug!(error = %e, "cannot set TCP keepalive on the istiod connection");
                    }
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(ChannelError::Connect {
            address: self.address.clone(),
            source: last,
        })
    }

    fn handshake_error(&self, err: io::Error) -> ChannelError {
        let rustls_err = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        match rustls_err {
            Some(rustls::Error::InvalidCertificate(cert_err)) => match cert_err {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    let presented = match cert_err {
                        CertificateError::NotValidForNameContext { presented, .. } => {
                            presented.clone()
                        }
                        _ => Vec::new(),
                    };
                    ChannelError::NameMismatch {
                        address: self.address.clone(),
                        accepted: self.accepted.iter().map(server_name_string).collect(),
                        presented,
                        alt_var: self.purpose.alt_var(),
                        service_names_enabled: self.service_names,
                    }
                }
                other => ChannelError::UntrustedCertificate {
                    address: self.address.clone(),
                    var: self.purpose.root_var(),
                    source_desc: self.roots.to_string(),
                    reason: format!("{other:?}"),
                },
            },
            _ => ChannelError::Handshake {
                address: self.address.clone(),
                source: err,
            },
        }
    }
}

/// The DNS names, IP addresses and URIs of a certificate, for error messages.
fn subject_alt_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::URI(u) => Some(u.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn server_name_string(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// Verifies the chain against the roots, then accepts the certificate if it
/// is valid for any of the accepted names (ignoring the SNI, which may be a
/// routing hint rather than the name we dialled).
#[derive(Debug)]
struct IstiodVerifier {
    roots: Arc<RootCertStore>,
    accepted: Vec<ServerName<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for IstiodVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        for name in &self.accepted {
            if rustls::client::verify_server_name(&cert, name).is_ok() {
                return Ok(ServerCertVerified::assertion());
            }
        }
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForNameContext {
                expected: self.accepted.first().cloned().unwrap_or_else(|| {
                    ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
                }),
                presented: subject_alt_names(end_entity),
            },
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tonic connector: one TCP + TLS connection per call.
#[derive(Debug, Clone)]
struct Connector {
    target: Arc<Target>,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = ChannelError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ChannelError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let target = self.target.clone();
        Box::pin(async move {
            match target.connect().await {
                Ok(stream) => {
                    tracing::debug!(address = %target.address, "connected to istiod");
                    Ok(TokioIo::new(stream))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connecting to istiod failed");
                    Err(e)
                }
            }
        })
    }
}

/// Resolves istiod's host. IP literals need no lookup; names go through a
/// pure-Rust resolver reading `/etc/resolv.conf` and `/etc/hosts`, so a static
/// binary in an image without libc's NSS modules still finds istiod (the URL
/// usually names an east-west gateway's load balancer). Without a usable
/// resolv.conf, the C library's resolver is the fallback.
async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    use std::sync::OnceLock;
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    static RESOLVER: OnceLock<Option<hickory_resolver::TokioResolver>> = OnceLock::new();
    let resolver = RESOLVER.get_or_init(|| {
        let (config, options) = hickory_resolver::system_conf::read_system_conf().ok()?;
        hickory_resolver::TokioResolver::builder_with_config(config, Default::default())
            .with_options(options)
            .build()
            .ok()
    });
    match resolver {
        Some(r) => {
            let answer = r
                .lookup_ip(host)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?;
            let mut addrs: Vec<SocketAddr> =
                answer.iter().map(|ip| SocketAddr::new(ip, port)).collect();
            addrs.sort_by_key(|a| a.is_ipv6());
            Ok(addrs)
        }
        None => Ok(tokio::net::lookup_host((host, port)).await?.collect()),
    }
}

/// Builds a lazily connecting channel to istiod. Nothing is dialled until the
/// first call; a broken connection is re-established on the next call. Must be
/// called within a Tokio runtime (the channel spawns its worker task).
pub fn connect(config: &ChannelConfig) -> Result<Channel, ChannelError> {
    let target = Arc::new(Target::new(config)?);
    let invalid = |reason| ChannelError::InvalidAddress {
        var: config.purpose.address_var(),
        address: config.address.clone(),
        reason,
    };
    // The connector does TLS itself, so tonic is given an http:// endpoint (it
    // must not try TLS of its own) while requests carry the https origin.
    let endpoint = Endpoint::from_shared(format!("http://{}", target.authority))
        .map_err(|_| invalid("bad authority"))?
        .origin(
            format!("https://{}", target.authority)
                .parse()
                .map_err(|_| invalid("bad authority"))?,
        )
        .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    Ok(endpoint.connect_with_connector_lazy(Connector { target }))
}

/// Dials istiod once (TCP and TLS, no gRPC) to report configuration problems
/// early, e.g. at startup, with the same typed errors a call would give.
pub async fn check(config: &ChannelConfig) -> Result<(), ChannelError> {
    let target = Target::new(config)?;
    target.connect().await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_keyword_selects_the_system_store() {
        assert_eq!(RootSource::parse("SYSTEM"), RootSource::System);
    }

    #[test]
    fn existing_path_is_a_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let p = f.path().to_str().unwrap();
        assert_eq!(RootSource::parse(p), RootSource::File(p.into()));
    }

    #[test]
    fn pem_text_is_inline() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(RootSource::parse(pem), RootSource::InlinePem(pem.into()));
    }

    #[test]
    fn missing_path_stays_a_file_so_the_error_names_it() {
        assert_eq!(
            RootSource::parse("./var/run/secrets/istio/root-cert.pem"),
            RootSource::File("./var/run/secrets/istio/root-cert.pem".into())
        );
    }

    #[test]
    fn scheme_is_prepended_and_port_defaults_to_443() {
        let t = Target::new(&ChannelConfig::new(
            "gw.example.com",
            RootSource::System,
            Purpose::Xds,
        ))
        .unwrap();
        assert_eq!(t.address, "https://gw.example.com");
        assert_eq!(t.port, 443);
        assert_eq!(server_name_string(&t.sni), "gw.example.com");
    }

    #[test]
    fn plain_http_is_refused() {
        let err = Target::new(&ChannelConfig::new(
            "http://istiod:15010",
            RootSource::System,
            Purpose::Xds,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("XDS_ADDRESS"), "{err}");
    }

    #[test]
    fn service_names_add_accepted_names_and_set_sni() {
        let mut cfg = ChannelConfig::new("https://10.0.0.1:15012", RootSource::System, Purpose::Ca);
        cfg.istiod_server_name = Some(ISTIOD_SERVICE_NAMES[0].into());
        cfg.alt_hostname = Some("istiod.example".into());
        let t = Target::new(&cfg).unwrap();
        let names: Vec<_> = t.accepted.iter().map(server_name_string).collect();
        assert_eq!(
            names,
            [
                "10.0.0.1",
                "istiod.example",
                "istiod.istio-system.svc",
                "istiod.istio-system.svc.cluster.local",
                "istiod.istio-system"
            ]
        );
        assert_eq!(server_name_string(&t.sni), "istiod.istio-system.svc");
    }

    #[test]
    fn bad_alt_hostname_names_its_variable() {
        let mut cfg = ChannelConfig::new("https://istiod:15012", RootSource::System, Purpose::Ca);
        cfg.alt_hostname = Some("not a name".into());
        let err = Target::new(&cfg).unwrap_err();
        assert!(err.to_string().contains("ALT_CA_HOSTNAME"), "{err}");
    }
}
